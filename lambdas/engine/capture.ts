import type pg from 'pg';
import { CaptureError } from '../core/errors';
import {
  CAPTURE_SCHEMA,
  captureLog,
  captureRegistry,
  renderCaptureSchema,
  renderDropTriggerFunction,
  renderDropTriggers,
  renderTriggerFunction,
  renderTriggers,
  type CapturedTable,
} from '../core/sql/capture';
import { qualified } from '../core/sql/ident';
import { toMigrationError, withTransaction } from '../io/pg';

/**
 * Change capture of a live run in the source database (see lambdas/core/sql/capture.ts for the
 * mechanism). Installed by Preflight before Backup reads a row, removed by cutover, rollback and abandon.
 */

export interface CaptureRecord {
  readonly runId: string;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly tables: CapturedTable[];
  readonly installedAt: string;
}

export interface CaptureStatus {
  /** Changes captured and not yet caught up. */
  readonly pending: number;
  /** Age of the oldest pending change (seconds; 0 when none). */
  readonly oldestSeconds: number;
  /** Highest capture position logged so far (0: none). */
  readonly position: number;
}

async function captureSchemaExists(client: pg.ClientBase): Promise<boolean> {
  const r = await client.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [captureRegistry()]);
  return r.rows[0].ok === true;
}

/** Every capture installed in this database (any run). */
export async function readCaptures(client: pg.ClientBase): Promise<CaptureRecord[]> {
  if (!(await captureSchemaExists(client))) return [];
  const r = await client.query(`SELECT run_id, source_schema, target_schema, tables, installed_at FROM ${captureRegistry()} ORDER BY installed_at`);
  return r.rows.map((row) => ({
    runId: row.run_id, sourceSchema: row.source_schema, targetSchema: row.target_schema, tables: row.tables,
    installedAt: new Date(row.installed_at).toISOString(),
  }));
}

export async function readCapture(client: pg.ClientBase, runId: string): Promise<CaptureRecord | null> {
  return (await readCaptures(client)).find((c) => c.runId === runId) ?? null;
}

/**
 * A capture of another run still installed (a run that crashed or was never cut over): refused, naming
 * it and how to remove it. Its triggers would otherwise keep logging every write of the application.
 */
export async function assertNoOtherCapture(client: pg.ClientBase, runId: string): Promise<void> {
  const others = (await readCaptures(client)).filter((c) => c.runId !== runId);
  if (others.length === 0) return;
  const o = others[0]!;
  const pending = await captureStatus(client, o.runId);
  throw new CaptureError(
    `Run ${o.runId} left change capture installed on ${o.tables.length} tables of schema "${o.sourceSchema}" (since ${o.installedAt}; ${pending.pending} changes logged): ` +
      `its triggers still log every write of the application. Finish it (tracetrack-migrate cutover --run-id ${o.runId}) or remove it ` +
      `(tracetrack-migrate abandon --run-id ${o.runId}), then start this run again.`,
  );
}

/** Integer single-column primary key of each table (the key the capture logs), and the table's oid. */
async function readCapturedTables(client: pg.ClientBase, schema: string, tables: string[]): Promise<CapturedTable[]> {
  const r = await client.query(
    `SELECT c.relname, c.oid::bigint AS oid,
            (SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnatts = 1 AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AS key
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p') ORDER BY c.relname`,
    [schema, tables],
  );
  return r.rows.map((row) => ({ table: row.relname, oid: Number(row.oid), key: row.key ?? null }));
}

/**
 * Installs the capture of `runId` on `tables` of the source schema, all in one transaction (so every
 * table's capture starts at the same moment), with a bounded lock wait: CREATE TRIGGER briefly takes a
 * lock that waits for the application's open write transactions. Idempotent: a redriven Preflight of the
 * same run finds it installed and leaves it (the changes logged since are kept).
 */
export async function installCapture(
  client: pg.ClientBase,
  o: { runId: string; sourceSchema: string; targetSchema: string; tables: string[]; lockTimeoutMs?: number },
): Promise<CaptureRecord> {
  await withTransaction(client, async () => {
    await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${o.lockTimeoutMs ?? 10_000}ms`]);
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tracetrack-migrate:capture`]);
    for (const sql of renderCaptureSchema()) await client.query(sql);
    const existing = await client.query(`SELECT 1 FROM ${captureRegistry()} WHERE run_id = $1`, [o.runId]);
    if (existing.rowCount) return;
    await assertNoOtherCapture(client, o.runId);
    const tables = await readCapturedTables(client, o.sourceSchema, o.tables);
    for (const t of tables) {
      await client.query(renderTriggerFunction(o.runId, t));
      for (const sql of renderTriggers(o.sourceSchema, t)) await client.query(sql);
    }
    await client.query(
      `INSERT INTO ${captureRegistry()} (run_id, source_schema, target_schema, tables) VALUES ($1, $2, $3, $4::jsonb)`,
      [o.runId, o.sourceSchema, o.targetSchema, JSON.stringify(tables)],
    );
  }).catch((err) => {
    if (err instanceof CaptureError) throw err;
    const code = (err as { code?: string }).code;
    if (code === '42501') {
      throw new CaptureError(`Installing change capture on schema "${o.sourceSchema}" needs the TRIGGER privilege on its tables (or their ownership) and CREATE on the database: GRANT TRIGGER ON ALL TABLES IN SCHEMA ${o.sourceSchema} TO <role>; then redrive Preflight.`, { cause: err });
    }
    if (code === '55P03') {
      throw new CaptureError(`Installing change capture on schema "${o.sourceSchema}" gave up waiting for a table lock (a long write transaction of the application?). Nothing was installed; redrive Preflight.`, { cause: err });
    }
    throw toMigrationError(err, `Installing change capture on schema "${o.sourceSchema}"`);
  });
  return (await readCapture(client, o.runId))!;
}

/**
 * Removes the capture of a run: its triggers (wherever the tables live now), their functions, its logged
 * changes and its registry row; the capture schema goes with the last capture. Runs in the caller's
 * transaction when there is one (cutover), so a removal is never half done. Idempotent.
 */
export async function removeCapture(client: pg.ClientBase, runId: string): Promise<boolean> {
  const cap = await readCapture(client, runId);
  if (!cap) return false;
  for (const t of cap.tables) {
    await client.query(renderDropTriggers(t));
    await client.query(renderDropTriggerFunction(t));
  }
  await client.query(`DELETE FROM ${captureLog()} WHERE run_id = $1`, [runId]);
  await client.query(`DELETE FROM ${captureRegistry()} WHERE run_id = $1`, [runId]);
  const left = await client.query(`SELECT count(*)::int AS n FROM ${captureRegistry()}`);
  if (left.rows[0].n === 0) await client.query(`DROP SCHEMA IF EXISTS "${CAPTURE_SCHEMA}" CASCADE`);
  return true;
}

export async function captureStatus(client: pg.ClientBase, runId: string): Promise<CaptureStatus> {
  if (!(await captureSchemaExists(client))) return { pending: 0, oldestSeconds: 0, position: 0 };
  const r = await client.query(
    `SELECT count(*)::bigint AS n, COALESCE(extract(epoch FROM now() - min(at)), 0)::float8 AS age,
            (SELECT COALESCE(last_value, 0) FROM ${qualified(CAPTURE_SCHEMA, 'change_log_pos_seq')})::bigint AS pos
       FROM ${captureLog()} WHERE run_id = $1`,
    [runId],
  );
  return { pending: Number(r.rows[0].n), oldestSeconds: Math.max(0, Number(r.rows[0].age)), position: Number(r.rows[0].pos) };
}
