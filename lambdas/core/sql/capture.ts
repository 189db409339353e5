import { escapeIdentifier as id, escapeLiteral as lit, qualified } from './ident';

/**
 * Change capture of a live source (MIGRATION_SPEC.md §6), as SQL. It needs no parameter change and no
 * restart: per source table, AFTER … FOR EACH STATEMENT triggers with transition tables (PostgreSQL ≥ 10)
 * append the *keys* a statement touched to one change log in the capture schema of the source database:
 *   INSERT → the new keys, DELETE → the old keys, UPDATE → old ∪ new keys (a primary-key update logs both),
 *   TRUNCATE → one row without a key (catch-up refuses it).
 * Never row data: a plaintext password or any other value never reaches the log. The legacy rows are not
 * touched; the tables gain four triggers, which `renderRemoveCapture` drops again.
 *
 * The trigger functions are SECURITY DEFINER (owned by the migration role, search_path pinned), so the
 * application's role needs no privilege on the capture schema and its writes never fail because of it.
 * A table without a usable integer key logs one keyless row per statement (catch-up refuses it too).
 */
export const CAPTURE_SCHEMA = 'tracetrack_capture';
export const CHANGE_LOG = 'change_log';
export const CAPTURE_REGISTRY = 'capture_run';
export const TRIGGER_NAMES = ['tracetrack_capture_ins', 'tracetrack_capture_upd', 'tracetrack_capture_del', 'tracetrack_capture_trunc'] as const;

/** One captured table: its name in the source schema, its oid (it keeps it when cutover moves it), its integer key. */
export interface CapturedTable {
  readonly table: string;
  readonly oid: number;
  /** Integer key column (null: none; the table's changes are logged without keys). */
  readonly key: string | null;
}

export function captureLog(): string {
  return qualified(CAPTURE_SCHEMA, CHANGE_LOG);
}

export function captureRegistry(): string {
  return qualified(CAPTURE_SCHEMA, CAPTURE_REGISTRY);
}

export function renderCaptureSchema(): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${id(CAPTURE_SCHEMA)}`,
    `CREATE TABLE IF NOT EXISTS ${captureRegistry()} (
       run_id text PRIMARY KEY,
       source_schema text NOT NULL,
       target_schema text NOT NULL,
       tables jsonb NOT NULL,
       installed_at timestamptz NOT NULL DEFAULT now())`,
    // pos: the capture position (monotonic in insertion order, not commit order: catch-up consumes what it
    // can see and deletes it in the same transaction as the rows it re-derived, so no gap is ever skipped).
    `CREATE TABLE IF NOT EXISTS ${captureLog()} (
       pos bigserial PRIMARY KEY,
       run_id text NOT NULL,
       table_name text NOT NULL,
       op "char" NOT NULL,
       key bigint,
       txid bigint NOT NULL DEFAULT txid_current(),
       at timestamptz NOT NULL DEFAULT now())`,
    `CREATE INDEX IF NOT EXISTS change_log_run_pos ON ${captureLog()} (run_id, pos)`,
  ];
}

export function triggerFunctionName(t: CapturedTable): string {
  return `capture_${t.oid}`;
}

/** The trigger function of one table: keys only, one INSERT per statement. */
export function renderTriggerFunction(runId: string, t: CapturedTable): string {
  const fn = qualified(CAPTURE_SCHEMA, triggerFunctionName(t));
  const head = `INSERT INTO ${captureLog()} (run_id, table_name, op, key)`;
  const tag = `${lit(runId)}, ${lit(t.table)}`;
  const k = t.key ? id(t.key) : null;
  const keyed = (op: string, rows: string) => `${head} SELECT ${tag}, ${lit(op)}, x.k FROM (${rows}) x;`;
  const keyless = (op: string, rel: string) => `${head} SELECT ${tag}, ${lit(op)}, NULL::bigint WHERE EXISTS (SELECT 1 FROM ${rel});`;
  const ins = k ? keyed('I', `SELECT n.${k}::bigint AS k FROM n`) : keyless('I', 'n');
  const upd = k ? keyed('U', `SELECT o.${k}::bigint AS k FROM o UNION SELECT n.${k}::bigint FROM n`) : keyless('U', 'n');
  const del = k ? keyed('D', `SELECT o.${k}::bigint AS k FROM o`) : keyless('D', 'o');
  return `CREATE OR REPLACE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $capture$
BEGIN
  IF TG_OP = 'INSERT' THEN ${ins}
  ELSIF TG_OP = 'UPDATE' THEN ${upd}
  ELSIF TG_OP = 'DELETE' THEN ${del}
  ELSE ${head} VALUES (${tag}, 'T', NULL);
  END IF;
  RETURN NULL;
END $capture$`;
}

/** The four triggers of one table (transition tables allow one event per trigger). */
export function renderTriggers(sourceSchema: string, t: CapturedTable): string[] {
  return renderStatementTriggers(qualified(sourceSchema, t.table), TRIGGER_NAMES, `${qualified(CAPTURE_SCHEMA, triggerFunctionName(t))}()`);
}

/**
 * Four statement-level triggers calling `fn` after INSERT (new rows as `n`), UPDATE (`o`, `n`), DELETE (`o`) and
 * TRUNCATE on `table` (qualified): the change capture's and the cutover guard's.
 */
export function renderStatementTriggers(table: string, names: readonly [string, string, string, string], fn: string): string[] {
  const [ins, upd, del, trunc] = names.map((n) => id(n));
  return [
    `CREATE TRIGGER ${ins} AFTER INSERT ON ${table} REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION ${fn}`,
    `CREATE TRIGGER ${upd} AFTER UPDATE ON ${table} REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION ${fn}`,
    `CREATE TRIGGER ${del} AFTER DELETE ON ${table} REFERENCING OLD TABLE AS o FOR EACH STATEMENT EXECUTE FUNCTION ${fn}`,
    `CREATE TRIGGER ${trunc} AFTER TRUNCATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION ${fn}`,
  ];
}

/**
 * Drops the triggers of one table wherever it lives now (cutover moves the legacy tables to `legacy_<run>`:
 * the oid stays), then its function. `$1`: the table's oid. A table dropped since has no triggers left.
 */
export function renderDropTriggers(t: CapturedTable): string {
  const drops = TRIGGER_NAMES.map((n) => `EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', ${lit(n)}, rel);`).join('\n    ');
  return `DO $drop$ DECLARE rel text := (SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = ${Math.trunc(t.oid)});
  BEGIN
    IF rel IS NOT NULL THEN
    ${drops}
    END IF;
  END $drop$`;
}

export function renderDropTriggerFunction(t: CapturedTable): string {
  return `DROP FUNCTION IF EXISTS ${qualified(CAPTURE_SCHEMA, triggerFunctionName(t))}()`;
}
