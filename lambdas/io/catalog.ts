import pg from 'pg';
import { INTEGER_TYPES, type Catalog, type ColumnInfo, type ForeignKeyInfo, type TableInfo } from '../core/catalog';
import { InputError } from '../core/errors';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import type { RowColumn } from '../core/verify';
import { toMigrationError } from './pg';

/**
 * Reads the source schema's ordinary and partitioned tables (partitions are left out: their rows
 * are read through the partitioned parent). Identifiers always go through core's `escapeIdentifier`;
 * table names may hold quotes, spaces, upper case or semicolons.
 */
export async function readCatalog(client: pg.ClientBase, schema: string): Promise<Catalog> {
  try {
    const serverVersion = String((await client.query('SHOW server_version')).rows[0].server_version);
    const tables = await readTables(client, schema, null);
    return { schema, serverVersion, tables };
  } catch (err) {
    throw toMigrationError(err, `Reading the catalog of schema ${JSON.stringify(schema)}`);
  }
}

/** A table's columns in order with their types' names (a fingerprint hashes them: core/verify.ts fingerprintHashExpr). */
export async function readRowColumns(client: pg.ClientBase, schema: string, table: string): Promise<RowColumn[]> {
  try {
    const r = await client.query<RowColumn>(
      `SELECT a.attname AS name, t.typname AS type FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
      [qualified(schema, table)],
    );
    return r.rows;
  } catch (err) {
    throw toMigrationError(err, `Reading the columns of table ${JSON.stringify(table)} in schema ${JSON.stringify(schema)}`);
  }
}

/** One table's catalog entry; InputError when the schema has no such table. */
export async function readTableInfo(client: pg.ClientBase, schema: string, table: string): Promise<TableInfo> {
  let found: TableInfo[];
  try {
    found = await readTables(client, schema, table);
  } catch (err) {
    throw toMigrationError(err, `Reading the catalog entry of table ${JSON.stringify(table)} in schema ${JSON.stringify(schema)}`);
  }
  const info = found[0];
  if (!info) {
    throw new InputError(
      `Schema ${JSON.stringify(schema)} has no table ${JSON.stringify(table)}. Check the table list of the run (Preflight's backupTables) and the source schema.`,
    );
  }
  return info;
}

interface TableRow { oid: number; name: string; reltuples: number }
interface ColumnRow { attrelid: number; name: string; data_type: string; udt_name: string; nullable: boolean; default_expr: string | null; ordinal: number }
interface KeyRow { conrelid: number; name: string; columns: string[]; ref_schema: string | null; ref_table: string | null; ref_columns: string[] | null }

async function readTables(client: pg.ClientBase, schema: string, onlyTable: string | null): Promise<TableInfo[]> {
  const tables = (
    await client.query<TableRow>(
      `SELECT c.oid::int8 AS oid, c.relname::text AS name,
              CASE WHEN c.relkind = 'p' THEN
                COALESCE((SELECT sum(GREATEST(p.reltuples, 0))::float8 FROM pg_partition_tree(c.oid) t
                          JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf), -1)
              ELSE c.reltuples::float8 END AS reltuples
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND ($2::text IS NULL OR c.relname = $2::text)
        ORDER BY c.relname`,
      [schema, onlyTable],
    )
  ).rows.map((r) => ({ ...r, oid: Number(r.oid) }));
  if (tables.length === 0) return [];
  const oids = tables.map((t) => t.oid);
  const columns = await readColumns(client, oids);
  const keys = await readKeys(client, oids);
  const result: TableInfo[] = [];
  for (const t of tables) result.push(await tableInfo(client, schema, t, columns, keys));
  return result;
}

async function readColumns(client: pg.ClientBase, oids: number[]): Promise<ColumnRow[]> {
  return (
    await client.query<ColumnRow>(
      `SELECT a.attrelid::int8 AS attrelid, a.attname::text AS name,
              format_type(a.atttypid, a.atttypmod) AS data_type,
              COALESCE(bt.typname, ty.typname)::text AS udt_name,
              NOT a.attnotnull AS nullable,
              CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default_expr,
              a.attnum::int AS ordinal
         FROM pg_attribute a
         JOIN pg_type ty ON ty.oid = a.atttypid
         LEFT JOIN pg_type bt ON ty.typtype = 'd' AND bt.oid = ty.typbasetype
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum`,
      [oids],
    )
  ).rows;
}

async function readKeys(client: pg.ClientBase, oids: number[]): Promise<KeyRow[]> {
  return (
    await client.query<KeyRow>(
      `SELECT con.conrelid::int8 AS conrelid, con.conname::text AS name,
              ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(attnum, i)
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum ORDER BY k.i) AS columns,
              rn.nspname::text AS ref_schema, rc.relname::text AS ref_table,
              CASE WHEN con.contype = 'f' THEN
                ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(attnum, i)
                        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum ORDER BY k.i)
              END AS ref_columns
         FROM pg_constraint con
         LEFT JOIN pg_class rc ON rc.oid = con.confrelid
         LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE con.conrelid = ANY($1::oid[]) AND con.contype IN ('p', 'f')
          AND (con.contype = 'p' OR con.conparentid = 0)
        ORDER BY con.conrelid, con.contype DESC, con.conname`,
      [oids],
    )
  ).rows;
}

async function tableInfo(client: pg.ClientBase, schema: string, t: TableRow, columns: ColumnRow[], keys: KeyRow[]): Promise<TableInfo> {
  const cols: ColumnInfo[] = columns
    .filter((c) => Number(c.attrelid) === t.oid)
    .map((c) => ({
      name: c.name,
      dataType: c.data_type,
      udtName: c.udt_name,
      nullable: c.nullable,
      defaultExpr: c.default_expr,
      ordinal: c.ordinal,
    }));
  const own = keys.filter((k) => Number(k.conrelid) === t.oid);
  const pk = own.find((k) => k.ref_table === null);
  const foreignKeys: ForeignKeyInfo[] = own
    .filter((k) => k.ref_table !== null)
    .map((k) => ({
      name: k.name,
      columns: k.columns,
      refSchema: k.ref_schema ?? '',
      refTable: k.ref_table ?? '',
      refColumns: k.ref_columns ?? [],
    }));
  const primaryKey = pk?.columns ?? [];
  const table = qualified(schema, t.name);
  const hasRows = Boolean((await client.query(`SELECT EXISTS (SELECT 1 FROM ${table}) AS has_rows`)).rows[0].has_rows);
  let minKey: number | null = null;
  let maxKey: number | null = null;
  const keyColumn = primaryKey.length === 1 ? cols.find((c) => c.name === primaryKey[0]) : undefined;
  if (hasRows && keyColumn && INTEGER_TYPES.includes(keyColumn.udtName)) {
    const k = escapeIdentifier(keyColumn.name);
    const row = (await client.query(`SELECT min(${k})::text AS min, max(${k})::text AS max FROM ${table}`)).rows[0];
    minKey = row.min === null ? null : Number(row.min);
    maxKey = row.max === null ? null : Number(row.max);
  }
  return {
    schema,
    name: t.name,
    columns: cols,
    primaryKey,
    foreignKeys,
    rowEstimate: Number(t.reltuples),
    hasRows,
    minKey,
    maxKey,
  };
}

/** Names of the schema's ordinary and partitioned tables (no partitions), by name. */
export async function readTableNames(client: pg.ClientBase, schema: string): Promise<string[]> {
  try {
    const result = await client.query<{ relname: string }>(
      `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY c.relname`,
      [schema],
    );
    return result.rows.map((r) => r.relname);
  } catch (err) {
    throw toMigrationError(err, `Listing the tables of schema ${JSON.stringify(schema)}`);
  }
}

/**
 * The catalog's row estimate of every table in `schema` (pg_class.reltuples, partitions summed), for
 * progress lines; a table never analysed (reltuples -1) has none.
 */
export async function readRowEstimates(client: pg.ClientBase, schema: string): Promise<Record<string, number>> {
  const r = await client.query<{ name: string; reltuples: number }>(
    `SELECT c.relname::text AS name,
            CASE WHEN c.relkind = 'p' THEN
              COALESCE((SELECT sum(GREATEST(p.reltuples, 0))::float8 FROM pg_partition_tree(c.oid) t
                        JOIN pg_class p ON p.oid = t.relid WHERE t.isleaf), -1)
            ELSE c.reltuples::float8 END AS reltuples
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition`,
    [schema],
  );
  return Object.fromEntries(r.rows.filter((row) => Number(row.reltuples) >= 0).map((row) => [row.name, Number(row.reltuples)]));
}
