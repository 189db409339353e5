import type pg from 'pg';
import { MigrationBatchError, MigrationError, PlanError } from '../core/errors';
import type { Plan, SourcePlan, TablePlan } from '../core/planner';
import { TARGET_ORDER, type TargetTable } from '../core/rules';
import { plaintextPasswordSql } from '../core/sql/values';
import { PENDING_PASSWORD_HASH } from '../core/transforms';
import { defersPasswordHashing, offsetNeedsMaxKey, parseIndexesStep, parsePasswordsStep, parseTablePartStep, partRange, planFinalizeJobs, splitKeys, tablePartStep, type FinalizeJob, type TablePart } from '../core/work-graph';
import { escapeIdentifier as id, Params, qualified } from '../core/sql/ident';
import {
  buildBatchInsert,
  buildUnitSelect,
  createdAtExpr,
  derivedSourceName,
  duplicateCheckedTables,
  foldedQrExpr,
  renderDuplicateKeyCheck,
  sourceFrom,
  sourceRowsFrom,
  targetIdExpr,
  isKeySet,
  tableUnits,
  type KeyRange,
  type KeySelection,
  type TableUnit,
  type MappingContext,
  type PasswordHashes,
} from '../core/sql/mapping';
import { bagRoleRefs, bagRolesNeeded, renderBagRefsFill, renderBagRoleSets } from '../core/sql/bag-roles';
import { renderComputeSummaries } from '../core/sql/derived';
import { renderAnalyze, renderCreateTables, renderForeignKeys, renderIndexes, renderResetSequence, renderUniqueKeys, renderValidateForeignKeys, uniqueConstraints, WORK_TABLES } from '../core/sql/target-ddl';
import { withTransaction, toMigrationError } from '../io/pg';
import { checkpointTotals, claimCheckpoint, completeCheckpoint, COMPLETE, ensureInternalTables, lastCheckpoint, readRun, recordStep, STEP_DONE_SOURCE } from './runs';

/** What every migration step needs to know about its run. */
export interface EngineRun {
  readonly runId: string;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  /** Migration time (UTC, ISO without zone): replaces missing timestamps. */
  readonly runTime: string;
  readonly batchSize: number;
  /**
   * The source is live (changes captured): a batch may read rows written after `prepare`, so bag QR codes
   * can collide after all (a new lower-case duplicate): the bag batches then skip and reject them like any
   * unique-key collision, and catch-up re-derives those keys (their changes are in the log) with the rename.
   */
  readonly live?: boolean;
}

export interface Progress {
  readonly step: string;
  readonly source: string;
  readonly batchNo: number;
  readonly keyHi: number | null;
  readonly migrated: number;
  readonly rejected: number;
  readonly rowEstimate: number;
  readonly seconds: number;
}

export type PasswordHasher = (plaintexts: string[]) => Promise<string[]>;

export interface StepOptions {
  /** Connection to the target database (the source tables are read through `readSchema` there). */
  readonly client: pg.ClientBase;
  readonly run: EngineRun;
  readonly plan: Plan;
  /** Stop starting new batches after this time (epoch ms); the step returns a cursor. */
  readonly deadline: number;
  readonly hashPasswords: PasswordHasher;
  readonly onProgress?: (p: Progress) => void;
  /** Where the source tables are read from in the target database (default: the source schema). */
  readonly readSchema?: string;
  /** Asked between batches, like the deadline (tests use it to interrupt a run). */
  readonly shouldStop?: () => boolean;
  /** At most this many target connections at once (the run's concurrency; default 1). */
  readonly concurrency?: number;
  /**
   * A hashing step that is not the last: the steps beside it in its wave (core/work-graph.ts hashingCompanions); it
   * hashes until they are done. Absent or null: it hashes every password left.
   */
  readonly hashingBeside?: readonly string[] | null;
  /** Another connection to the target, for work beside `client` (finalize's jobs); absent: all on `client`. */
  readonly openClient?: () => Promise<{ readonly client: pg.ClientBase; readonly close: () => Promise<void> }>;
}

export interface StepResult {
  readonly done: boolean;
  readonly cursor: string | null;
  readonly migrated: number;
  readonly rejected: number;
  readonly batches: number;
}


function outOfTime(o: StepOptions): boolean {
  return Date.now() >= o.deadline || (o.shouldStop?.() ?? false);
}

/**
 * Creates the eight target tables (keys and checks only; indexes and FKs come after the load). The tables in
 * `deferUniqueKeys` (deferredUniqueKeyTables) get their unique keys in finalize; every other table has them
 * before its load, also one created earlier without them.
 */
export async function createTargetTables(client: pg.ClientBase, schema: string, deferUniqueKeys: readonly TargetTable[] = []): Promise<void> {
  await withTransaction(client, async () => {
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tracetrack-migrate:${schema}`]);
    for (const sql of renderCreateTables(schema, deferUniqueKeys)) await client.query(sql);
    for (const table of TARGET_ORDER.filter((t) => !deferUniqueKeys.includes(t))) for (const sql of renderUniqueKeys(schema, table)) await client.query(sql);
  });
}

export async function loadOffsets(client: pg.ClientBase, schema: string): Promise<Record<string, number>> {
  const r = await client.query(`SELECT source_table, id_offset FROM ${qualified(schema, '_migration_id_offset')}`);
  return Object.fromEntries(r.rows.map((row) => [row.source_table, Number(row.id_offset)]));
}

export function mappingContext(run: EngineRun, readSchema: string, offsets: Record<string, number>, mode: MappingContext['mode']): MappingContext {
  return { sourceSchema: readSchema, targetSchema: run.targetSchema, offsets, mode, runTime: run.runTime };
}

async function stepIsDone(o: StepOptions, step: string): Promise<boolean> {
  return stepsDone(o, [step]);
}

/** Whether every one of `steps` is done (its completion checkpoint claimed: markStepDone). */
async function stepsDone(o: StepOptions, steps: readonly string[]): Promise<boolean> {
  if (steps.length === 0) return true;
  const r = await o.client.query(
    `SELECT count(DISTINCT step)::int AS n FROM ${qualified(o.run.targetSchema, '_migration_checkpoint')}
      WHERE run_id = $1 AND source_table = $2 AND batch_no = $3 AND step = ANY($4::text[])`,
    [o.run.runId, STEP_DONE_SOURCE, COMPLETE, [...steps]],
  );
  return r.rows[0].n === new Set(steps).size;
}

/** `from`: the steps whose checkpoints the record sums (a table cut into parts: its parts'). */
async function markStepDone(o: StepOptions, step: string, extra: Record<string, unknown> = {}, from: readonly string[] = [step]): Promise<void> {
  await claimCheckpoint(o.client, o.run.targetSchema, o.run.runId, step, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null });
  // The step's record in the run: counts and seconds per source, summed from its checkpoints.
  const bySource = new Map<string, { source: string; batches: number; migrated: number; rejected: number; already: number; seconds: number }>();
  for (const t of await checkpointTotals(o.client, o.run.targetSchema, o.run.runId)) {
    if (!from.includes(t.step) || t.source === STEP_DONE_SOURCE) continue;
    const x = bySource.get(t.source) ?? { source: t.source, batches: 0, migrated: 0, rejected: 0, already: 0, seconds: 0 };
    bySource.set(t.source, { source: t.source, batches: x.batches + t.batches, migrated: x.migrated + t.migrated, rejected: x.rejected + t.rejected, already: x.already + t.already, seconds: x.seconds + t.seconds });
  }
  const sources = [...bySource.values()];
  await recordStep(o.client, o.run.targetSchema, o.run.runId, `migrate:${step}`, {
    status: 'done', finishedAt: new Date().toISOString(), sources,
    seconds: sources.reduce((a, x) => a + x.seconds, 0), ...extra,
  });
}

/** Runs one workflow migration step (`prepare`, a target table, or `finalize`) until done or out of time. */
export async function runMigrateStep(o: StepOptions, step: string): Promise<StepResult> {
  const part = parseTablePartStep(step);
  if (part) {
    const table = o.plan.tables.find((t) => t.target === part.table);
    if (!table) throw new MigrationBatchError(`Step "${step}" is not in the plan of run ${o.run.runId} (tables: ${o.plan.tables.map((t) => t.target).join(', ')}).`);
    return migrateTable(o, table, part);
  }
  if (await stepIsDone(o, step)) return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 0 };
  if (step === 'prepare') return prepare(o);
  if (step === 'finalize') return finalize(o);
  const passwordsPart = parsePasswordsStep(step);
  if (passwordsPart) return runPasswordsStep(o, step);
  const indexed = parseIndexesStep(step);
  if (indexed) return runIndexesStep(o, step, indexed);
  const table = o.plan.tables.find((t) => t.target === step);
  if (!table) throw new MigrationBatchError(`Step "${step}" is not in the plan of run ${o.run.runId} (steps: ${o.plan.steps.join(', ')}).`);
  return migrateTable(o, table);
}

/**
 * Per-transaction settings of a batch: memory for its joins and sorts, and an asynchronous commit.
 * The latter is safe here: a crash can lose only whole recent batches together with their
 * checkpoints (one transaction), which the rerun then does again.
 *
 * random_page_cost 1.1 (the usual value for SSD storage such as RDS): a batch resolves its references
 * by probing the primary keys of tables the previous steps wrote (and vacuumed, see migrateTable).
 * With the default of 4 the planner hashed the whole referenced table in every batch, a cost that
 * grows with that table: at 3.3 M bags 2.3 s of a 200,000-scan batch, against 0.8 s.
 */
export async function tuneBatchTransaction(client: pg.ClientBase): Promise<void> {
  await client.query(
    `SELECT set_config('work_mem', '256MB', true), set_config('synchronous_commit', 'off', true),
            set_config('maintenance_work_mem', '512MB', true), set_config('random_page_cost', '1.1', true)`,
  );
}

// ---------------------------------------------------------------- prepare

async function maxKey(client: pg.ClientBase, schema: string, source: SourcePlan): Promise<number> {
  if (!source.key) {
    const r = await client.query(`SELECT count(*)::bigint AS n FROM ${qualified(schema, source.table)}`);
    return Number(r.rows[0].n);
  }
  const r = await client.query(`SELECT COALESCE(max(${id(source.key)}), 0)::bigint AS m FROM ${qualified(schema, source.table)}`);
  return Number(r.rows[0].m);
}

/**
 * Before any row moves: id offsets for merged sources (persistent, so reruns reuse them), the id
 * map, QR codes that collide after folding, and which bags are parents or children in the data.
 * One transaction with its checkpoint. A source's largest key is read only where a later offset uses it
 * (offsetNeedsMaxKey), so that cross-database, prepare waits for the staging of no other source.
 */
async function prepare(o: StepOptions): Promise<StepResult> {
  const { client, run, plan } = o;
  const schema = run.targetSchema;
  const readSchema = o.readSchema ?? run.sourceSchema;
  const started = Date.now();
  const stats: Record<string, unknown> = {};
  // Tables a later version added (a run upgraded mid-way, then redriven) exist before they are filled.
  await ensureInternalTables(client, schema);
  await withTransaction(client, async () => {
    await tuneBatchTransaction(client);
    if (!(await claimCheckpoint(client, schema, run.runId, 'prepare', STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null }))) return;
    const offsetTable = qualified(schema, '_migration_id_offset');
    for (const table of plan.tables) {
      let next = 0;
      for (const [i, source] of table.sources.entries()) {
        const off = table.merged || !source.key ? next : 0;
        await client.query(`INSERT INTO ${offsetTable} (source_table, target_table, id_offset) VALUES ($1, $2, $3) ON CONFLICT (source_table) DO NOTHING`, [source.table, table.target, off]);
        const stored = (await client.query(`SELECT id_offset FROM ${offsetTable} WHERE source_table = $1`, [source.table])).rows[0].id_offset;
        if (offsetNeedsMaxKey(table, i)) next = Math.max(next, Number(stored) + (await maxKey(client, readSchema, source)));
      }
      for (const derived of table.derivedLinks) {
        await client.query(`INSERT INTO ${offsetTable} (source_table, target_table, id_offset) VALUES ($1, 'link', $2) ON CONFLICT (source_table) DO NOTHING`, [derivedSourceName(derived), next]);
      }
    }
    const offsets = await loadOffsets(client, schema);
    const ctx = mappingContext(run, readSchema, offsets, 'load');

    // The persistent id map of merged tables.
    let mapped = 0;
    for (const table of plan.tables.filter((t) => t.merged)) {
      for (const source of table.sources.filter((s) => s.key)) {
        const r = await client.query(
          `INSERT INTO ${qualified(schema, '_migration_id_map')} (source_table, source_key, target_table, target_id)
           SELECT $1, s.${id(source.key!)}::bigint, $2, ${targetIdExpr(source, ctx)} FROM ${sourceFrom(source, ctx)}
           WHERE s.${id(source.key!)} IS NOT NULL
           ON CONFLICT (source_table, source_key) DO NOTHING`,
          [source.table, table.target],
        );
        mapped += r.rowCount ?? 0;
      }
    }
    stats.idMapRows = mapped;

    const bag = plan.tables.find((t) => t.target === 'bag');
    await client.query(`TRUNCATE ${qualified(schema, '_mig_qr_rename')}, ${qualified(schema, '_mig_bag_parent')}, ${qualified(schema, '_mig_bag_child')}`);
    if (bag) {
      stats.qrRenamed = await renameDuplicateQrCodes(client, schema, bag, ctx);
      if (bagRolesNeeded(plan)) {
        await computeBagRoles(client, plan, ctx, run.live === true);
        // Catch-up relies on the per-row references (a run prepared without them is refused there):
        // recorded in the transaction that fills them.
        if (run.live === true) await recordStep(client, schema, run.runId, 'migrate:prepare', { bagRefs: true });
      }
    }
    await client.query(renderAnalyze(schema, WORK_TABLES));
  });
  await recordStep(client, schema, run.runId, 'migrate:prepare', { status: 'done', seconds: (Date.now() - started) / 1000, ...stats });
  return { done: true, cursor: null, migrated: 0, rejected: 0, batches: 1 };
}

/**
 * Bags whose QR codes are equal once folded: all but the earliest get `<code>_DUP_<id>` (written to _mig_qr_rename);
 * refused when a renamed code is another bag's code. Returns how many were renamed.
 */
async function renameDuplicateQrCodes(client: pg.ClientBase, schema: string, bag: TablePlan, ctx: MappingContext): Promise<number> {
  const union = bag.sources
    .map((s) => `SELECT ${targetIdExpr(s, ctx)} AS target_id, ${foldedQrExpr(s, ctx)} AS folded, ${createdAtExpr(s, ctx)} AS created_at FROM ${sourceFrom(s, ctx)}`)
    .join('\nUNION ALL\n');
  // One pass over the bags: the renames, and the renamed codes that another bag already has (which would collide
  // on the unique QR index). A renamed code holds '_DUP_', so only folded codes holding it can equal one: the check
  // joins those few instead of reading the bags a second time (0.4 s for 1,000,000 bags).
  const r = await client.query<{ renamed: string; clash: string[] | null }>(
    `WITH u AS MATERIALIZED (${union}),
          d AS (SELECT folded FROM u GROUP BY folded HAVING count(*) > 1),
          ins AS (
            INSERT INTO ${qualified(schema, '_mig_qr_rename')} (target_id, qr_id)
            SELECT target_id, folded || '_DUP_' || target_id FROM (
              SELECT u.target_id, u.folded, row_number() OVER (PARTITION BY u.folded ORDER BY u.created_at NULLS LAST, u.target_id) AS rn
                FROM u JOIN d ON d.folded = u.folded) x
            WHERE rn > 1
            RETURNING qr_id)
     SELECT (SELECT count(*) FROM ins)::bigint AS renamed,
            (SELECT array_agg(qr_id ORDER BY qr_id) FROM (SELECT DISTINCT i.qr_id FROM ins i JOIN (SELECT folded FROM u WHERE strpos(folded, '_DUP_') > 0) v ON v.folded = i.qr_id ORDER BY 1 LIMIT 5) c) AS clash`,
  );
  const clash = r.rows[0]!.clash ?? [];
  if (clash.length) {
    throw new PlanError(`Renaming duplicate QR codes would produce codes that other bags already have: ${clash.join(', ')}. Fix those QR codes in the source (or map them in a mapping file) and rerun.`);
  }
  return Number(r.rows[0]!.renamed);
}

/** Which bags the data says are parents or children (core/sql/bag-roles.ts); live runs keep each row's references too. */
export async function computeBagRoles(client: pg.ClientBase, plan: Plan, ctx: MappingContext, live: boolean): Promise<void> {
  const schema = ctx.targetSchema;
  const refs = bagRoleRefs(plan, ctx);
  if (!live) {
    for (const sql of renderBagRoleSets(schema, refs)) await client.query(sql);
    return;
  }
  for (const q of renderBagRefsFill(schema, refs)) await client.query(q.text, q.values);
}

// ---------------------------------------------------------------- table steps

/**
 * A table step, or one part of it (`part`, work-graph.ts tableParts): the part's checkpoints are its own step's
 * (`scan:2/2`), its batches those of its key range of each unit; the last part done marks the table done.
 */
async function migrateTable(o: StepOptions, table: TablePlan, part: TablePart | null = null): Promise<StepResult> {
  const totals = { migrated: 0, rejected: 0, batches: 0 };
  const step = part ? tablePartStep(part.table, part.part, part.parts) : table.target;
  if (part && (await stepIsDone(o, table.target))) return { ...totals, done: true, cursor: null };
  if (part && (await stepIsDone(o, step))) {
    // Done before (a redrive, or another invocation): the table may still wait for its last part's marking.
    if (await completePartedTable(o, table, part)) await vacuumAfterStep(o, table);
    return { ...totals, done: true, cursor: null };
  }
  const offsets = await loadOffsets(o.client, o.run.targetSchema);
  const checked = duplicateCheckedTables(o.plan, o.run.live === true).includes(table.target);
  const plain = checked && !(await uniqueKeysAtLoad(o, table, mappingContext(o.run, o.readSchema ?? o.run.sourceSchema, offsets, 'load')));
  const split = part ? await tableSplitKeys(o, table, part.parts) : {};
  for (const unit of tableUnits(o.plan, table, o.run.live === true)) {
    const bounds = part ? partRange(split[unit.label] ?? [], part.part) : { lo: null, hi: null };
    if (!bounds) continue; // this part has no keys of the unit
    const r = await migrateUnit(o, table, plain ? { ...unit, mayConflict: false } : unit, offsets, totals, step, bounds);
    if (!r.done) return { ...totals, done: false, cursor: r.cursor };
  }
  if (part) {
    await claimCheckpoint(o.client, o.run.targetSchema, o.run.runId, step, STEP_DONE_SOURCE, { batchNo: COMPLETE, keyLo: null, keyHi: null });
    if (await completePartedTable(o, table, part)) await vacuumAfterStep(o, table);
    return { ...totals, done: true, cursor: null };
  }
  const extra: Record<string, unknown> = {};
  await withTransaction(o.client, async () => {
    if (table.target === 'bag') extra.parentIdsNulled = await resolveBagParents(o);
    await markStepDone(o, table.target, extra);
  });
  await vacuumAfterStep(o, table);
  return { ...totals, done: true, cursor: null };
}

async function vacuumAfterStep(o: StepOptions, table: TablePlan): Promise<void> {
  // The next steps probe this table's primary key once per row. Freshly written pages are not yet
  // all-visible, so those probes would visit the heap, and without statistics the planner hashes the
  // whole table in every batch instead. VACUUM (ANALYZE) fixes both (outside a transaction, as it must
  // run; if the invocation dies before it, autovacuum does it later: only speed depends on it).
  // At 3.3 M bags a 200,000-scan batch's lookups took 3.5 s before, 0.8 s after.
  await o.client.query(renderAnalyze(o.run.targetSchema, [table.target, '_migration_reject'], { vacuum: true })).catch((err) => {
    throw toMigrationError(err, `Vacuuming ${table.target} after its step`);
  });
}

/**
 * Where the parts of a table cut its units' keys (splitKeys of each unit's smallest and largest key), decided once
 * (decidedOnce, under the parts' advisory lock) and recorded in the table's step record, by number of parts (a run
 * re-planned with another count keeps the earlier ones): every part, and every rerun of one, cuts at the same keys,
 * so each key falls in exactly one part.
 */
async function tableSplitKeys(o: StepOptions, table: TablePlan, parts: number): Promise<Record<string, number[]>> {
  const byCount = (record: Record<string, unknown>) => (record.splitKeys ?? {}) as Record<string, Record<string, number[]>>;
  return decidedOnce(o, table, () => lockParts(o, table), (record) => byCount(record)[String(parts)], async (record) => {
    const readSchema = o.readSchema ?? o.run.sourceSchema;
    const split: Record<string, number[]> = {};
    for (const unit of tableUnits(o.plan, table, o.run.live === true)) {
      const key = id(unit.source.key!);
      const r = await o.client.query(
        `SELECT min(s.${key})::bigint AS lo, max(s.${key})::bigint AS hi FROM ${qualified(readSchema, unit.source.table)} s${unit.filter ? ` WHERE ${unit.filter}` : ''}`,
      );
      const num = (v: unknown) => (v === null ? null : Number(v));
      split[unit.label] = splitKeys(num(r.rows[0].lo), num(r.rows[0].hi), parts);
    }
    return { value: split, fields: { splitKeys: { ...byCount(record), [String(parts)]: split } } };
  });
}

/**
 * A decision a table's step makes once per run (read from the table's step record by `read`): made by `decide` in one
 * transaction under `lock` (which makes a second invocation wait for the first's and read it) and recorded there.
 */
async function decidedOnce<T>(
  o: StepOptions,
  table: TablePlan,
  lock: () => Promise<void>,
  read: (record: Record<string, unknown>) => T | undefined,
  decide: (record: Record<string, unknown>) => Promise<{ value: T; fields: Record<string, unknown> }>,
): Promise<T> {
  const step = `migrate:${table.target}`;
  const record = async () => ((await readRun(o.client, o.run.targetSchema, o.run.runId))?.steps[step] ?? {}) as Record<string, unknown>;
  const first = read(await record());
  if (first !== undefined) return first;
  return withTransaction(o.client, async () => {
    await lock();
    const now = await record();
    const again = read(now);
    if (again !== undefined) return again;
    const { value, fields } = await decide(now);
    await recordStep(o.client, o.run.targetSchema, o.run.runId, step, fields);
    return value;
  });
}

/** The transaction's lock on a table's parts (their split keys and the table's completion), for this run. */
async function lockParts(o: StepOptions, table: TablePlan): Promise<void> {
  await o.client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`tracetrack-migrate:${o.run.targetSchema}:${o.run.runId}:${table.target}:parts`]);
}

/**
 * Once every part of a table is done, marks the table done (its record sums the parts' checkpoints), in one
 * transaction under the parts' lock (lockParts): true for the one invocation that marked it.
 */
async function completePartedTable(o: StepOptions, table: TablePlan, part: TablePart): Promise<boolean> {
  const { client } = o;
  const steps = Array.from({ length: part.parts }, (_, i) => tablePartStep(part.table, i + 1, part.parts));
  return withTransaction(client, async () => {
    await lockParts(o, table);
    if (await stepIsDone(o, table.target)) return false;
    if (!(await stepsDone(o, steps))) return false;
    await markStepDone(o, table.target, { parts: part.parts }, steps);
    return true;
  });
}

/**
 * Whether the batches of a duplicate-checked table (duplicateCheckedTables) load it with its unique keys, decided once
 * before its first batch and recorded, in the same transaction, in the step's record (`uniqueKeysAtLoad`); the table's
 * lock makes a second invocation wait for the first's decision and read it. True where the table already has its
 * keys (created by an earlier version) or where two source rows share a key: then the keys are added now, on the
 * empty table, and the batches skip and reject collisions. False: the batches are plain inserts; finalize builds the keys.
 */
async function uniqueKeysAtLoad(o: StepOptions, table: TablePlan, ctx: MappingContext): Promise<boolean> {
  const { client } = o;
  const target = qualified(o.run.targetSchema, table.target);
  return decidedOnce(
    o, table,
    async () => { await client.query(`LOCK TABLE ${target} IN SHARE ROW EXCLUSIVE MODE`); },
    (record) => (typeof record.uniqueKeysAtLoad === 'boolean' ? record.uniqueKeysAtLoad : undefined),
    async () => {
      const names = uniqueConstraints(table.target).map((c) => c.name);
      const present = await client.query(`SELECT 1 FROM pg_constraint WHERE conrelid = $1::regclass AND conname = ANY($2::text[])`, [target, names]);
      const atLoad = (present.rowCount ?? 0) > 0 || Boolean((await client.query(renderDuplicateKeyCheck(table, ctx))).rows[0].duplicate);
      if (atLoad) for (const sql of renderUniqueKeys(o.run.targetSchema, table.target)) await client.query(sql);
      return { value: atLoad, fields: { uniqueKeysAtLoad: atLoad } };
    },
  );
}

/** bag.parent_id was loaded as read; a parent that was never migrated becomes NULL (link rows say why). */
async function resolveBagParents(o: StepOptions): Promise<number> {
  const bag = qualified(o.run.targetSchema, 'bag');
  const r = await o.client.query(
    `UPDATE ${bag} b SET parent_id = NULL WHERE b.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${bag} p WHERE p.id = b.parent_id)`,
  );
  return r.rowCount ?? 0;
}

async function nextBatchHi(o: StepOptions, unit: TableUnit, readSchema: string, lo: number | null): Promise<number | null> {
  const key = id(unit.source.key!);
  const where = [lo === null ? 'TRUE' : `s.${key} > $1`, unit.filter ?? 'TRUE'].join(' AND ');
  const values: unknown[] = lo === null ? [] : [lo];
  values.push(o.run.batchSize);
  const r = await o.client.query(
    `SELECT max(k)::bigint AS hi FROM (SELECT s.${key} AS k FROM ${qualified(readSchema, unit.source.table)} s WHERE ${where} ORDER BY s.${key} LIMIT $${values.length}) x`,
    values,
  );
  return r.rows[0].hi === null ? null : Number(r.rows[0].hi);
}

/** Whether a table without a primary key has rows without an id (the first batch reads them; see rangeWhere). */
async function hasRowsWithoutKey(o: StepOptions, unit: TableUnit, readSchema: string): Promise<boolean> {
  if (unit.source.keyStrategy !== 'id-column') return false;
  const r = await o.client.query(`SELECT EXISTS (SELECT 1 FROM ${qualified(readSchema, unit.source.table)} s WHERE s.${id(unit.source.key!)} IS NULL) AS e`);
  return Boolean(r.rows[0].e);
}

async function migrateUnit(
  o: StepOptions,
  table: TablePlan,
  unit: TableUnit,
  offsets: Record<string, number>,
  totals: { migrated: number; rejected: number; batches: number },
  step: string = table.target,
  bounds: { readonly lo: number | null; readonly hi: number | null } = { lo: null, hi: null },
): Promise<{ done: boolean; cursor: string | null }> {
  const { client, run } = o;
  const schema = run.targetSchema;
  const readSchema = o.readSchema ?? run.sourceSchema;
  const ctx = mappingContext(run, readSchema, offsets, 'load');
  for (;;) {
    const last = await lastCheckpoint(client, schema, run.runId, step, unit.label);
    if (last?.batchNo === COMPLETE) return { done: true, cursor: null };
    // At least one batch per invocation, however small the budget: progress is guaranteed.
    if (totals.batches > 0 && outOfTime(o)) return { done: false, cursor: `${step}:${unit.label}:${last?.keyHi ?? ''}` };
    const batchNo = (last?.batchNo ?? 0) + 1;
    let range: KeyRange | null = null;
    if (unit.source.key) {
      // A part's batches start at its range's lower end and stop at its upper end.
      const lo = last?.keyHi ?? bounds.lo;
      if (bounds.hi !== null && lo !== null && lo >= bounds.hi) {
        await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo: COMPLETE, keyLo: lo, keyHi: null });
        return { done: true, cursor: null };
      }
      const next = await nextBatchHi(o, unit, readSchema, lo);
      const hi = next !== null && bounds.hi !== null && next > bounds.hi ? bounds.hi : next;
      if (hi === null && (last || bounds.lo !== null || !(await hasRowsWithoutKey(o, unit, readSchema)))) {
        await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo: COMPLETE, keyLo: lo, keyHi: null });
        return { done: true, cursor: null };
      }
      // hi null: a table without a primary key whose rows all lack an id; one batch reads (and rejects) them.
      range = { lo, hi };
    } else if (last) {
      await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo: COMPLETE, keyLo: null, keyHi: null });
      return { done: true, cursor: null };
    }
    const started = Date.now();
    const passwords = step === 'user' && defersPasswordHashing(run.live === true, unit.source)
      ? { keys: [], hashes: [], deferred: true }
      : await hashPlaintextPasswords(o, unit.source, readSchema, range);
    let counts: { migrated: number; rejected: number; already: number };
    try {
      counts = await withTransaction(client, async () => {
        await tuneBatchTransaction(client);
        if (!(await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo, keyLo: range?.lo ?? null, keyHi: range?.hi ?? null }))) {
          return { migrated: 0, rejected: 0, already: -1 };
        }
        const c = await insertUnitBatch(client, run, table, unit, ctx, range, passwords);
        await completeCheckpoint(client, schema, run.runId, step, unit.label, batchNo, { ...c, seconds: (Date.now() - started) / 1000 });
        return c;
      });
    } catch (err) {
      const e = toMigrationError(err, `Migrating ${table.target} from ${unit.label}, batch ${batchNo} (keys ${range ? `${range.lo ?? 'start'}–${range.hi}` : 'all'})`);
      if (e instanceof MigrationError && e.retryable) throw e;
      throw new MigrationBatchError(`${e.message}. Nothing of this batch was written. Fix the cause and redrive (or rerun with the same --run-id).`, { cause: err });
    }
    if (counts.already === -1) continue; // another invocation did this batch meanwhile
    totals.migrated += counts.migrated;
    totals.rejected += counts.rejected;
    totals.batches += 1;
    o.onProgress?.({
      step, source: unit.label, batchNo, keyHi: range?.hi ?? null,
      migrated: counts.migrated, rejected: counts.rejected, rowEstimate: unit.source.rowEstimate, seconds: (Date.now() - started) / 1000,
    });
    if (!unit.source.key) {
      await claimCheckpoint(client, schema, run.runId, step, unit.label, { batchNo: COMPLETE, keyLo: null, keyHi: null });
      return { done: true, cursor: null };
    }
  }
}

/**
 * The batch statement of one unit over one key range or key set (buildBatchInsert over the unit's mapping),
 * run in the caller's transaction: the good rows inserted, the bad ones rejected with their reason.
 */
export async function insertUnitBatch(
  client: pg.ClientBase, run: EngineRun, table: TablePlan, unit: TableUnit, ctx: MappingContext, range: KeySelection | null, passwords: PasswordHashes | null,
): Promise<{ migrated: number; rejected: number; already: number }> {
  const params = new Params();
  const mapping = buildUnitSelect(table, unit, ctx, params, range, passwords);
  const q = buildBatchInsert(
    {
      runId: run.runId, target: table.target, sourceLabel: unit.label, mapping, sourceSchema: ctx.sourceSchema, targetSchema: run.targetSchema, source: unit.source,
      ...(unit.mayConflict === false ? { mayConflict: false } : {}),
    },
    params,
  );
  const row = (await client.query(q.text, q.values)).rows[0];
  return { migrated: Number(row.migrated), rejected: Number(row.rejected), already: Number(row.already) };
}

/** Legacy plaintext passwords of one batch (a key range, or catch-up's key set), hashed in Node (werkzeug scrypt); never logged. */
export async function hashPlaintextPasswords(
  o: Pick<StepOptions, 'client' | 'run' | 'hashPasswords'>,
  source: SourcePlan,
  readSchema: string,
  range: KeySelection | null,
): Promise<PasswordHashes | null> {
  const pw = source.columns.find((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column');
  if (!pw?.source) return null;
  const col = `s.${id(pw.source)}`;
  // The batch's own key: the id, or for a table without one the row number the mapping gives it.
  // Rows without an id or sharing one are rejected by the mapping: one hash per key is enough.
  const key = source.key ? `s.${id(source.key)}` : 's._rownum';
  const params = new Params();
  const where = [plaintextPasswordSql(`${col}::text`), `${key} IS NOT NULL`];
  if (isKeySet(range)) where.push(`${key} = ANY(${params.add(range.keys, 'bigint[]')})`);
  else {
    if (range?.lo !== null && range?.lo !== undefined) where.push(`${key} > ${params.add(range.lo, 'bigint')}`);
    if (range?.hi !== null && range?.hi !== undefined) where.push(`${key} <= ${params.add(range.hi, 'bigint')}`);
  }
  const ctx = mappingContext(o.run, readSchema, {}, 'load');
  const r = await o.client.query(
    `SELECT DISTINCT ON (${key}) ${key}::bigint AS k, ${col}::text AS p FROM ${sourceRowsFrom(source, ctx)} WHERE ${where.join(' AND ')} ORDER BY ${key}`,
    params.values,
  );
  if (r.rows.length === 0) return { keys: [], hashes: [] };
  const hashes = await o.hashPasswords(r.rows.map((row) => row.p as string));
  return { keys: r.rows.map((row) => Number(row.k)), hashes };
}

// ---------------------------------------------------------------- passwords

/**
 * The `passwords:<i>/<n>` steps: the legacy plaintext passwords that the user batches left pending
 * (PENDING_PASSWORD_HASH, see defersPasswordHashing) are hashed the werkzeug way (scrypt, random 16-character salt,
 * as in the batches) and written over the pending value, by key, in key order. A step that is not the last hashes
 * only while the steps beside it in its wave run (StepOptions.hashingBeside), then stops; the next takes the
 * passwords still pending, the last all of them. They depend only on the `user` step, so their CPU time overlaps the
 * loads instead of delaying them. Batches of PASSWORD_BATCH keys; each batch is one transaction with its checkpoint
 * and writes only a row still pending, so a password is hashed into the target exactly once however steps and
 * invocations interleave or retry.
 */

/** Plaintext passwords per batch: 0.4–0.5 s of scrypt (8 × 51–57 ms), so a step beside others stops soon after they are done. */
export const PASSWORD_BATCH = 8;

export async function runPasswordsStep(o: StepOptions, step: string): Promise<StepResult> {
  const totals = { migrated: 0, rejected: 0, batches: 0 };
  const user = o.plan.tables.find((t) => t.target === 'user');
  for (const source of user?.sources ?? []) {
    if (!defersPasswordHashing(o.run.live === true, source)) continue;
    const done = await hashSource(o, step, source, totals);
    if (!done) return { ...totals, done: false, cursor: `${step}:${source.table}` };
  }
  await withTransaction(o.client, () => markStepDone(o, step));
  return { ...totals, done: true, cursor: null };
}

/** One source's pending passwords, batch by batch; false when out of time. */
async function hashSource(o: StepOptions, step: string, source: SourcePlan, totals: { migrated: number; batches: number }): Promise<boolean> {
  const { client, run } = o;
  const schema = run.targetSchema;
  const ctx = mappingContext(run, o.readSchema ?? run.sourceSchema, {}, 'load');
  const pw = source.columns.find((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column')!;
  const key = `s.${id(source.key!)}`;
  const col = `s.${id(pw.source!)}::text`;
  for (;;) {
    const last = await lastCheckpoint(client, schema, run.runId, step, source.table);
    if (last?.batchNo === COMPLETE) return true;
    if (totals.batches > 0 && outOfTime(o)) return false;
    const lo = last?.keyHi ?? null;
    // Beside other steps: done once they are (a batch after their end at most); what is still pending is the next step's.
    const stop = o.hashingBeside ? await stepsDone(o, o.hashingBeside) : false;
    // The user rows still pending, in key order (the target's ids are the source keys: defersPasswordHashing).
    const r = stop ? { rows: [] } : await client.query(
      `SELECT DISTINCT ON (${key}) ${key}::bigint AS k, ${col} AS p FROM ${sourceRowsFrom(source, ctx)}
         JOIN ${qualified(schema, 'user')} t ON t.id = ${key}::bigint
        WHERE t.password_hash = $2 AND ${plaintextPasswordSql(col)} AND ${key} IS NOT NULL${lo === null ? '' : ` AND ${key} > $3`}
        ORDER BY ${key} LIMIT $1`,
      [PASSWORD_BATCH, PENDING_PASSWORD_HASH, ...(lo === null ? [] : [lo])],
    );
    if (r.rows.length === 0) {
      await claimCheckpoint(client, schema, run.runId, step, source.table, { batchNo: COMPLETE, keyLo: lo, keyHi: null });
      return true;
    }
    const keys = r.rows.map((row) => Number(row.k));
    const started = Date.now();
    const hashes = await o.hashPasswords(r.rows.map((row) => row.p as string));
    const batchNo = (last?.batchNo ?? 0) + 1;
    await withTransaction(client, async () => {
      if (!(await claimCheckpoint(client, schema, run.runId, step, source.table, { batchNo, keyLo: lo, keyHi: keys[keys.length - 1]! }))) return;
      // Only a row still pending: one that another hashing step, a retry round or catch-up wrote meanwhile keeps its own hash.
      const u = await client.query(
        `UPDATE ${qualified(schema, 'user')} t SET password_hash = x.h FROM unnest($1::bigint[], $2::text[]) AS x(k, h)
          WHERE t.id = x.k AND t.password_hash = $3`,
        [keys, hashes, PENDING_PASSWORD_HASH],
      );
      await completeCheckpoint(client, schema, run.runId, step, source.table, batchNo, { migrated: u.rowCount ?? 0, rejected: 0, already: 0, seconds: (Date.now() - started) / 1000 });
      totals.migrated += u.rowCount ?? 0;
    }).catch((err) => {
      throw toMigrationError(err, `Hashing the legacy passwords of ${source.table} (keys after ${lo ?? 'the start'})`);
    });
    totals.batches++;
  }
}

// ---------------------------------------------------------------- finalize

/**
 * After the load: the summaries the application derives (bag and bill, from the complete link and
 * bill_bag tables), secondary indexes, foreign keys, sequences past the largest id, statistics.
 * The jobs (planFinalizeJobs) run on up to `concurrency` connections at once: `client` and extra ones
 * from `openClient`. Each job is one transaction with its checkpoint; an invocation starts no job after
 * its deadline (but at least one), lets the running ones finish, and returns a cursor.
 */
async function finalize(o: StepOptions): Promise<StepResult> {
  const offsets = await loadOffsets(o.client, o.run.targetSchema);
  const jobs = planFinalizeJobs(o.plan);
  const done = new Set<string>();
  for (const job of jobs) {
    const cp = await lastCheckpoint(o.client, o.run.targetSchema, o.run.runId, 'finalize', job.name);
    if (cp) done.add(job.name); // claimed in the job's own transaction: present means done
  }
  const pool = new ClientPool(o);
  const running = new Map<string, Promise<string>>();
  let batches = 0;
  try {
    for (;;) {
      const ready = jobs.filter((j) => !done.has(j.name) && !running.has(j.name) && j.after.every((d) => done.has(d)));
      while (ready.length && running.size < pool.size && !(batches > 0 && outOfTime(o))) {
        const job = ready.shift()!;
        batches++;
        running.set(job.name, pool.use((c) => runFinalizeJob(o, c, job, offsets)).then(() => job.name));
      }
      if (running.size === 0) break;
      const finished = await Promise.race(running.values());
      running.delete(finished);
      done.add(finished);
    }
  } finally {
    await Promise.allSettled(running.values());
    await pool.close();
  }
  if (jobs.some((j) => !done.has(j.name))) return { done: false, cursor: `finalize:${jobs.find((j) => !done.has(j.name))!.name}`, migrated: 0, rejected: 0, batches };
  await withTransaction(o.client, () => markStepDone(o, 'finalize'));
  return { done: true, cursor: null, migrated: 0, rejected: 0, batches };
}

/** A table's unique keys (where the load did without them) and secondary indexes: IF NOT EXISTS, so finalize can run them again. */
function tableIndexSql(schema: string, table: TargetTable): string[] {
  return [...renderUniqueKeys(schema, table), ...renderIndexes(schema, table)];
}

/**
 * `indexes:<table>` (withEarlyIndexItems): the table's indexes one statement at a time, each in its own transaction with
 * its checkpoint (a table's many indexes need not fit one invocation: out of time, it returns a cursor and the next
 * invocation goes on with the next index).
 */
async function runIndexesStep(o: StepOptions, step: string, table: TargetTable): Promise<StepResult> {
  const schema = o.run.targetSchema;
  const statements = tableIndexSql(schema, table);
  const last = await lastCheckpoint(o.client, schema, o.run.runId, step, 'indexes');
  let batches = 0;
  for (let i = last?.batchNo ?? 0; i < statements.length; i++) {
    if (batches > 0 && outOfTime(o)) return { done: false, cursor: `${step}:${i + 1}/${statements.length}`, migrated: 0, rejected: 0, batches };
    const started = Date.now();
    await withTransaction(o.client, async () => {
      await tuneBatchTransaction(o.client);
      if (!(await claimCheckpoint(o.client, schema, o.run.runId, step, 'indexes', { batchNo: i + 1, keyLo: i, keyHi: i + 1 }))) return;
      await o.client.query(statements[i]!);
      await completeCheckpoint(o.client, schema, o.run.runId, step, 'indexes', i + 1, { migrated: 0, rejected: 0, already: 0, seconds: (Date.now() - started) / 1000 });
    }).catch((err) => {
      throw toMigrationError(err, `Building the indexes of ${table} (step ${step}, statement ${i + 1} of ${statements.length})`);
    });
    batches++;
  }
  await withTransaction(o.client, () => markStepDone(o, step));
  return { done: true, cursor: null, migrated: 0, rejected: 0, batches };
}

/** One finalize job in its own transaction on `client`, with its checkpoint (a job done meanwhile is skipped). */
async function runFinalizeJob(o: StepOptions, client: pg.ClientBase, job: FinalizeJob, offsets: Record<string, number>): Promise<void> {
  const { run } = o;
  const schema = run.targetSchema;
  const started = Date.now();
  // VACUUM runs outside a transaction, before the job's checkpoint: run again after a failure in between, it only
  // finds less to do.
  if (job.kind === 'vacuum') {
    await client.query(`VACUUM ${qualified(schema, job.table!)}`).catch((err) => {
      throw toMigrationError(err, `Finalizing ${job.table} (vacuuming it)`);
    });
  }
  await withTransaction(client, async () => {
    await tuneBatchTransaction(client);
    if (!(await claimCheckpoint(client, schema, run.runId, 'finalize', job.name, { batchNo: 1, keyLo: null, keyHi: null }))) return;
    // (A vacuum job's work was done above; its transaction only records it.)
    if (job.kind === 'table') {
      const table = job.table!;
      // Indexes first, then the summaries: an UPDATE before CREATE INDEX in the same transaction leaves broken
      // HOT chains, and PostgreSQL then marks the new index unusable for every snapshot older than this
      // transaction (pg_index.indcheckxmin) — with one long transaction anywhere on the server, the application's
      // exact qr_id lookups would read the whole bag table after cutover.
      for (const sql of tableIndexSql(schema, table)) await client.query(sql);
      const tablePlan = o.plan.tables.find((t) => t.target === table);
      const summaries = tablePlan ? renderComputeSummaries(schema, tablePlan, offsets) : null;
      if (summaries) await client.query(summaries);
      await client.query(renderResetSequence(schema, table));
      await client.query(`ANALYZE ${qualified(schema, table)}`);
    } else if (job.kind === 'indexes') {
      const builds = renderIndexes(schema, job.table!);
      for (const i of job.indexes ?? []) await client.query(builds[i]!);
    } else if (job.kind === 'foreign-keys') {
      for (const table of TARGET_ORDER) for (const sql of renderForeignKeys(schema, table)) await client.query(sql);
    } else if (job.kind === 'validate') {
      // PostgreSQL checks the rows with one anti-join per key, planned with this transaction's settings: hashed, the
      // referenced ids are probed once per row, with a cache miss each time; merged from the two indexes (the table's
      // are built by now) they are read in order. Scan's three keys at scale 1: 2.1 s hashed, 0.6 s merged (kept demo DB).
      await client.query(`SELECT set_config('enable_hashjoin', 'off', true)`);
      for (const sql of renderValidateForeignKeys(schema, job.table!)) await client.query(sql);
    }
    await completeCheckpoint(client, schema, run.runId, 'finalize', job.name, 1, { migrated: 0, rejected: 0, already: 0, seconds: (Date.now() - started) / 1000 });
  }).catch((err) => {
    const what = { table: 'indexes, summaries, sequence', indexes: 'building indexes', vacuum: 'vacuuming it', validate: 'validating its foreign keys', 'foreign-keys': 'adding the foreign keys' }[job.kind];
    throw toMigrationError(err, `Finalizing ${job.table ?? ''}${job.table ? ' ' : ''}(${what})`);
  });
}

/**
 * The step's connections: its own client and, up to the run's concurrency, more from `openClient`, opened
 * when a job needs one and closed at the end. `use` runs a job on an idle connection.
 */
class ClientPool {
  private readonly idle: pg.ClientBase[];
  private readonly opened: { client: pg.ClientBase; close: () => Promise<void> }[] = [];
  readonly size: number;
  constructor(private readonly o: StepOptions) {
    this.idle = [o.client];
    this.size = o.openClient ? Math.max(1, Math.floor(o.concurrency ?? 1)) : 1;
  }
  async use<T>(fn: (c: pg.ClientBase) => Promise<T>): Promise<T> {
    let client = this.idle.pop();
    if (!client) {
      const extra = await this.o.openClient!();
      this.opened.push(extra);
      client = extra.client;
    }
    try {
      return await fn(client);
    } finally {
      this.idle.push(client);
    }
  }
  async close(): Promise<void> {
    await Promise.allSettled(this.opened.map((x) => x.close()));
  }
}
