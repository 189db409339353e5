import type pg from 'pg';
import { InputError, PermissionError } from '../core/errors';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import { readTableNames } from './catalog';

/** What Preflight asks the databases before a run starts: can the role read every row, can it write the target. */

export async function assertSourceReadable(client: pg.ClientBase, schema: string): Promise<string[]> {
  const ns = await client.query(`SELECT has_schema_privilege(current_user, n.oid, 'USAGE') AS usage FROM pg_namespace n WHERE n.nspname = $1`, [schema]);
  if (!ns.rows[0]) throw new InputError(`The source schema "${schema}" does not exist. Check --source-schema / "sourceSchema".`);
  if (!ns.rows[0].usage) throw new PermissionError(`The role may not use schema "${schema}": GRANT USAGE ON SCHEMA ${schema} TO <role>.`);
  const tables = await readTableNames(client, schema);
  const denied = await client.query(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r','p') AND NOT has_table_privilege(current_user, c.oid, 'SELECT') ORDER BY 1`,
    [schema],
  );
  if (denied.rows.length) {
    throw new PermissionError(`The role may not read ${denied.rows.map((r) => `"${r.relname}"`).join(', ')} in schema "${schema}": GRANT SELECT ON ALL TABLES IN SCHEMA ${schema} TO <role>, then redrive.`);
  }
  await assertEveryRowVisible(client, schema);
  return largestFirst(client, schema, tables);
}

/**
 * Row-level security would hide rows from the migration: refused, naming each table and the fix. A
 * policy applies unless the role is a superuser, has BYPASSRLS, or owns the table (and it is not FORCEd)
 * — PostgreSQL's own rule (check_enable_rls). Every session also runs with row_security=off, so a read
 * that a policy would filter fails rather than returning part of a table.
 */
async function assertEveryRowVisible(client: pg.ClientBase, schema: string): Promise<void> {
  const r = await client.query<{ relname: string; forced: boolean; owner: string; role: string }>(
    `SELECT c.relname, c.relforcerowsecurity AS forced, pg_get_userbyid(c.relowner) AS owner, current_user::text AS role
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles me ON me.rolname = current_user
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relrowsecurity
        AND NOT (me.rolsuper OR me.rolbypassrls)
        AND (c.relforcerowsecurity OR NOT pg_has_role(current_user, c.relowner, 'USAGE'))
      ORDER BY 1`,
    [schema],
  );
  if (r.rows.length === 0) return;
  const role = r.rows[0]!.role;
  const tables = r.rows.map((x) => `"${x.relname}"${x.forced ? ' (FORCE ROW LEVEL SECURITY)' : ''}`).join(', ');
  const first = r.rows[0]!;
  throw new PermissionError(
    `Row-level security would hide rows of ${tables} in schema "${schema}" from role "${role}": the migration must read every row. ` +
      `Either ALTER ROLE ${escapeIdentifier(role)} BYPASSRLS (as a superuser), or run as the tables' owner (${escapeIdentifier(first.owner)}${r.rows.some((x) => x.forced) ? '; forced tables also need ALTER TABLE … NO FORCE ROW LEVEL SECURITY' : ''}), ` +
      `or give the role a policy that shows it every row (CREATE POLICY migrate_read_all ON ${qualified(schema, first.relname)} FOR SELECT TO ${escapeIdentifier(role)} USING (true), per table). Then start the run again.`,
  );
}

/**
 * The backup Map runs a few tables at a time: starting with the largest keeps the biggest table off the
 * end of the phase (at scale 1, alphabetical order started the 3,000,000-row scan table last).
 */
async function largestFirst(client: pg.ClientBase, schema: string, tables: string[]): Promise<string[]> {
  const r = await client.query<{ relname: string; bytes: string }>(
    `SELECT c.relname,
            (CASE WHEN c.relkind = 'p' THEN (SELECT COALESCE(sum(pg_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)
                  ELSE pg_relation_size(c.oid) END)::bigint AS bytes
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')`,
    [schema, tables],
  );
  const bytes = new Map(r.rows.map((row) => [row.relname, Number(row.bytes)]));
  return [...tables].sort((a, b) => (bytes.get(b) ?? 0) - (bytes.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0));
}

export async function assertTargetWritable(client: pg.ClientBase, schema: string): Promise<void> {
  const ro = await client.query(`SELECT current_setting('transaction_read_only') = 'on' AS read_only, pg_is_in_recovery() AS replica, current_user AS role`);
  if (ro.rows[0].read_only) {
    const { role, replica } = ro.rows[0];
    throw new PermissionError(
      replica
        ? `The target database is a read replica (hot standby): nothing can be written there. Pass --target (or TARGET_SECRET_ARN) with the primary; the replica can stay the --source. Then rerun.`
        : `Role "${role}" runs read-only transactions (default_transaction_read_only is on for it), but a migration writes its target schema "${schema}". ` +
          `Use a role that may write (ALTER ROLE ${escapeIdentifier(role)} SET default_transaction_read_only = off), or keep this role for --source only and pass --target with a writable role; then rerun.`,
    );
  }
  const r = await client.query(
    `SELECT has_database_privilege(current_user, current_database(), 'CREATE') AS db_create,
            (SELECT has_schema_privilege(current_user, n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = $1) AS schema_create`,
    [schema],
  );
  const { db_create: dbCreate, schema_create: schemaCreate } = r.rows[0];
  if (schemaCreate === null && !dbCreate) {
    throw new PermissionError(`The target role may not create schema "${schema}" in database ${(await client.query('SELECT current_database() AS d')).rows[0].d}: GRANT CREATE ON DATABASE <db> TO <role> (or create the schema and grant CREATE on it), then redrive.`);
  }
  if (schemaCreate === false) throw new PermissionError(`The target role may not create tables in schema "${schema}": GRANT CREATE ON SCHEMA ${schema} TO <role>, then redrive.`);
}

