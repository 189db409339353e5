import type pg from 'pg';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom, to as copyTo } from 'pg-copy-streams';
import { renderCreateTable } from '../core/backup-ddl';
import { MigrationBatchError, MigrationError } from '../core/errors';
import type { Plan } from '../core/planner';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import { applyCopySettings } from '../io/backup';
import { readTableInfo } from '../io/catalog';
import { toMigrationError, withTransaction } from '../io/pg';
import type { EngineRun, StepResult } from './migrate';
import { claimCheckpoint, completeCheckpoint, COMPLETE, lastCheckpoint, recordStep, STEP_DONE_SOURCE } from './runs';

/**
 * The cross-database path: the source tables the plan reads are streamed with COPY from the source
 * database into a staging schema of the target database (bounded memory: pg-copy-streams end to
 * end, key-range batches, each batch one target transaction with its checkpoint). The set-based
 * migration then runs in the target database exactly as on one server. The staging schema is
 * dropped when the run completes.
 */
export function stagingSchema(targetSchema: string): string {
  return `${targetSchema}_source`.slice(0, 63);
}

export interface StageOptions {
  readonly source: pg.ClientBase;
  readonly target: pg.ClientBase;
  readonly run: EngineRun;
  readonly plan: Plan;
  readonly deadline: number;
  readonly onProgress?: (p: { source: string; rows: number; batchNo: number }) => void;
}

const STEP = 'stage';

export function stagedTables(plan: Plan): string[] {
  return [...new Set(plan.tables.flatMap((t) => t.sources.map((s) => s.table)))];
}

export async function runStageStep(o: StageOptions): Promise<StepResult> {
  const { target, run, plan } = o;
  const schema = run.targetSchema;
  const done = await lastCheckpoint(target, schema, run.runId, STEP, STEP_DONE_SOURCE);
  if (done?.batchNo === COMPLETE) return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 0 };
  await target.query(`CREATE SCHEMA IF NOT EXISTS ${id(stagingSchema(schema))}`);
  const totals = { copied: 0, batches: 0 };
  for (const name of stagedTables(plan)) {
    const cursor = await stageTable(o, name, totals);
    if (cursor) return { done: false, cursor, migrated: totals.copied, rejected: 0, batches: totals.batches };
  }
  await withTransaction(target, async () => {
    await claimCheckpoint(target, schema, run.runId, STEP, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null });
    await recordStep(target, schema, run.runId, 'migrate:stage', { status: 'done', finishedAt: new Date().toISOString(), schema: stagingSchema(schema) });
  });
  return { done: true, cursor: null, migrated: totals.copied, rejected: 0, batches: totals.batches };
}

/** Copies one source table into the staging schema in checkpointed key-range batches; a cursor when out of time. */
async function stageTable(o: StageOptions, name: string, totals: { copied: number; batches: number }): Promise<string | null> {
  const { source, target, run, plan } = o;
  const schema = run.targetSchema;
  const stage = stagingSchema(schema);
  const info = await readTableInfo(source, run.sourceSchema, name);
  const exists = await target.query('SELECT to_regclass($1) IS NOT NULL AS ok', [qualified(stage, name)]);
  if (!exists.rows[0].ok) await target.query(renderCreateTable(info, stage));
  const plannedSource = plan.tables.flatMap((t) => t.sources).find((s) => s.table === name);
  const key = plannedSource?.key ?? null;
  // A table without a primary key may have rows without an id: the first batch copies them too.
  const nullKeys = plannedSource?.keyStrategy === 'id-column';
  for (;;) {
    const last = await lastCheckpoint(target, schema, run.runId, STEP, name);
    if (last?.batchNo === COMPLETE) break;
    if (totals.batches > 0 && Date.now() >= o.deadline) return `stage:${name}:${last?.keyHi ?? ''}`;
    const batchNo = (last?.batchNo ?? 0) + 1;
    const lo = key ? last?.keyHi ?? null : null;
    const hi = key ? await nextStageHi(o, name, key, lo) : null;
    if ((key && hi === null && (last || !nullKeys)) || (!key && last)) {
      await claimCheckpoint(target, schema, run.runId, STEP, name, { batchNo: COMPLETE, keyLo: lo, keyHi: null });
      break;
    }
    const where = key ? stageWhere(key, lo, hi, nullKeys) : '';
    const rows = await copyBatch(o, name, info.columns.map((c) => id(c.name)).join(', '), where, { batchNo, lo, hi });
    if (rows < 0) continue;
    totals.copied += rows;
    totals.batches++;
    o.onProgress?.({ source: name, rows, batchNo });
    if (!key || hi === null) {
      await claimCheckpoint(target, schema, run.runId, STEP, name, { batchNo: COMPLETE, keyLo: null, keyHi: null });
      break;
    }
  }
  await target.query(`ANALYZE ${qualified(stage, name)}`);
  return null;
}

async function nextStageHi(o: StageOptions, name: string, key: string, lo: number | null): Promise<number | null> {
  const r = await o.source.query(
    `SELECT max(k)::bigint AS hi FROM (SELECT ${id(key)} AS k FROM ${qualified(o.run.sourceSchema, name)} ${lo === null ? '' : `WHERE ${id(key)} > $2`} ORDER BY 1 LIMIT $1) x`,
    lo === null ? [o.run.batchSize] : [o.run.batchSize, lo],
  );
  return r.rows[0].hi === null ? null : Number(r.rows[0].hi);
}

/** COPY takes no bind parameters: the bounds are numbers we computed, rendered as integer literals. */
function stageWhere(key: string, lo: number | null, hi: number | null, nullKeys: boolean): string {
  const k = id(key);
  const range = [lo === null ? null : `${k} > ${Math.trunc(lo)}`, hi === null ? null : `${k} <= ${Math.trunc(hi)}`].filter(Boolean).join(' AND ');
  if (nullKeys && lo === null) return `WHERE ${range ? `(${range}) OR ` : ''}${k} IS NULL`;
  return range ? `WHERE ${range}` : '';
}

/** One batch: COPY source → staging table in one target transaction with its checkpoint (-1: done meanwhile). */
async function copyBatch(o: StageOptions, name: string, cols: string, where: string, batch: { batchNo: number; lo: number | null; hi: number | null }): Promise<number> {
  const { source, target, run } = o;
  const schema = run.targetSchema;
  const stage = stagingSchema(schema);
  const started = Date.now();
  try {
    return await withTransaction(target, async () => {
      if (!(await claimCheckpoint(target, schema, run.runId, STEP, name, { batchNo: batch.batchNo, keyLo: batch.lo, keyHi: batch.hi }))) return -1;
      await source.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      try {
        await applyCopySettings(source);
        await applyCopySettings(target);
        const out = source.query(copyTo(`COPY (SELECT ${cols} FROM ${qualified(run.sourceSchema, name)} ${where}) TO STDOUT`));
        const into = target.query(copyFrom(`COPY ${qualified(stage, name)} (${cols}) FROM STDIN`));
        await pipeline(out, into);
        await source.query('COMMIT');
        const n = Number((into as unknown as { rowCount: number }).rowCount ?? 0);
        await completeCheckpoint(target, schema, run.runId, STEP, name, batch.batchNo, { migrated: n, rejected: 0, already: 0, seconds: (Date.now() - started) / 1000 });
        return n;
      } catch (err) {
        await source.query('ROLLBACK').catch(() => undefined);
        throw err;
      }
    });
  } catch (err) {
    const e = toMigrationError(err, `Copying ${name} (keys ${batch.lo ?? 'start'}–${batch.hi ?? 'end'}, batch ${batch.batchNo}) from the source into "${stage}"`);
    if (e instanceof MigrationError && e.retryable) throw e;
    throw new MigrationBatchError(`${e.message}. Nothing of this batch was written. Fix the cause and redrive.`, { cause: err });
  }
}

/** Row count and content hash of every staged table, source against stage (the copy itself is verified). */
export async function compareStaged(source: pg.ClientBase, target: pg.ClientBase, run: EngineRun, plan: Plan) {
  const stage = stagingSchema(run.targetSchema);
  const out: { table: string; sourceRows: number; stagedRows: number; match: boolean }[] = [];
  const sumHash = (schema: string, t: string) =>
    `SELECT count(*)::bigint AS n, COALESCE(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text AS h FROM ${qualified(schema, t)} t`;
  for (const name of stagedTables(plan)) {
    const a = (await source.query(sumHash(run.sourceSchema, name))).rows[0];
    const b = (await target.query(sumHash(stage, name))).rows[0];
    out.push({ table: name, sourceRows: Number(a.n), stagedRows: Number(b.n), match: a.n === b.n && a.h === b.h });
  }
  return out;
}

export async function dropStaging(target: pg.ClientBase, targetSchema: string): Promise<void> {
  await target.query(`DROP SCHEMA IF EXISTS ${id(stagingSchema(targetSchema))} CASCADE`);
}
