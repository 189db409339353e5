import type pg from 'pg';
import { InputError, LeaseHeldError } from '../core/errors';
import type { Plan } from '../core/planner';
import { escapeLiteral, qualified } from '../core/sql/ident';
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
 * naming that run, its state and the commands that resume or release it. An expired lease (its run
 * died) is taken over, and so is the lease of a run recorded as failed or abandoned: such a run is not
 * migrating, and resuming it later takes the lease back only when no other run holds it.
 */
export async function acquireLease(client: pg.ClientBase, schema: string, runId: string, holder: string | null, leaseMs = LEASE_MS, attempt = 1): Promise<void> {
  const r = await client.query(
    `INSERT INTO ${qualified(schema, '_migration_lease')} AS l (singleton, run_id, holder, expires_at)
     VALUES (TRUE, $1, COALESCE($2::text, 'resumed'), now() + $3 * interval '1 millisecond')
     ON CONFLICT (singleton) DO UPDATE
        SET run_id = EXCLUDED.run_id, expires_at = EXCLUDED.expires_at,
            -- A renewal (no holder given) keeps the holder that took the lease.
            holder = CASE WHEN l.run_id = EXCLUDED.run_id AND $2::text IS NULL THEN l.holder ELSE EXCLUDED.holder END,
            acquired_at = CASE WHEN l.run_id = EXCLUDED.run_id THEN l.acquired_at ELSE now() END
      WHERE l.run_id = EXCLUDED.run_id OR l.expires_at < now()
         OR EXISTS (SELECT 1 FROM ${qualified(schema, '_migration_run')} r WHERE r.run_id = l.run_id AND r.status IN (${INACTIVE_STATUSES.map(escapeLiteral).join(', ')}))
     RETURNING run_id`,
    [runId, holder, leaseMs],
  );
  if (r.rowCount === 1) return;
  const held = await client.query(
    `SELECT l.run_id, l.holder, l.acquired_at, l.expires_at, r.status, r.steps
       FROM ${qualified(schema, '_migration_lease')} l LEFT JOIN ${qualified(schema, '_migration_run')} r ON r.run_id = l.run_id`,
  );
  const h = held.rows[0];
  // The lease was released between the two statements (its run just finished): try once more.
  if (!h && attempt === 1) return acquireLease(client, schema, runId, holder, leaseMs, 2);
  const last = lastStepOf(h?.steps ?? {});
  throw new LeaseHeldError(
    `Run ${h?.run_id} holds the lease of schema "${schema}" (state ${h?.status ?? 'unknown'}${last ? `, last step ${last}` : ''}; ` +
      `since ${h ? new Date(h.acquired_at).toISOString() : '?'}, lease until ${h ? new Date(h.expires_at).toISOString() : '?'}), so run ${runId} may not start. ` +
      `If run ${h?.run_id} is still going, wait for it. If it failed or was stopped: resume it with --run-id ${h?.run_id}, ` +
      `or give it up with: tracetrack-migrate abandon --target <URL> --target-schema ${schema} --run-id ${h?.run_id} (then start the new run again).`,
  );
}

/** Statuses of a run that does not migrate any more: its lease may be taken over by another run. */
export const INACTIVE_STATUSES = ['failed', 'abandoned', 'verification-failed'] as const;

/** The step a run recorded last (by its time stamp), e.g. `analyse` or `migrate:bag`. */
function lastStepOf(steps: Record<string, { at?: string; startedAt?: string; finishedAt?: string }>): string | null {
  let best: [string, string] | null = null;
  for (const [name, s] of Object.entries(steps)) {
    const at = s?.finishedAt ?? s?.at ?? s?.startedAt ?? '';
    if (!best || at > best[1]) best = [name, at];
  }
  return best?.[0] ?? null;
}

/**
 * Records that a run failed (the local runner does, when the execution fails): it keeps its batches and
 * checkpoints and can be resumed with its run id, but no longer blocks another run.
 */
export async function markRunFailed(client: pg.ClientBase, schema: string, runId: string, failure: { step: string; error: string; message: string }): Promise<void> {
  if (!(await internalTablesExist(client, schema))) return;
  await client.query(
    `UPDATE ${qualified(schema, '_migration_run')}
        SET status = 'failed', updated_at = now(),
            steps = jsonb_set(steps, '{failed}', $2::jsonb)
      WHERE run_id = $1 AND status NOT IN ('completed', 'cut-over', 'rolled-back', 'abandoned')`,
    [runId, JSON.stringify({ ...failure, at: new Date().toISOString() })],
  );
}

/** A resumed failed run is running again. */
export async function markRunRunning(client: pg.ClientBase, schema: string, runId: string): Promise<void> {
  await client.query(`UPDATE ${qualified(schema, '_migration_run')} SET status = 'running', updated_at = now() WHERE run_id = $1 AND status IN (${INACTIVE_STATUSES.map(escapeLiteral).join(', ')})`, [runId]);
}

/**
 * `abandon`: the run is given up (marked abandoned, its lease released). Its rows stay in the target schema
 * and its backup in S3; a later run into the same schema starts from them. A cut-over run is refused.
 */
export async function abandonRun(client: pg.ClientBase, schema: string, runId: string): Promise<{ status: 'abandoned' | 'already-abandoned'; previous: string }> {
  const rec = await readRun(client, schema, runId);
  if (!rec) throw new InputError(`No run ${runId} in target schema "${schema}". Check --run-id and --target-schema.`);
  if (rec.status === 'cut-over') {
    throw new InputError(`Run ${runId} is cut over: roll it back first (tracetrack-migrate rollback --run-id ${runId}), then abandon it.`);
  }
  await releaseLease(client, schema, runId);
  if (rec.status === 'abandoned') return { status: 'already-abandoned', previous: rec.status };
  await client.query(
    `UPDATE ${qualified(schema, '_migration_run')} SET status = 'abandoned', updated_at = now(),
            steps = jsonb_set(steps, '{abandoned}', jsonb_build_object('at', $2::text, 'previousStatus', status))
      WHERE run_id = $1`,
    [runId, new Date().toISOString()],
  );
  return { status: 'abandoned', previous: rec.status };
}

/** Checks that `runId` still holds the lease, renewing it; every task calls this first. */
export async function renewLease(client: pg.ClientBase, schema: string, runId: string, leaseMs = LEASE_MS): Promise<void> {
  await acquireLease(client, schema, runId, null, leaseMs);
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
