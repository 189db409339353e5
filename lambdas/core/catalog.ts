/** The source database as the analysis sees it: plain data, read by lambdas/io/catalog.ts. */

/** `pg_type.typname`s of the integer types: the only keys batches and ids can use. */
export const INTEGER_TYPES: readonly string[] = ['int2', 'int4', 'int8'];
/** Integer and other numeric types (read as numbers, not parsed from text). */
export const NUMBER_TYPES: readonly string[] = [...INTEGER_TYPES, 'numeric', 'float4', 'float8'];
export interface ColumnInfo {
  readonly name: string;
  /** `format_type(atttypid, atttypmod)`, e.g. `integer`, `character varying(64)`, `timestamp without time zone`. */
  readonly dataType: string;
  /** `pg_type.typname` of the base type, e.g. `int4`, `varchar`, `timestamp`, `text`, `bool`. */
  readonly udtName: string;
  readonly nullable: boolean;
  /** Column default expression as PostgreSQL prints it, or null. */
  readonly defaultExpr: string | null;
  readonly ordinal: number;
}

export interface ForeignKeyInfo {
  readonly name: string;
  readonly columns: string[];
  readonly refSchema: string;
  readonly refTable: string;
  readonly refColumns: string[];
}

export interface TableInfo {
  readonly schema: string;
  readonly name: string;
  readonly columns: ColumnInfo[];
  /** Primary key columns in key order; empty when the table has none. */
  readonly primaryKey: string[];
  readonly foreignKeys: ForeignKeyInfo[];
  /** `pg_class.reltuples` (may be -1 or stale); for progress only. */
  readonly rowEstimate: number;
  /** Exact: whether the table holds at least one row. */
  readonly hasRows: boolean;
  /** Min/max of a single-column integer primary key, null otherwise or when empty. */
  readonly minKey: number | null;
  readonly maxKey: number | null;
}

export interface Catalog {
  readonly schema: string;
  /** `server_version` of the source. */
  readonly serverVersion: string;
  readonly tables: TableInfo[];
}

export function findTable(catalog: Catalog, name: string): TableInfo | undefined {
  return catalog.tables.find((t) => t.name === name);
}

export function findColumn(table: TableInfo, name: string): ColumnInfo | undefined {
  return table.columns.find((c) => c.name === name);
}
