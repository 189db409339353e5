import type pg from 'pg';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import { copyOut } from '../io/copy-out';
import { renderCreateTable } from '../core/backup-ddl';
import { MigrationBatchError, MigrationError } from '../core/errors';
import type { Plan } from '../core/planner';
import { STAGE_STEP, stagedTables, stageStep } from '../core/work-graph';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import { applyCopySettings } from '../io/backup';
import { readTableInfo } from '../io/catalog';
import type { TableInfo } from '../core/catalog';
import { toMigrationError, withTransaction } from '../io/pg';
import type { EngineRun, StepResult } from './migrate';
import { checkpointTotals, claimCheckpoint, completeCheckpoint, COMPLETE, lastCheckpoint, recordStep, STEP_DONE_SOURCE } from './runs';

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

const STEP = STAGE_STEP;

/**
 * One source table (the workflow's `stage:<table>` item, core/work-graph.ts): copied in checkpointed key-range
 * batches, then vacuumed and analysed before its completion checkpoint (completeStagedTable). A cursor when out of time; a redrive of a staged table does nothing.
 */
export async function runStageTableStep(o: StageOptions, name: string): Promise<StepResult> {
  const schema = o.run.targetSchema;
  const done = await lastCheckpoint(o.target, schema, o.run.runId, STEP, name);
  if (done?.batchNo === COMPLETE) return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 0 };
  const totals = { copied: 0, batches: 0 };
  const cursor = await stageTable(o, name, totals);
  if (cursor) return { done: false, cursor, migrated: totals.copied, rejected: 0, batches: totals.batches };
  return { done: true, cursor: null, migrated: totals.copied, rejected: 0, batches: totals.batches };
}

/** The whole-run `stage` item of executions planned by an earlier version: every table, one after another. */
export async function runStageStep(o: StageOptions): Promise<StepResult> {
  const { target, run, plan } = o;
  const schema = run.targetSchema;
  const done = await lastCheckpoint(target, schema, run.runId, STEP, STEP_DONE_SOURCE);
  if (done?.batchNo === COMPLETE) return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 0 };
  const totals = { copied: 0, batches: 0 };
  for (const name of stagedTables(plan)) {
    const r = await runStageTableStep(o, name);
    totals.copied += r.migrated;
    totals.batches += r.batches;
    if (!r.done) return { done: false, cursor: r.cursor, migrated: totals.copied, rejected: 0, batches: totals.batches };
  }
  await withTransaction(target, async () => {
    await claimCheckpoint(target, schema, run.runId, STEP, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null });
    await recordStep(target, schema, run.runId, 'migrate:stage', { status: 'done', finishedAt: new Date().toISOString(), schema: stagingSchema(schema) });
  });
  return { done: true, cursor: null, migrated: totals.copied, rejected: 0, batches: totals.batches };
}

/**
 * The staging table (and schema), created under a lock: the staging items start side by side, and an item may
 * run twice at once (a retry beside a running invocation); the later one waits for the commit and finds them.
 */
async function createStagingTable(target: pg.ClientBase, schema: string, info: TableInfo): Promise<void> {
  const stage = stagingSchema(schema);
  await withTransaction(target, async () => {
    await target.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tracetrack-migrate:stage:${schema}`]);
    await target.query(`CREATE SCHEMA IF NOT EXISTS ${id(stage)}`);
    const exists = await target.query('SELECT to_regclass($1) IS NOT NULL AS ok', [qualified(stage, info.name)]);
    if (exists.rows[0].ok) return;
    await target.query(renderCreateTable(info, stage));
    // Vacuumed and analysed once, when complete: autovacuum would scan it again and again while it fills.
    await target.query(`ALTER TABLE ${qualified(stage, info.name)} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)`);
  });
}

/**
 * Refuses a step whose source tables are not all staged: the work graph orders the items so that this never
 * happens; were it wrong, the step would read a partial copy and migrate too few rows without a word.
 */
export async function assertStaged(target: pg.ClientBase, run: EngineRun, step: string, tables: readonly string[]): Promise<void> {
  const r = await target.query<{ source_table: string }>(
    `SELECT source_table FROM ${qualified(run.targetSchema, '_migration_checkpoint')} WHERE run_id = $1 AND step = $2 AND source_table = ANY($3::text[]) AND batch_no = ${COMPLETE}`,
    [run.runId, STEP, [...tables]],
  );
  const staged = new Set(r.rows.map((x) => x.source_table));
  const missing = tables.filter((t) => !staged.has(t));
  if (missing.length) {
    throw new MigrationBatchError(
      `Step "${step}" of run ${run.runId} reads ${missing.map((t) => JSON.stringify(t)).join(', ')}, which ${missing.length > 1 ? 'are' : 'is'} not yet staged in "${stagingSchema(run.targetSchema)}" (internal error: the work graph runs ${missing.map(stageStep).join(', ')} first). Nothing was written. Redrive the execution.`,
    );
  }
}

/** Copies one source table into the staging schema in checkpointed key-range batches; a cursor when out of time. */
async function stageTable(o: StageOptions, name: string, totals: { copied: number; batches: number }): Promise<string | null> {
  const { source, target, run, plan } = o;
  const schema = run.targetSchema;
  const info = await readTableInfo(source, run.sourceSchema, name);
  // Loaded without its primary key, which is built once the table is complete (completeStagedTable).
  await createStagingTable(target, schema, { ...info, primaryKey: [] });
  const format = await copyFormat(source, run.sourceSchema, name);
  const plannedSource = plan.tables.flatMap((t) => t.sources).find((s) => s.table === name);
  const key = plannedSource?.key ?? null;
  // A table without a primary key may have rows without an id: the first batch copies them too.
  const nullKeys = plannedSource?.keyStrategy === 'id-column';
  const started = Date.now();
  for (;;) {
    const last = await lastCheckpoint(target, schema, run.runId, STEP, name);
    if (last?.batchNo === COMPLETE) return null;
    if (totals.batches > 0 && Date.now() >= o.deadline) return `stage:${name}:${last?.keyHi ?? ''}`;
    const batchNo = (last?.batchNo ?? 0) + 1;
    const lo = key ? last?.keyHi ?? null : null;
    const hi = key ? await nextStageHi(o, name, key, lo) : null;
    if ((key && hi === null && (last || !nullKeys)) || (!key && last)) break;
    const where = key ? stageWhere(key, lo, hi, nullKeys) : '';
    const rows = await copyBatch(o, name, { cols: info.columns.map((c) => id(c.name)).join(', '), where, format }, { batchNo, lo, hi });
    if (rows < 0) continue;
    totals.copied += rows;
    totals.batches++;
    o.onProgress?.({ source: name, rows, batchNo });
    if (!key || hi === null) break;
  }
  await completeStagedTable(o, info, (Date.now() - started) / 1000);
  return null;
}

/**
 * A staged table gets its primary key (built once, sorted, instead of row by row in every batch: about a quarter
 * of the load's time), then is vacuumed and analysed, before its completion checkpoint (a redrive after a crash in
 * between finds the key and vacuums again, a no-op): the steps that read it (they wait for this item) then find
 * statistics for their plans, hint bits set and the visibility map filled, instead of setting hint bits on the
 * migration's critical path while autovacuum competes with them. Autovacuum stays off on staging tables.
 */
async function completeStagedTable(o: StageOptions, info: TableInfo, seconds: number): Promise<void> {
  const { target, run } = o;
  const schema = run.targetSchema;
  const table = qualified(stagingSchema(schema), info.name);
  if (info.primaryKey.length) {
    await withTransaction(target, async () => {
      await target.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tracetrack-migrate:stage:${schema}:${info.name}`]);
      const has = await target.query('SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::regclass AND indisprimary) AS ok', [table]);
      if (!has.rows[0].ok) {
        await target.query("SELECT set_config('maintenance_work_mem', '512MB', true)");
        await target.query(`ALTER TABLE ${table} ADD PRIMARY KEY (${info.primaryKey.map((c) => id(c)).join(', ')})`);
      }
    });
  }
  await target.query(`VACUUM (ANALYZE) ${table}`);
  await withTransaction(target, async () => {
    if (!(await claimCheckpoint(target, schema, run.runId, STEP, info.name, { batchNo: COMPLETE, keyLo: null, keyHi: null }))) return;
    const totals = (await checkpointTotals(target, schema, run.runId)).find((t) => t.step === STEP && t.source === info.name);
    await recordStep(target, schema, run.runId, `migrate:${stageStep(info.name)}`, {
      status: 'done', finishedAt: new Date().toISOString(), schema: stagingSchema(schema), rows: totals?.migrated ?? 0, batches: totals?.batches ?? 0, seconds: totals?.seconds ?? seconds,
    });
  });
}

/**
 * COPY's binary format where every column has a built-in type (their binary forms are the wire protocol's, the
 * same on every supported version): about a third less CPU on both servers than text. A user-defined type (enum,
 * domain, composite; an array of one names its element's OID) is copied as text, which any database reads back.
 */
async function copyFormat(source: pg.ClientBase, sourceSchema: string, name: string): Promise<string> {
  const r = await source.query(
    `SELECT bool_and(a.atttypid < ${FIRST_NORMAL_OBJECT_ID}) AS builtin FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped`,
    [qualified(sourceSchema, name)],
  );
  return r.rows[0].builtin ? ' WITH (FORMAT binary)' : '';
}

/** PostgreSQL's first OID for objects created after initdb: below it, the built-in types. */
const FIRST_NORMAL_OBJECT_ID = 16384;

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
async function copyBatch(o: StageOptions, name: string, copy: { cols: string; where: string; format: string }, batch: { batchNo: number; lo: number | null; hi: number | null }): Promise<number> {
  const { cols, where, format } = copy;
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
        const out = source.query(copyOut(`COPY (SELECT ${cols} FROM ${qualified(run.sourceSchema, name)} ${where}) TO STDOUT${format}`));
        const into = target.query(copyFrom(`COPY ${qualified(stage, name)} (${cols}) FROM STDIN${format}`));
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
  // PostgreSQL's 64-bit text hash (stable across versions and platforms: hash partitioning relies on it) of each row's
  // text, summed: half the time of the first 64 bits of its md5 cast through bit(64) and numeric (scale 1: 1.6 s a side, against 3.4 s).
  const sumHash = (schema: string, t: string) =>
    `SELECT count(*)::bigint AS n, COALESCE(sum(hashtextextended(t::text, 0)), 0)::text AS h FROM ${qualified(schema, t)} t`;
  for (const name of stagedTables(plan)) {
    // Both sides at once: two servers (or two backends of one), each reading its own copy (on one two-core server each
    // query already runs with parallel workers, so there it gains little).
    const [a, b] = (await Promise.all([source.query(sumHash(run.sourceSchema, name)), target.query(sumHash(stage, name))])).map((r) => r.rows[0]);
    out.push({ table: name, sourceRows: Number(a.n), stagedRows: Number(b.n), match: a.n === b.n && a.h === b.h });
  }
  return out;
}

export async function dropStaging(target: pg.ClientBase, targetSchema: string): Promise<void> {
  await target.query(`DROP SCHEMA IF EXISTS ${id(stagingSchema(targetSchema))} CASCADE`);
}
