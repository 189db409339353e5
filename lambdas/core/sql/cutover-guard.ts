import { TARGET_TABLES } from '../rules';
import { renderStatementTriggers } from './capture';
import { escapeIdentifier as id, escapeLiteral as lit, qualified } from './ident';

/**
 * What the application writes into the new tables after a cutover, counted, so that a rollback (which hands the
 * legacy tables back) can say exactly what the application would no longer see, and refuse. Statement-level
 * triggers with transition tables on the eight tables in the application schema add row counts per table and
 * operation to `<target schema>._migration_after_cutover`; no row data. SECURITY DEFINER with a pinned search_path,
 * as the change capture: the application's role needs no privilege and its writes cannot fail because of it.
 */

export const AFTER_CUTOVER_TABLE = '_migration_after_cutover';
const GUARD_TRIGGERS = ['tracetrack_after_cutover_ins', 'tracetrack_after_cutover_upd', 'tracetrack_after_cutover_del', 'tracetrack_after_cutover_trunc'] as const;
const guardFunction = (targetSchema: string) => qualified(targetSchema, '_migration_after_cutover_count');

export function renderCreateGuard(targetSchema: string, appSchema: string, runId: string): string[] {
  const log = qualified(targetSchema, AFTER_CUTOVER_TABLE);
  const add = (op: string, rel: string) => `INSERT INTO ${log} (run_id, table_name, op, rows) SELECT ${lit(runId)}, TG_TABLE_NAME, ${lit(op)}, count(*) FROM ${rel} HAVING count(*) > 0;`;
  const out = [
    `CREATE TABLE IF NOT EXISTS ${log} (run_id TEXT NOT NULL, table_name TEXT NOT NULL, op TEXT NOT NULL, rows BIGINT NOT NULL, at TIMESTAMPTZ NOT NULL DEFAULT now())`,
    `CREATE OR REPLACE FUNCTION ${guardFunction(targetSchema)}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $guard$
BEGIN
  IF TG_OP = 'INSERT' THEN ${add('inserted', 'n')}
  ELSIF TG_OP = 'UPDATE' THEN ${add('updated', 'n')}
  ELSIF TG_OP = 'DELETE' THEN ${add('deleted', 'o')}
  ELSE INSERT INTO ${log} (run_id, table_name, op, rows) VALUES (${lit(runId)}, TG_TABLE_NAME, 'truncated', 1);
  END IF;
  RETURN NULL;
END $guard$`,
  ];
  for (const t of TARGET_TABLES) out.push(...renderStatementTriggers(qualified(appSchema, t), GUARD_TRIGGERS, `${guardFunction(targetSchema)}()`));
  return out;
}

/** Drops the guard's triggers from the eight tables in `schema` (where they are now) and its function. Idempotent. */
export function renderDropGuard(targetSchema: string, schema: string): string[] {
  return [
    ...TARGET_TABLES.flatMap((t) => GUARD_TRIGGERS.map((n) => `DROP TRIGGER IF EXISTS ${id(n)} ON ${qualified(schema, t)}`)),
    `DROP FUNCTION IF EXISTS ${guardFunction(targetSchema)}()`,
  ];
}

/** The rows written since the cutover of `runId`, per table and operation (`$1` = run id). */
export function renderWrittenSinceCutover(targetSchema: string): string {
  return `SELECT table_name, op, sum(rows)::bigint AS rows FROM ${qualified(targetSchema, AFTER_CUTOVER_TABLE)}
           WHERE run_id = $1 GROUP BY 1, 2 ORDER BY 1, 2`;
}
