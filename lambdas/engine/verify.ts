import type pg from 'pg';
import { InputError } from '../core/errors';
import type { Plan, TablePlan } from '../core/planner';
import { qualified } from '../core/sql/ident';
import { tableUnits, type KeyRange, type MappingContext } from '../core/sql/mapping';
import type { TargetTable } from '../core/rules';
import { PASSWORD_SAMPLE_SIZE } from '../core/verify-target-items';
import { renderAnalyze, WORK_TABLES } from '../core/sql/target-ddl';
import { supportsTypedRowHash, type CheckResult, type VerificationResult } from '../core/verify';
import {
  assembleVerification,
  describeItem,
  assertCurrentItem,
  EMPTY_RANGE_RESULT,
  itemRef,
  mergeRange,
  mergeTargetRange,
  nextChunk,
  nextTargetChunk,
  parseItemRef,
  planUnitRanges,
  resolveVerifySizes,
  targetRangeSizes,
  targetRangeTable,
  type ItemResult,
  type TargetRangeSpec,
  type RangeResult,
  type VerifyItemSpec,
  type VerifySizes,
} from '../core/verify-items';
import { withTransaction } from '../io/pg';
import { caughtUpPosition, drainInTransaction } from './catchup';
import { loadOffsets, tuneBatchTransaction, type EngineRun, type PasswordHasher } from './migrate';
import { ensureInternalTables } from './runs';
import {
  checksummedColumns,
  extraRows,
  fingerprintRange,
  keySpan,
  orphanCheckNames,
  rangeChunk,
  referencedTables,
  referencingTables,
  rejectedLinks,
  sequenceChecks,
  unitsFor,
} from './verify-checks';
import { nextTargetIds, orphanCounts, referenceOrphanCounts, summaryCounts, targetSpan, userCounts } from './verify-target-checks';

/**
 * Verify (MIGRATION_SPEC.md §3) as work items: `planVerification` lists them (one per unit and key range of
 * every target table, and the checks over whole target tables) in `_migration_verify` under a new round;
 * `runVerifyItem` works through one item chunk by chunk, each chunk one transaction that commits its result
 * together with the item's cursor (a rerun or redrive resumes there, nothing is counted twice);
 * `assembleRun` builds the verdict from the stored results. `verifyRun` does all three in one go.
 */
export interface VerifyOptions {
  readonly client: pg.ClientBase;
  readonly run: EngineRun;
  readonly plan: Plan;
  readonly readSchema?: string;
  /** Key-range width of one checksum bucket. */
  readonly bucketWidth?: number;
  /** Item and chunk sizes (tests make them tiny). */
  readonly sizes?: Partial<VerifySizes>;
  readonly onProgress?: (check: CheckResult) => void;
  /** Runs without capture in the source database: fingerprint every source table read (a cutover compares). */
  readonly fingerprints?: boolean;
  /** Live runs: every chunk first catches up the captured changes its snapshot sees, then checks in that snapshot. */
  readonly live?: { readonly hashPasswords: PasswordHasher };
}

export interface ItemOptions extends VerifyOptions {
  /** Stop starting new chunks after this time (epoch ms); at least one chunk runs per call. */
  readonly deadline: number;
  readonly shouldStop?: () => boolean;
}

export type AssembledVerification = ReturnType<typeof assembleVerification>;

const ITEMS = '_migration_verify';

function checksumContext(o: VerifyOptions, offsets: Record<string, number>): MappingContext {
  return { sourceSchema: o.readSchema ?? o.run.sourceSchema, targetSchema: o.run.targetSchema, offsets, mode: 'checksum', runTime: o.run.runTime };
}

/** Every item of a verification, each with a weight (rows it reads) to start the heaviest first. */
async function planItems(o: VerifyOptions, sizes: VerifySizes): Promise<{ spec: VerifyItemSpec; weight: number }[]> {
  const ctx = checksumContext(o, await loadOffsets(o.client, o.run.targetSchema));
  const out: { spec: VerifyItemSpec; weight: number }[] = [];
  const fingerprinted = new Set<string>();
  const rowsOf = (t: TablePlan) => t.sources.reduce((a, s) => a + Math.max(s.rowEstimate, 0), 0);
  for (const table of o.plan.tables) {
    for (const unit of unitsFor(o.plan, table, ctx)) {
      const span = unit.source.key ? await keySpan(o.client, ctx.sourceSchema, unit.source) : null;
      const fingerprint = o.fingerprints === true && unit.kind === 'source' && !fingerprinted.has(unit.source.table);
      if (fingerprint) fingerprinted.add(unit.source.table);
      const ranges = planUnitRanges(span, sizes);
      for (const r of ranges) out.push({ spec: { kind: 'range', table: table.target, unit: unit.label, lo: r.lo, hi: r.hi, fingerprint }, weight: Math.max(unit.source.rowEstimate, 1) / ranges.length });
    }
  }
  // Weights in source rows, as measured at scale 0.25 (shape A): a user costs ~100 rows' time (the hash
  // pattern, the werkzeug sample), the summaries about half a pass over bag and bill_bag.
  const planned = new Map(o.plan.tables.map((t) => [t.target, t]));
  const rows = (t: string) => (planned.has(t as TablePlan['target']) ? rowsOf(planned.get(t as TablePlan['target'])!) : 0);
  // Items over target ids, one per range of the table's ids now (its weight shared among them).
  const overIds = async (table: TargetTable, make: (r: KeyRange) => TargetRangeSpec, weight: number) => {
    const span = await targetSpan(o.client, o.run.targetSchema, table);
    const ranges = planUnitRanges(span, targetRangeSizes(make({ lo: null, hi: null }), sizes));
    for (const r of ranges) out.push({ spec: make(r), weight: weight / ranges.length });
  };
  for (const table of referencingTables()) await overIds(table, (r) => ({ kind: 'orphans', table, byRow: true, ...r }), rows(table) / 10);
  for (const ref of referencedTables()) await overIds(ref, (r) => ({ kind: 'references', ref, ...r }), rows(ref));
  for (const table of o.plan.tables) out.push({ spec: { kind: 'extra', table: table.target }, weight: rowsOf(table) / 10 });
  await overIds('user', (r) => ({ kind: 'users', ...r }), rows('user') * 100);
  for (const table of ['bag', 'bill'] as const) if (planned.has(table)) await overIds(table, (r) => ({ kind: 'summaries', table, ...r }), table === 'bag' ? rows('bag') / 2 : rows('bill_bag') / 2);
  out.push({ spec: { kind: 'sequences' }, weight: 1 });
  return out;
}

/**
 * A new round of verification items for the run (the previous round's are deleted): the items as Map items,
 * heaviest first, so that the last ones to start are short.
 */
export async function planVerification(o: VerifyOptions): Promise<{ round: string; items: string[] }> {
  const { client, run } = o;
  const sizes = resolveVerifySizes({ ...o.sizes, ...(o.bucketWidth ? { bucketWidth: o.bucketWidth } : {}) });
  // Tables a later version added (_migration_verify: an execution upgraded mid-way, then redriven) exist first.
  await ensureInternalTables(client, run.targetSchema);
  // Planner statistics of the work tables (see planner-statistics.test.ts): joins planned without them were 50x slower.
  await client.query(renderAnalyze(run.targetSchema, WORK_TABLES));
  const planned = await planItems(o, sizes);
  const round = `${Date.now().toString(36)}${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
  await withTransaction(client, async () => {
    await client.query(`DELETE FROM ${qualified(run.targetSchema, ITEMS)} WHERE run_id = $1`, [run.runId]);
    await client.query(
      `INSERT INTO ${qualified(run.targetSchema, ITEMS)} (run_id, item_no, round, spec, sizes, options)
       SELECT $1, n, $2, spec, $4::jsonb, $5::jsonb FROM unnest($3::jsonb[]) WITH ORDINALITY AS x(spec, n)`,
      [run.runId, round, planned.map((p) => JSON.stringify(p.spec)), JSON.stringify(sizes), JSON.stringify({ fingerprints: o.fingerprints === true })],
    );
  });
  const order = planned.map((p, i) => ({ ref: itemRef(round, i + 1), weight: p.weight, i }));
  order.sort((a, b) => b.weight - a.weight || a.i - b.i);
  return { round, items: order.map((x) => x.ref) };
}

interface ItemRow {
  readonly round: string;
  readonly spec: VerifyItemSpec;
  readonly sizes: VerifySizes;
  readonly chunks: number;
  readonly cursor: number | null;
  readonly done: boolean;
  readonly result: ItemResult | null;
}

async function readItem(client: pg.ClientBase, schema: string, runId: string, itemNo: number): Promise<ItemRow | null> {
  const r = await client.query(`SELECT round, spec, sizes, chunks, cursor, done, result FROM ${qualified(schema, ITEMS)} WHERE run_id = $1 AND item_no = $2`, [runId, itemNo]);
  const row = r.rows[0];
  return row ? { round: row.round, spec: row.spec, sizes: row.sizes, chunks: Number(row.chunks), cursor: row.cursor === null ? null : Number(row.cursor), done: row.done, result: row.result } : null;
}

/** Live runs: the captured changes this snapshot sees are caught up first (drains are serialised by the lock). */
async function openSnapshot(o: ItemOptions): Promise<RangeResult['live']> {
  await o.client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
  // No parallel workers: the items already run `concurrency` at once, each on its own connection, and the run keeps to
  // that many busy backends on the server. On two cores a chunk's parallel hash join took twice the CPU for 1.4× the
  // speed; in four A/B runs at scale 1 Verify took 15.4 s on average without them against 16.7 s with.
  await o.client.query(`SELECT set_config('max_parallel_workers_per_gather', '0', true)`);
  if (!o.live) {
    await tuneBatchTransaction(o.client);
    return null;
  }
  // Before the snapshot is taken (LOCK takes none): two chunks draining the same log at once would conflict.
  await o.client.query(`LOCK TABLE ${qualified(o.run.targetSchema, ITEMS)} IN SHARE UPDATE EXCLUSIVE MODE`);
  const drained = await drainInTransaction({ client: o.client, run: o.run, plan: o.plan, hashPasswords: o.live.hashPasswords });
  const position = await caughtUpPosition(o.client, o.run);
  return { positionMin: position, positionMax: position, drained };
}

/** One chunk of an item: its result merged into the item's, and the cursor it ends at. */
async function itemChunk(o: ItemOptions, row: ItemRow, live: RangeResult['live']): Promise<{ result: ItemResult; cursor: number | null; last: boolean }> {
  const { client, run, plan } = o;
  const spec = row.spec;
  const ctx = checksumContext(o, await loadOffsets(client, run.targetSchema));
  const tablePlan = (t: string) => {
    const found = plan.tables.find((x) => x.target === t);
    if (!found) throw new InputError(`Verification item "${describeItem(spec)}" names target table ${t}, which the run's plan does not have. Start Verify again (PlanVerify).`);
    return found;
  };
  const liveField = live ? { live } : {};
  if (spec.kind === 'range') {
    const table = tablePlan(spec.table);
    const unit = unitsFor(plan, table, ctx).find((u) => u.label === spec.unit);
    if (!unit) throw new InputError(`Verification item "${describeItem(spec)}" names unit ${spec.unit}, which the run's plan does not have. Start Verify again (PlanVerify).`);
    const span = await keySpan(client, ctx.sourceSchema, unit.source);
    const { range, last } = nextChunk(spec, row.chunks === 0 ? null : row.cursor, unit.source.key ? span : null, row.sizes);
    const prev = row.result?.kind === 'range' ? row.result : EMPTY_RANGE_RESULT;
    const version = Number((await client.query(`SELECT current_setting('server_version_num') AS v`)).rows[0].v);
    const c = { client, run, table, unit, ctx, width: row.sizes.bucketWidth, columns: checksummedColumns(unit), typedHash: supportsTypedRowHash(version) };
    let chunk = await rangeChunk(c, unit.source.key ? range : null, span, prev.mismatchCount === 0);
    if (spec.fingerprint) chunk = { ...chunk, fingerprint: await fingerprintRange(client, ctx.sourceSchema, unit.source, unit.source.key ? range : null, c.typedHash) };
    return { result: { kind: 'range', ...mergeRange(prev, { ...chunk, live }) }, cursor: range.hi, last };
  }
  if (spec.kind === 'extra') return { result: { kind: 'extra', ...(await extraRows(client, run, plan, tablePlan(spec.table), ctx, Boolean(live))), ...liveField }, cursor: null, last: true };
  if (spec.kind === 'sequences') {
    return { result: { kind: 'sequences', checks: await sequenceChecks(client, run.targetSchema), rejectedLinks: await rejectedLinks(client, run, plan, ctx.offsets), ...liveField }, cursor: null, last: true };
  }
  return targetRangeChunk(o, row, spec, ctx, liveField);
}

/** One chunk of an item over target ids (orphans, summaries, users): the ids after the cursor, merged into the item's result. */
async function targetRangeChunk(o: ItemOptions, row: ItemRow, spec: TargetRangeSpec, ctx: MappingContext, liveField: { live?: RangeResult['live'] }): Promise<{ result: ItemResult; cursor: number | null; last: boolean }> {
  const { client, run, plan } = o;
  const cursor = row.chunks === 0 ? null : row.cursor;
  const ids = await nextTargetIds(client, run.targetSchema, targetRangeTable(spec), { lo: cursor ?? spec.lo, hi: spec.hi });
  const { range, last } = nextTargetChunk(spec, cursor, ids.next, ids.max, targetRangeSizes(spec, row.sizes));
  const prev = row.chunks === 0 ? null : row.result;
  let chunk: ItemResult;
  if (spec.kind === 'orphans') chunk = { kind: 'orphans', orphans: await orphanCounts(client, run.targetSchema, spec.table, range), ...liveField };
  else if (spec.kind === 'references') chunk = { kind: 'orphans', orphans: await referenceOrphanCounts(client, run.targetSchema, spec.ref, range), ...liveField };
  else if (spec.kind === 'summaries') chunk = { kind: 'summaries', summaries: await summaryCounts(client, run.targetSchema, plan, spec.table, ctx.offsets, range), ...liveField };
  else {
    // Each item checks its first three rehashed users per source with werkzeug; the sum keeps the first three of all (the single pass's).
    const checked = (table: string) => (prev?.kind === 'users' ? prev.sources.find((x) => x.table === table)?.sample.length ?? 0 : 0);
    chunk = { kind: 'users', ...(await userCounts(client, run, plan, ctx, range, (table) => PASSWORD_SAMPLE_SIZE - checked(table))), ...liveField };
  }
  return { result: mergeTargetRange(prev, chunk), cursor: range.hi, last };
}

/**
 * Works through one item until it is done or the deadline passes (at least one chunk per call). Each chunk's
 * result is committed with the item's cursor, guarded by the chunk count: a second invocation of the same
 * item (a retry while the first still ran) finds the chunk done and goes on after it.
 */
export async function runVerifyItem(o: ItemOptions, ref: string): Promise<{ done: boolean; cursor: string | null; label: string; chunks: number }> {
  const parsed = parseItemRef(ref);
  if (!parsed) throw new InputError(`"${ref}" is not a verification item (expected <round>/<number>).`);
  const table = qualified(o.run.targetSchema, ITEMS);
  let chunks = 0;
  for (;;) {
    const step = await withTransaction(o.client, async () => {
      const live = await openSnapshot(o);
      const row = await readItem(o.client, o.run.targetSchema, o.run.runId, parsed.itemNo);
      if (!row || row.round !== parsed.round) {
        throw new InputError(`Verification item ${ref} of run ${o.run.runId} belongs to a verification that was started again since (the current one is ${row?.round ?? 'gone'}). Run Verify again from PlanVerify.`);
      }
      assertCurrentItem(row.spec, row.result);
      if (row.done) return { done: true, label: describeItem(row.spec), ran: false };
      if (chunks > 0 && (Date.now() >= o.deadline || o.shouldStop?.())) return { done: false, label: describeItem(row.spec), ran: false };
      const started = Date.now();
      const next = await itemChunk(o, row, live);
      const r = await o.client.query(
        `UPDATE ${table} SET chunks = chunks + 1, cursor = $4, done = $5, result = $6::jsonb, seconds = seconds + $7, updated_at = now()
          WHERE run_id = $1 AND item_no = $2 AND round = $3 AND chunks = $8`,
        [o.run.runId, parsed.itemNo, parsed.round, next.cursor, next.last, JSON.stringify(next.result), (Date.now() - started) / 1000, row.chunks],
      );
      return { done: next.last && r.rowCount === 1, label: describeItem(row.spec), ran: r.rowCount === 1 };
    });
    if (step.ran) chunks += 1;
    if (step.done) return { done: true, cursor: null, label: step.label, chunks };
    if (!step.ran && chunks > 0) return { done: false, cursor: `${ref}@${chunks}`, label: step.label, chunks };
  }
}

/** The verdict from the stored results of a round; refuses while an item is not done. */
export async function assembleRun(o: VerifyOptions, round: string): Promise<AssembledVerification> {
  const { client, run, plan } = o;
  const r = await client.query(`SELECT item_no, round, spec, sizes, options, done, result FROM ${qualified(run.targetSchema, ITEMS)} WHERE run_id = $1 ORDER BY item_no`, [run.runId]);
  const rows = r.rows.filter((row) => row.round === round);
  if (rows.length === 0) throw new InputError(`Run ${run.runId} has no verification items of round ${round}: Verify was started again since, or never planned. Run Verify again from PlanVerify.`);
  const open = rows.filter((row) => !row.done);
  if (open.length) {
    throw new InputError(`Verification of run ${run.runId} is not complete: ${open.length} of ${rows.length} items not done (e.g. ${describeItem(open[0].spec)}). Redrive the execution to finish them.`);
  }
  const fingerprints = rows[0].options?.fingerprints === true;
  const items = rows.map((row) => ({ spec: row.spec, result: row.result }));
  for (const i of items) assertCurrentItem(i.spec, i.result);
  const result = assembleVerification({
    runId: run.runId,
    bucketWidth: Number(rows[0].sizes.bucketWidth),
    tables: plan.tables.map((t) => ({ target: t.target, units: tableUnits(plan, t).map((u) => ({ label: u.label, kind: u.kind })) })),
    orphanOrder: orphanCheckNames(),
    fingerprintTables: fingerprints ? [...new Set(plan.tables.flatMap((t) => t.sources.map((s) => s.table)))] : null,
    items,
    verifiedAt: new Date().toISOString(),
  });
  for (const c of result.checks) o.onProgress?.(c);
  return result;
}

/** The whole verification in this process: plan, every item to its end, the verdict. */
export async function verifyAll(o: VerifyOptions): Promise<AssembledVerification> {
  const { round, items } = await planVerification(o);
  for (const ref of items) await runVerifyItem({ ...o, deadline: Number.POSITIVE_INFINITY }, ref);
  return assembleRun(o, round);
}

/**
 * Proves the invariants of MIGRATION_SPEC.md §3, source against target: every source row is migrated or
 * rejected (counts), migrated content equals the mapped source (checksums per key range), no orphan,
 * sequences past the largest id, and no password the application cannot check.
 */
export async function verifyRun(o: VerifyOptions): Promise<VerificationResult> {
  const { live: _live, ...result } = await verifyAll(o);
  return result;
}
