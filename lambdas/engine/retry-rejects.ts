import type pg from 'pg';
import { MigrationBatchError, MigrationError } from '../core/errors';
import type { Plan, TablePlan } from '../core/planner';
import { TARGET_ORDER, type TargetTable } from '../core/rules';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import { sourceFrom, tableUnits, targetIdExpr, translatedRefExpr, type KeyRange, type MappingContext, type TableUnit } from '../core/sql/mapping';
import { renderComputeSummaries } from '../core/sql/derived';
import { renderResetSequence } from '../core/sql/target-ddl';
import { parseIndexesStep, parsePasswordsStep, parseStageStep } from '../core/work-graph';
import { toMigrationError, withTransaction } from '../io/pg';
import { hashPlaintextPasswords, insertUnitBatch, loadOffsets, tuneBatchTransaction, type StepOptions, type StepResult } from './migrate';
import { claimCheckpoint, completeCheckpoint, COMPLETE, lastCheckpoint, recordStep } from './runs';

/**
 * `run --run-id ID --retry-rejects`: a retry round sends exactly the run's rejected keys through the same
 * mapping again, after the operator fixed their source rows. Each row then migrates, or is rejected
 * again with its current reason. Nothing else is read or written, so verification stays exact:
 *
 * - the keys are taken in runs of consecutive source keys that were all rejected (no migrated row in
 *   between), each run one batch: one transaction that deletes the run's old reject rows of those keys
 *   and runs the very batch statement of the first pass (`buildBatchInsert`) over that key range;
 * - only rejects older than the round's start are retried, so a row rejected again in this round is not
 *   retried again when the step resumes after an interruption; the deletion is the round's checkpoint;
 * - a rejected key whose source row is gone (the operator deleted it) leaves the reject store;
 * - afterwards (the round's `finalize`) optional references that were NULL because their row was rejected
 *   are resolved now that it exists (e.g. a bag's owner, a scan's bag), exactly as the first pass would
 *   have; the summaries the application derives are computed again; sequences move past the new ids.
 *
 * What a round does not redo: the `prepare` step (id offsets, the id map, QR renames, bag roles), which
 * was computed from all source rows, the rejected ones included.
 */

export interface RetryRound {
  readonly round: number;
  /** Database time the round started: rejects older than this are retried. */
  readonly since: string;
}

const STEP_DONE_SOURCE = '*';

function roundStep(round: number, step: string): string {
  return `retry-${round}:${step}`;
}

function outOfTime(o: StepOptions): boolean {
  return Date.now() >= o.deadline || (o.shouldStop?.() ?? false);
}

/** One workflow migration step of a retry round. */
export async function runRetryStep(o: StepOptions, step: string, retry: RetryRound): Promise<StepResult> {
  const name = roundStep(retry.round, step);
  const done = await lastCheckpoint(o.client, o.run.targetSchema, o.run.runId, name, STEP_DONE_SOURCE);
  // The round's user batches hash their plaintext inline: its `passwords` steps have nothing to do; the indexes are there.
  if (done?.batchNo === COMPLETE || step === 'prepare' || step === 'stage' || parseStageStep(step) !== null || parsePasswordsStep(step) !== null || parseIndexesStep(step) !== null) return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 0 };
  if (step === 'finalize') return finalizeRound(o, retry);
  const table = o.plan.tables.find((t) => t.target === step);
  if (!table) throw new MigrationBatchError(`Step "${step}" is not in the plan of run ${o.run.runId} (steps: ${o.plan.steps.join(', ')}).`);
  const totals = { migrated: 0, rejected: 0, batches: 0, gone: 0 };
  const offsets = await loadOffsets(o.client, o.run.targetSchema);
  for (const unit of tableUnits(o.plan, table)) {
    if (!unit.source.key) continue; // read in one batch with generated ids: its rejects stay as they are (README)
    const finished = await retryUnit(o, table, unit, offsets, retry, totals);
    if (!finished) return { done: false, cursor: `${name}:${unit.label}`, migrated: totals.migrated, rejected: totals.rejected, batches: totals.batches };
  }
  await withTransaction(o.client, async () => {
    await claimCheckpoint(o.client, o.run.targetSchema, o.run.runId, name, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null });
    await recordStep(o.client, o.run.targetSchema, o.run.runId, `retry-${retry.round}:${step}`, { status: 'done', finishedAt: new Date().toISOString(), ...totals });
  });
  return { done: true, cursor: null, migrated: totals.migrated, rejected: totals.rejected, batches: totals.batches };
}

const OLD_REJECTS = (schema: string) =>
  `FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1 AND source_table = $2 AND rejected_at < $3::timestamptz AND source_key ~ '^-?[0-9]{1,18}$'`;

/** Retries a unit's rejected keys, island by island; false when out of time. */
async function retryUnit(
  o: StepOptions,
  table: TablePlan,
  unit: TableUnit,
  offsets: Record<string, number>,
  retry: RetryRound,
  totals: { migrated: number; rejected: number; batches: number; gone: number },
): Promise<boolean> {
  const { client, run } = o;
  const schema = run.targetSchema;
  const readSchema = o.readSchema ?? run.sourceSchema;
  const key = id(unit.source.key!);
  const base = [run.runId, unit.label, retry.since];
  // Rejected keys without a source row any more: nothing to retry, nothing to count.
  const gone = await client.query(
    `DELETE ${OLD_REJECTS(schema)} AND NOT EXISTS (SELECT 1 FROM ${qualified(readSchema, unit.source.table)} s WHERE s.${key}::bigint = source_key::bigint)`,
    base,
  );
  totals.gone += gone.rowCount ?? 0;
  const islands = await client.query<{ lo: string; hi: string }>(
    `WITH rej AS (SELECT source_key::bigint AS k ${OLD_REJECTS(schema)}),
          src AS (SELECT s.${key}::bigint AS k, rej.k IS NOT NULL AS r FROM ${qualified(readSchema, unit.source.table)} s LEFT JOIN rej ON rej.k = s.${key}::bigint
                   WHERE ${unit.filter ?? 'TRUE'}),
          g AS (SELECT k, r, row_number() OVER (ORDER BY k) - row_number() OVER (PARTITION BY r ORDER BY k) AS grp FROM src)
     SELECT min(k)::text AS lo, max(k)::text AS hi FROM g WHERE r GROUP BY grp ORDER BY min(k)`,
    base,
  );
  const ctx: MappingContext = { sourceSchema: readSchema, targetSchema: schema, offsets, mode: 'load', runTime: run.runTime, resolveSelfRefs: true };
  const step = roundStep(retry.round, table.target);
  for (const island of islands.rows) {
    if (totals.batches > 0 && outOfTime(o)) return false;
    const range: KeyRange = { lo: Number(island.lo) - 1, hi: Number(island.hi) };
    const started = Date.now();
    const passwords = await hashPlaintextPasswords(o, unit.source, readSchema, range);
    const last = await lastCheckpoint(client, schema, run.runId, step, unit.label);
    const batchNo = (last?.batchNo ?? 0) + 1;
    try {
      const counts = await withTransaction(client, async () => {
        await tuneBatchTransaction(client);
        if (!(await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo, keyLo: range.lo, keyHi: range.hi }))) return null;
        await client.query(`DELETE ${OLD_REJECTS(schema)} AND source_key::bigint > $4 AND source_key::bigint <= $5`, [...base, range.lo, range.hi]);
        const c = await insertUnitBatch(client, run, table, unit, ctx, range, passwords);
        await completeCheckpoint(client, schema, run.runId, step, unit.label, batchNo, { ...c, seconds: (Date.now() - started) / 1000 });
        return c;
      });
      if (!counts) continue; // another invocation did this batch meanwhile
      totals.migrated += counts.migrated;
      totals.rejected += counts.rejected;
      totals.batches += 1;
    } catch (err) {
      const e = toMigrationError(err, `Retrying the rejected rows of ${table.target} from ${unit.label}, keys ${island.lo}–${island.hi} (retry round ${retry.round})`);
      if (e instanceof MigrationError && e.retryable) throw e;
      throw new MigrationBatchError(`${e.message}. Nothing of this batch was written. Fix the cause and rerun with --run-id ${run.runId} --retry-rejects.`, { cause: err });
    }
  }
  return true;
}

/**
 * Optional references left NULL because their row was rejected, resolved now that the row may exist
 * (the first pass would have set them), then sequences past the largest ids.
 */
async function finalizeRound(o: StepOptions, retry: RetryRound): Promise<StepResult> {
  const { client, run, plan } = o;
  const schema = run.targetSchema;
  const name = roundStep(retry.round, 'finalize');
  const offsets = await loadOffsets(client, schema);
  const ctx: MappingContext = { sourceSchema: o.readSchema ?? run.sourceSchema, targetSchema: schema, offsets, mode: 'load', runTime: run.runTime };
  let resolved = 0;
  await withTransaction(client, async () => {
    await tuneBatchTransaction(client);
    if (!(await claimCheckpoint(client, schema, run.runId, name, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null }))) return;
    for (const sql of renderReresolveRefs(plan, ctx)) resolved += (await client.query(sql)).rowCount ?? 0;
    for (const t of TARGET_ORDER) {
      // The summaries the application derives (child counts, bill totals) now count the retried rows too.
      const tablePlan = plan.tables.find((x) => x.target === t);
      const summaries = tablePlan ? renderComputeSummaries(schema, tablePlan, offsets) : null;
      if (summaries) await client.query(summaries);
      await client.query(renderResetSequence(schema, t as TargetTable));
      await client.query(`ANALYZE ${qualified(schema, t)}`);
    }
    await recordStep(client, schema, run.runId, `retry-${retry.round}:finalize`, { status: 'done', finishedAt: new Date().toISOString(), referencesResolved: resolved });
  }).catch((err) => {
    throw toMigrationError(err, `Finishing retry round ${retry.round} of run ${run.runId} (references, sequences)`);
  });
  return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 1 };
}

/** UPDATEs setting optional (NULL-on-orphan) references whose source value names a row that exists now. */
export function renderReresolveRefs(plan: Plan, ctx: MappingContext): string[] {
  const out: string[] = [];
  for (const table of plan.tables) {
    for (const source of table.sources) {
      // A scan's single bag_id is split by the bag's type: not a plain reference.
      if (source.singleBag) continue;
      for (const c of source.columns) {
        if (c.kind !== 'ref' || !c.source || !c.ref) continue;
        const selfRef = c.ref.target === table.target;
        if (c.ref.onOrphan !== 'null' && !selfRef) continue;
        const target = qualified(ctx.targetSchema, table.target);
        out.push(
          `UPDATE ${target} t SET ${id(c.target)} = x.v
             FROM (SELECT ${targetIdExpr(source, ctx)} AS id, ${translatedRefExpr(c, ctx)} AS v FROM ${sourceFrom(source, ctx)} WHERE s.${id(c.source)} IS NOT NULL) x
            WHERE t.id = x.id AND t.${id(c.target)} IS NULL
              AND EXISTS (SELECT 1 FROM ${qualified(ctx.targetSchema, c.ref.target)} r WHERE r.id = x.v)`,
        );
      }
    }
  }
  return out;
}

/** The next retry round of a run: recorded in its steps with the database's time (rejects older than it are retried). */
export async function startRetryRound(client: pg.ClientBase, schema: string, runId: string): Promise<RetryRound> {
  const r = await client.query(
    `SELECT COALESCE((steps -> 'retry-rejects' ->> 'round')::int, 0) + 1 AS round, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS since
       FROM ${qualified(schema, '_migration_run')} WHERE run_id = $1`,
    [runId],
  );
  const round = { round: Number(r.rows[0].round), since: r.rows[0].since as string };
  const before = await client.query(`SELECT count(*)::bigint AS n FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1`, [runId]);
  await recordStep(client, schema, runId, 'retry-rejects', { round: round.round, since: round.since, rejectsBefore: Number(before.rows[0].n), at: new Date().toISOString() });
  return round;
}
