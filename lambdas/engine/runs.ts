import type pg from 'pg';
import { InputError, LeaseHeldError } from '../core/errors';
import type { Plan } from '../core/planner';
import { qualified } from '../core/sql/ident';
import { renderInternalTables, TARGET_DDL_VERSION } from '../core/sql/target-ddl';

/**
 * Run records, the run lease and batch checkpoints, all in the target schema.
 * A checkpoint is written in the same transaction as the rows it covers, so a batch is done
 * exactly once however often its step is run.
 */

export interface RunRecord {
  readonly runId: string;
  readonly status: string;
  readonly sourceSchema: string;
  readonly runTime: string;
  readonly plan: Plan | null;
  readonly steps: Record<string, StepRecord>;
  readonly verification: unknown;
  readonly cutover: CutoverRecord | null;
}

export interface StepRecord {
  readonly status: 'running' | 'done';
  readonly startedAt: string;
  readonly finishedAt?: string;
  readonly seconds?: number;
  readonly [k: string]: unknown;
}

export interface CutoverRecord {
  readonly status: 'cut-over' | 'rolled-back';
  readonly appSchema: string;
  readonly legacySchema: string;
  readonly at: string;
  readonly movedLegacy: string[];
}

/** A new run id: UTC time plus a short random suffix, e.g. 20261125T170102Z-3fa9. */
export function newRunId(now = new Date(), random = Math.random): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${Math.floor(random() * 0xffff).toString(16).padStart(4, '0')}`;
}

export async function ensureInternalTables(client: pg.ClientBase, schema: string): Promise<void> {
  // Two runs bootstrapping at once would race on CREATE ... IF NOT EXISTS; serialise them.
  await client.query('SELECT pg_advisory_lock(hashtext($1))', [`tracetrack-migrate:${schema}`]);
  try {
    for (const sql of renderInternalTables(schema)) await client.query(sql);
  } finally {
    await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`tracetrack-migrate:${schema}`]);
  }
}

export async function schemaExists(client: pg.ClientBase, schema: string): Promise<boolean> {
  const r = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  return r.rowCount === 1;
}

export async function internalTablesExist(client: pg.ClientBase, schema: string): Promise<boolean> {
  const r = await client.query(`SELECT to_regclass($1) IS NOT NULL AS ok`, [qualified(schema, '_migration_run')]);
  return r.rows[0].ok === true;
}

/** Records the run (first call) or returns the existing record (a resumed run keeps its run time). */
export async function recordRun(
  client: pg.ClientBase,
  schema: string,
  run: { runId: string; sourceSchema: string; runTime: string },
): Promise<RunRecord> {
  // The migration time fills missing timestamps. It belongs to the target, not to one run: a later
  // run into the same target reuses the first run's time, so rows it leaves alone still verify.
  await client.query(
    `INSERT INTO ${qualified(schema, '_migration_run')} (run_id, status, source_schema, run_time, ddl_version)
     VALUES ($1, 'running', $2, COALESCE((SELECT run_time FROM ${qualified(schema, '_migration_run')} ORDER BY started_at, run_id LIMIT 1), $3::timestamp), $4)
     ON CONFLICT (run_id) DO NOTHING`,
    [run.runId, run.sourceSchema, run.runTime, TARGET_DDL_VERSION],
  );
  const rec = await readRun(client, schema, run.runId);
  if (!rec) throw new InputError(`Run ${run.runId} could not be recorded.`);
  if (rec.sourceSchema !== run.sourceSchema) {
    throw new InputError(`Run ${run.runId} was started on source schema "${rec.sourceSchema}", not "${run.sourceSchema}". Use a new run id.`);
  }
  return rec;
}

export async function readRun(client: pg.ClientBase, schema: string, runId: string): Promise<RunRecord | null> {
  const r = await client.query(
    `SELECT run_id, status, source_schema, to_char(run_time, 'YYYY-MM-DD"T"HH24:MI:SS.US') AS run_time, plan, steps, verification, cutover
       FROM ${qualified(schema, '_migration_run')} WHERE run_id = $1`,
    [runId],
  );
  const row = r.rows[0];
  if (!row) return null;
  return {
    runId: row.run_id,
    status: row.status,
    sourceSchema: row.source_schema,
    runTime: row.run_time,
    plan: row.plan,
    steps: row.steps ?? {},
    verification: row.verification,
    cutover: row.cutover,
  };
}

export async function latestRun(client: pg.ClientBase, schema: string): Promise<RunRecord | null> {
  if (!(await internalTablesExist(client, schema))) return null;
  const r = await client.query(`SELECT run_id FROM ${qualified(schema, '_migration_run')} ORDER BY started_at DESC LIMIT 1`);
  return r.rows[0] ? readRun(client, schema, r.rows[0].run_id) : null;
}

export async function updateRun(
  client: pg.ClientBase,
  schema: string,
  runId: string,
  fields: { status?: string; plan?: Plan; verification?: unknown; cutover?: CutoverRecord; finished?: boolean },
): Promise<void> {
  const sets: string[] = ['updated_at = now()'];
  const values: unknown[] = [runId];
  const add = (sql: string, v: unknown) => {
    values.push(v);
    sets.push(sql.replace('?', `$${values.length}`));
  };
  if (fields.status) add('status = ?', fields.status);
  if (fields.plan) add('plan = ?::jsonb', JSON.stringify(fields.plan));
  if (fields.verification !== undefined) add('verification = ?::jsonb', JSON.stringify(fields.verification));
  if (fields.cutover) add('cutover = ?::jsonb', JSON.stringify(fields.cutover));
  if (fields.finished) sets.push('finished_at = now()');
  await client.query(`UPDATE ${qualified(schema, '_migration_run')} SET ${sets.join(', ')} WHERE run_id = $1`, values);
}

/** Merges `patch` into the step's record (timings, counts). */
export async function recordStep(client: pg.ClientBase, schema: string, runId: string, step: string, patch: Record<string, unknown>): Promise<void> {
  await client.query(
    `UPDATE ${qualified(schema, '_migration_run')}
        SET steps = jsonb_set(steps, ARRAY[$2::text], COALESCE(steps -> $2::text, '{}'::jsonb) || $3::jsonb), updated_at = now()
      WHERE run_id = $1`,
    [runId, step, JSON.stringify(patch)],
  );
}

// ---------------------------------------------------------------- lease

export const LEASE_MS = 30 * 60 * 1000;

/**
 * Takes (or renews) the target's lease for `runId`. Another live run holding it → LeaseHeldError
 * naming that run. An expired lease (its run died) is taken over.
 */
export async function acquireLease(client: pg.ClientBase, schema: string, runId: string, holder: string, leaseMs = LEASE_MS): Promise<void> {
  const r = await client.query(
    `INSERT INTO ${qualified(schema, '_migration_lease')} AS l (singleton, run_id, holder, expires_at)
     VALUES (TRUE, $1, $2, now() + $3 * interval '1 millisecond')
     ON CONFLICT (singleton) DO UPDATE
        SET run_id = EXCLUDED.run_id, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
            acquired_at = CASE WHEN l.run_id = EXCLUDED.run_id THEN l.acquired_at ELSE now() END
      WHERE l.run_id = EXCLUDED.run_id OR l.expires_at < now()
     RETURNING run_id`,
    [runId, holder, leaseMs],
  );
  if (r.rowCount === 1) return;
  const held = await client.query(
    `SELECT run_id, holder, acquired_at, expires_at FROM ${qualified(schema, '_migration_lease')}`,
  );
  const h = held.rows[0];
  throw new LeaseHeldError(
    `Run ${h?.run_id} is migrating into schema "${schema}" (since ${new Date(h?.acquired_at).toISOString()}, lease until ${new Date(h?.expires_at).toISOString()}). ` +
      `Wait for it to finish, resume it with --run-id ${h?.run_id}, or if it died, wait until its lease expires.`,
  );
}

/** Checks that `runId` still holds the lease, renewing it; every task calls this first. */
export async function renewLease(client: pg.ClientBase, schema: string, runId: string, leaseMs = LEASE_MS): Promise<void> {
  await acquireLease(client, schema, runId, 'renew', leaseMs);
}

export async function releaseLease(client: pg.ClientBase, schema: string, runId: string): Promise<void> {
  await client.query(`DELETE FROM ${qualified(schema, '_migration_lease')} WHERE run_id = $1`, [runId]);
}

// ---------------------------------------------------------------- checkpoints

export interface Checkpoint {
  readonly batchNo: number;
  readonly keyLo: number | null;
  readonly keyHi: number | null;
  readonly migrated: number;
  readonly rejected: number;
  readonly already: number;
}

/** batch_no of the marker row that says a source (or a whole step) is complete. */
export const COMPLETE = -1;
/** The checkpoint source that marks a whole step done (its batch number is COMPLETE). */
export const STEP_DONE_SOURCE = '*';

export async function lastCheckpoint(client: pg.ClientBase, schema: string, runId: string, step: string, source: string): Promise<Checkpoint | null> {
  const r = await client.query(
    `SELECT batch_no, key_lo, key_hi, migrated, rejected, already FROM ${qualified(schema, '_migration_checkpoint')}
      WHERE run_id = $1 AND step = $2 AND source_table = $3 ORDER BY (batch_no = ${COMPLETE}) DESC, batch_no DESC LIMIT 1`,
    [runId, step, source],
  );
  const row = r.rows[0];
  if (!row) return null;
  return {
    batchNo: row.batch_no,
    keyLo: row.key_lo === null ? null : Number(row.key_lo),
    keyHi: row.key_hi === null ? null : Number(row.key_hi),
    migrated: Number(row.migrated),
    rejected: Number(row.rejected),
    already: Number(row.already),
  };
}

/** Claims a batch inside the caller's transaction; false when it is already done. */
export async function claimCheckpoint(
  client: pg.ClientBase,
  schema: string,
  runId: string,
  step: string,
  source: string,
  cp: { batchNo: number; keyLo: number | null; keyHi: number | null },
): Promise<boolean> {
  const r = await client.query(
    `INSERT INTO ${qualified(schema, '_migration_checkpoint')} (run_id, step, source_table, batch_no, key_lo, key_hi, migrated, rejected, seconds)
     VALUES ($1, $2, $3, $4, $5, $6, 0, 0, 0) ON CONFLICT DO NOTHING`,
    [runId, step, source, cp.batchNo, cp.keyLo, cp.keyHi],
  );
  return r.rowCount === 1;
}

export async function completeCheckpoint(
  client: pg.ClientBase,
  schema: string,
  runId: string,
  step: string,
  source: string,
  batchNo: number,
  counts: { migrated: number; rejected: number; already: number; seconds: number },
): Promise<void> {
  await client.query(
    `UPDATE ${qualified(schema, '_migration_checkpoint')} SET migrated = $5, rejected = $6, already = $7, seconds = $8, done_at = now()
      WHERE run_id = $1 AND step = $2 AND source_table = $3 AND batch_no = $4`,
    [runId, step, source, batchNo, counts.migrated, counts.rejected, counts.already, counts.seconds],
  );
}

/** Totals per step and source from the checkpoints of a run. */
export async function checkpointTotals(client: pg.ClientBase, schema: string, runId: string) {
  const r = await client.query(
    `SELECT step, source_table, count(*) FILTER (WHERE batch_no <> ${COMPLETE}) AS batches,
            sum(migrated) AS migrated, sum(rejected) AS rejected, sum(already) AS already, sum(seconds) AS seconds
       FROM ${qualified(schema, '_migration_checkpoint')} WHERE run_id = $1 GROUP BY step, source_table`,
    [runId],
  );
  return r.rows.map((row) => ({
    step: row.step as string,
    source: row.source_table as string,
    batches: Number(row.batches),
    migrated: Number(row.migrated),
    rejected: Number(row.rejected),
    already: Number(row.already),
    seconds: Number(row.seconds),
  }));
}
