import type { Plan, SourcePlan, TablePlan } from './plan';
import { bagRoleSourceTables, bagRolesNeeded } from './sql/bag-roles';
import { tableUnits } from './sql/mapping';
import { renderIndexes, TARGET_TABLE_DDL } from './sql/target-ddl';
import { isTargetTable, TARGET_ORDER, UNIQUE_KEYS, type TargetTable } from './rules';

/**
 * The migration as a dependency graph of work items, derived from the plan and from the target's
 * foreign keys (data, TARGET_TABLE_DDL), never from a hard-coded list: a table's step waits for the
 * steps of the tables it references (its batches resolve those references against the rows they wrote),
 * `prepare` (id offsets, id map, QR renames, bag roles) comes before every table, the deferred password
 * hashing after its table, and `finalize` after everything. Cross-database, each source table the plan
 * reads is staged by its own item (`stage:<table>`), and a step waits only for the staging of the source
 * tables it reads (stepReads: the plan's sources), so that only what prepare reads (shape A: bag) is staged
 * before it, and the rest (scan, bill_bag, ...) beside it.
 *
 * The workflow runs the graph in waves: wave n holds items whose dependencies all lie in waves before n
 * (its longest path from a root, or as late as possible for an item only the last one waits for), and one Map runs the items of a wave concurrently, up to
 * the run's concurrency. Two items never write the same rows: each item is one target table
 * (or one of the bookkeeping phases) and every checkpoint is keyed by its step.
 *
 * Example (shape A, in place, scale 1): prepare → user → {bag, bill, passwords:1/3} → {scan:1/2, scan:2/2, link, bill_bag,
 * passwords:2/3, indexes:bag, indexes:bill} → {finalize, passwords:3/3}.
 */

export interface WorkItem {
  readonly step: string;
  /** Steps that must be done before this one starts. */
  readonly after: readonly string[];
  /** Run as early as the dependencies allow, even where only the last items wait for it. */
  readonly early?: boolean;
  /** Staging: run in the first wave of the other items, or in the wave just before the first item that waits for it, if earlier. */
  readonly late?: boolean;
  /** Run in the last wave, beside `finalize`, which does not wait for it (the last hashing part). */
  readonly last?: boolean;
}

export interface WorkGraph {
  readonly items: readonly WorkItem[];
  /** Steps by wave; every dependency of a step is in an earlier wave. */
  readonly waves: readonly (readonly string[])[];
}

/** The steps that hash legacy plaintext passwords after their rows are in (engine/migrate.ts, runPasswordsStep). */
export const PASSWORDS_STEP = 'passwords';
/**
 * The hashing (CPU only, 51–57 ms of scrypt a password in io/scrypt.ts, one at a time in the process: HASH_SLOTS)
 * runs as one item in each wave after `user` that has a core to spare: the first as early as it can (beside bag, whose one connection
 * leaves a core idle), the middle one as late as it can (beside scan), the last beside finalize (which does not wait
 * for it). Each but the last hashes the passwords still pending, in key order, only while the other steps of its wave
 * run (hashingCompanions), and leaves the rest to the next; the last hashes whatever is left. Fixed shares could not
 * fit the waves on every machine: with a quarter, a half and a quarter by hash of the key, bag finished 1.5 s after
 * its hashing and the hashing beside scan ran 2 s past the scan parts (scale 1, 20:43 on 18).
 */
export const PASSWORD_SHARES: readonly number[] = [1, 1, 1];

/**
 * The plan's hashing steps: `passwords:<i>/<n>` (runs planned by earlier versions: `passwords:<first>-<last>/<buckets>`,
 * such as `passwords:2-3/4`, parsed alike; a step that is not the last hashes beside its wave, the last what is left).
 */
export function passwordSteps(shares: readonly number[] = PASSWORD_SHARES): string[] {
  const buckets = shares.reduce((a, n) => a + n, 0);
  let next = 1;
  return shares.map((n) => {
    const first = next;
    next += n;
    return `${PASSWORDS_STEP}:${first}${n > 1 ? `-${first + n - 1}` : ''}/${buckets}`;
  });
}

/** A hashing step's place among them: part..through (1-based) of `parts`; the last has through = parts. */
export interface HashingPlace {
  readonly part: number;
  readonly through: number;
  readonly parts: number;
}

/** A hashing step's place (`passwords:2-3/3` → { part: 2, through: 3, parts: 3 }), null for any other step. */
export function parsePasswordsStep(step: string): HashingPlace | null {
  const m = /^passwords:([0-9]+)(?:-([0-9]+))?\/([0-9]+)$/.exec(step);
  if (!m) return null;
  const part = Number(m[1]);
  const through = m[2] === undefined ? part : Number(m[2]);
  const parts = Number(m[3]);
  return part >= 1 && through >= part && through <= parts ? { part, through, parts } : null;
}

/** The cross-database staging item of one source table (engine/stage.ts). */
export const STAGE_STEP = 'stage';

export function stageStep(table: string): string {
  return `${STAGE_STEP}:${table}`;
}

/** The source table of a staging item (`stage:scan` → scan), null for any other step (also the whole-run `stage` of earlier versions). */
export function parseStageStep(step: string): string | null {
  return step.startsWith(`${STAGE_STEP}:`) && step.length > STAGE_STEP.length + 1 ? step.slice(STAGE_STEP.length + 1) : null;
}

/** Every source table the plan reads, in plan order: what a cross-database run stages. */
export function stagedTables(plan: Pick<Plan, 'tables'>): string[] {
  return unique(plan.tables.flatMap((t) => t.sources.map((s) => s.table)));
}

/**
 * Whether `prepare` needs the largest key of a table's source `index`: only where it moves an offset that
 * is used, that of a later source (merged, or without a key) or of the table's derived links. Elsewhere the
 * offset is 0 whatever the key, so prepare need not wait for (or read) that source.
 */
export function offsetNeedsMaxKey(table: Pick<TablePlan, 'sources' | 'merged' | 'derivedLinks'>, index: number): boolean {
  return table.derivedLinks.length > 0 || table.sources.slice(index + 1).some((s) => table.merged || !s.key);
}

/** The source tables a migration step reads (through the staging schema when cross-database). */
export function stepReads(plan: Pick<Plan, 'tables'>, step: string): string[] {
  if (step === 'prepare') return prepareReads(plan);
  const passwords = parsePasswordsStep(step);
  const target = passwords ? 'user' : stepTable(step);
  const table = plan.tables.find((t) => t.target === target);
  if (!table) return [];
  return unique(passwords ? table.sources.map((s) => s.table) : tableUnits(plan, table).map((u) => u.source.table));
}

/** What `prepare` (engine/migrate.ts) reads: the keys its offsets need, the merged sources (id map), the bag sources (QR codes, roles). */
function prepareReads(plan: Pick<Plan, 'tables'>): string[] {
  const out: string[] = [];
  for (const table of plan.tables) {
    table.sources.forEach((s, i) => {
      if (offsetNeedsMaxKey(table, i) || (table.merged && s.key)) out.push(s.table);
    });
  }
  const bag = plan.tables.find((t) => t.target === 'bag');
  if (bag) out.push(...bag.sources.map((s) => s.table), ...(bagRolesNeeded(plan) ? bagRoleSourceTables(plan) : []));
  return unique(out);
}

/**
 * The work items of a plan, with their dependencies. `stage` (cross-database): one staging item per source
 * table, listed last and largest first (a wave's Map starts its items in order, up to the concurrency).
 */
export function planWorkItems(plan: Pick<Plan, 'steps'> & { readonly tables?: Plan['tables'] }, options: GraphOptions = {}): WorkItem[] {
  const steps = [...plan.steps];
  const present = new Set(steps);
  const tables = steps.filter(isTargetTable);
  const staged = options.stage ? stagedTables({ tables: plan.tables ?? [] }) : [];
  const reads = (step: string) => (options.stage ? stepReads({ tables: plan.tables ?? [] }, step).map(stageStep) : []);
  const items: WorkItem[] = [];
  for (const step of steps) {
    if (step === 'prepare') items.push({ step, after: reads(step) });
    else if (isTargetTable(step)) {
      const refs = TARGET_TABLE_DDL[step].foreignKeys.map((fk) => fk.ref).filter((r) => r !== step && present.has(r));
      items.push({ step, after: unique([...base(present), ...refs, ...reads(step)]) });
    } else if (parsePasswordsStep(step)) {
      items.push({ step, after: [...base(present), ...(present.has('user') ? ['user'] : []), ...reads(step)], ...passwordsPlace(step) });
    }
    else if (step === 'finalize') items.push({ step, after: [...steps.filter((s) => s !== 'finalize' && !passwordsPlace(s).last), ...staged.map(stageStep)] });
    else items.push({ step, after: [...base(present), ...tables, ...staged.map(stageStep)] });
  }
  // The largest first: a wave's Map starts its items in order, and the longest should not start last.
  const rows = (t: string) => Math.max(0, ...(plan.tables ?? []).flatMap((x) => x.sources).filter((s) => s.table === t).map((s) => s.rowEstimate));
  const bySize = [...staged].sort((a, b) => rows(b) - rows(a) || (a < b ? -1 : a > b ? 1 : 0));
  return withTableParts([...items, ...bySize.map((t) => ({ step: stageStep(t), after: [], late: true }))], plan, options);
}

/** How the graph is cut: cross-database staging items, and the key-range parts of the largest tables. */
export interface GraphOptions {
  readonly stage?: boolean;
  /** A live run: no table is cut into parts. */
  readonly live?: boolean;
  /** Rows per batch (the run's batchSize): with it, tables of at least PART_BATCHES × 2 batches get parts. */
  readonly batchSize?: number;
  /** At most this many items at once (the run's concurrency): a table gets no more parts. */
  readonly concurrency?: number;
}

/**
 * A table step cut into key-range parts: `scan:1/2`, `scan:2/2`. Each part loads the batches of one range of every
 * unit's key (engine/migrate.ts tableSplitKeys: split keys read once from the source and recorded), on its own
 * connection, so the largest table of the last wave loads on several cores instead of one. The last part to finish
 * marks the table done. Only where the order of the batches cannot change the target: ids are the source keys
 * (plus the source's offset), so two parts never write the same id, and the table has no other unique key and no
 * derived links (whose first batch wins a collision). A part has at least PART_BATCHES batches.
 */
export const PART_BATCHES = 6;
export const MAX_TABLE_PARTS = 4;

export interface TablePart {
  readonly table: TargetTable;
  readonly part: number;
  readonly parts: number;
}

export function tablePartStep(table: TargetTable, part: number, parts: number): string {
  return `${table}:${part}/${parts}`;
}

/** The part of a table step (`scan:2/2` → { table: 'scan', part: 2, parts: 2 }), null for any other step. */
export function parseTablePartStep(step: string): TablePart | null {
  const m = /^([a-z_]+):([0-9]+)\/([0-9]+)$/.exec(step);
  if (!m || !isTargetTable(m[1]!)) return null;
  const part = Number(m[2]);
  const parts = Number(m[3]);
  return part >= 1 && part <= parts && parts >= 2 ? { table: m[1] as TargetTable, part, parts } : null;
}

/** The parts a table step is cut into (1: not cut). */
export function tableParts(plan: { readonly tables?: Plan['tables'] }, target: TargetTable, options: GraphOptions): number {
  const table = plan.tables?.find((t) => t.target === target);
  if (!table || options.live || !options.batchSize || options.batchSize < 1) return 1;
  if (UNIQUE_KEYS[target].length > 0 || table.derivedLinks.length > 0 || !table.sources.every((s) => s.key !== null)) return 1;
  const rows = table.sources.reduce((a, s) => a + Math.max(s.rowEstimate, 0), 0);
  const limit = Math.min(MAX_TABLE_PARTS, Math.max(1, Math.floor(options.concurrency ?? MAX_TABLE_PARTS)));
  return Math.max(1, Math.min(limit, Math.floor(rows / (PART_BATCHES * options.batchSize))));
}

/** Every table item with parts replaced by its parts (same dependencies), and every dependency on it by them. */
function withTableParts(items: readonly WorkItem[], plan: { readonly tables?: Plan['tables'] }, options: GraphOptions): WorkItem[] {
  const partsOf = new Map<string, string[]>();
  for (const item of items) {
    if (!isTargetTable(item.step)) continue;
    const n = tableParts(plan, item.step, options);
    if (n > 1) partsOf.set(item.step, Array.from({ length: n }, (_, i) => tablePartStep(item.step as TargetTable, i + 1, n)));
  }
  if (partsOf.size === 0) return [...items];
  const expand = (steps: readonly string[]) => steps.flatMap((d) => partsOf.get(d) ?? [d]);
  return items.flatMap((item) => (partsOf.get(item.step) ?? [item.step]).map((step) => ({ ...item, step, after: expand(item.after) })));
}

/**
 * Where a table's parts are cut in one unit's keys: `parts − 1` keys evenly between the smallest and the largest
 * (fewer where the span is too short; none for an empty source). Part p takes the keys in (split[p−2], split[p−1]],
 * the first from the start (rows without a key included), the last to the end (keys written later included).
 */
export function splitKeys(min: number | null, max: number | null, parts: number): number[] {
  const out: number[] = [];
  if (min === null || max === null || max <= min) return out;
  for (let i = 1; i < parts; i++) {
    const k = min + Math.floor(((max - min) * i) / parts);
    if (k < max && (out.length === 0 || k > out[out.length - 1]!)) out.push(k);
  }
  return out;
}

/** The key range of part `part` (1-based) for these split keys; null: the part has no keys (fewer split keys than parts). */
export function partRange(split: readonly number[], part: number): { readonly lo: number | null; readonly hi: number | null } | null {
  if (part < 1 || part - 1 > split.length) return null;
  return { lo: part === 1 ? null : split[part - 2]!, hi: part - 1 === split.length ? null : split[part - 1]! };
}

/** The target table a step writes rows of: a table step or one of its parts (null for any other step). */
export function stepTable(step: string): TargetTable | null {
  return isTargetTable(step) ? step : parseTablePartStep(step)?.table ?? null;
}

/** Where a hashing part runs (PASSWORD_SHARES): the first beside bag, the last beside finalize, any other beside scan. */
function passwordsPlace(step: string): Pick<WorkItem, 'early' | 'last'> {
  const b = parsePasswordsStep(step);
  if (!b) return {};
  if (b.part === 1) return { early: true };
  return b.through === b.parts ? { last: true } : {};
}

function base(present: ReadonlySet<string>): string[] {
  return present.has('prepare') ? ['prepare'] : [];
}

/** Groups the items into waves by their longest path from a root; refuses a cycle or an unknown dependency. */
export function resolveWaves(items: readonly WorkItem[]): WorkGraph {
  const byStep = new Map(items.map((i) => [i.step, i]));
  const level = new Map<string, number>();
  const visiting = new Set<string>();
  const levelOf = (step: string): number => {
    const known = level.get(step);
    if (known !== undefined) return known;
    const item = byStep.get(step);
    if (!item) throw new Error(`Work item "${step}" is a dependency but not in the graph (internal error).`);
    if (visiting.has(step)) throw new Error(`The work items have a dependency cycle through "${step}" (internal error).`);
    visiting.add(step);
    const l = item.after.reduce((m, d) => Math.max(m, levelOf(d) + 1), 0);
    visiting.delete(step);
    level.set(step, l);
    return l;
  };
  for (const item of items) levelOf(item.step);
  // An item that only the last items wait for (promotionrequest, audit_log, late hashing parts) runs as late as possible,
  // in the wave just before them: it overlaps the longest loads instead of lengthening an earlier, shorter wave.
  const dependants = new Map<string, string[]>(items.map((i) => [i.step, []]));
  for (const item of items) for (const d of item.after) dependants.get(d)!.push(item.step);
  const isSink = (step: string) => dependants.get(step)!.length === 0;
  for (const item of items) {
    const ds = dependants.get(item.step)!;
    if (!item.early && ds.length > 0 && ds.every(isSink)) level.set(item.step, Math.min(...ds.map((d) => level.get(d)!)) - 1);
  }
  // Staging runs in the first wave of the migration's own items (beside prepare, whose one connection leaves a core
  // idle), or earlier where that wave reads it; not all of it in a first wave of its own, nor beside bag, whose
  // wave the first hashing part already fills.
  const firstWave = Math.min(...items.filter((i) => !i.late).map((i) => level.get(i.step)!));
  for (const item of items) {
    const ds = dependants.get(item.step)!;
    if (item.late && ds.length > 0) level.set(item.step, Math.max(0, Math.min(firstWave, ...ds.map((d) => level.get(d)! - 1))));
  }
  const lastWave = Math.max(0, ...items.filter((i) => !i.last).map((i) => level.get(i.step)!));
  for (const item of items) if (item.last) level.set(item.step, Math.max(level.get(item.step)!, lastWave));
  const waves: string[][] = [];
  for (const item of items) (waves[level.get(item.step)!] ??= []).push(item.step);
  return { items, waves: waves.filter((w) => w.length > 0).map((w) => [...w].sort((a, b) => startRank(a) - startRank(b))) };
}

/**
 * The order a wave's Map starts its items in, up to the concurrency (a stable sort, plan order otherwise): the parts of
 * a table first (the longest loads), then the other steps, then the hashing (CPU in the task: it takes a slot only when
 * a load is done, and has the cores the loads leave), then the index builds. At scale 1 the scan wave has seven items
 * for four slots: with the hashing started first, the bag indexes waited for its slot and ended 3 s after the loads;
 * with the indexes first, the hashing did.
 */
function startRank(step: string): number {
  if (parseTablePartStep(step)) return 0;
  if (parsePasswordsStep(step)) return 2;
  if (parseIndexesStep(step)) return 3;
  return 1;
}

/** The waves of a plan (what Analyse hands the workflow). */
export function planWaves(plan: Pick<Plan, 'steps'> & { readonly tables?: Plan['tables'] }, options: GraphOptions = {}): string[][] {
  return resolveWaves(withEarlyIndexItems(planWorkItems(plan, options))).waves.map((w) => [...w]);
}

/** The graph options of a run (Analyse plans its waves with them; a hashing step finds its wave again with them). */
export function graphOptionsOf(run: { readonly crossDatabase?: boolean; readonly live?: boolean; readonly batchSize: number; readonly concurrency?: number }): GraphOptions {
  return { stage: run.crossDatabase === true, live: run.live === true, batchSize: run.batchSize, concurrency: run.concurrency ?? 1 };
}

/**
 * The steps a hashing step hashes beside: the other steps of its wave (not hashing ones); it stops once they are
 * done. Null: it hashes every password left (the last hashing step, or one in none of the waves).
 */
export function hashingCompanions(waves: readonly (readonly string[])[], step: string): string[] | null {
  const place = parsePasswordsStep(step);
  if (!place || place.through === place.parts) return null;
  const wave = waves.find((w) => w.includes(step));
  return wave ? wave.filter((s) => s !== step && !parsePasswordsStep(s)) : null;
}

/** The steps that build a table's indexes before finalize (engine/migrate.ts runIndexesStep). */
export const INDEXES_STEP = 'indexes';

/** The table of an `indexes:<table>` step, null for any other step. */
export function parseIndexesStep(step: string): TargetTable | null {
  const t = step.startsWith(`${INDEXES_STEP}:`) ? step.slice(INDEXES_STEP.length + 1) : null;
  return t !== null && isTargetTable(t) ? t : null;
}

/**
 * The indexes of a table whose rows are all in before the last loading wave (bag, beside the scan load that
 * references it) are built in that wave, by an `indexes:<table>` item after every item that writes the table,
 * instead of in finalize after the wave: the build fills the cores the wave leaves idle once its shorter loads
 * end. Only where it adds no wave (an item that would, is left to finalize), and with nothing else writing the
 * table meanwhile (CREATE INDEX locks out writers). Finalize builds whatever is missing (IF NOT EXISTS).
 */
export function withEarlyIndexItems(items: readonly WorkItem[]): WorkItem[] {
  const finalize = items.find((i) => i.step === 'finalize');
  if (!finalize) return [...items];
  const { waves } = resolveWaves(items);
  const levelOf = new Map(waves.flatMap((w, l) => w.map((step) => [step, l] as const)));
  const lastLoad = levelOf.get('finalize')! - 1;
  const writers = (t: TargetTable) => items.filter((i) => stepTable(i.step) === t || (t === 'user' && parsePasswordsStep(i.step))).map((i) => i.step);
  const tables = [...new Set(items.map((i) => stepTable(i.step)).filter((t): t is TargetTable => t !== null))];
  const early: WorkItem[] = tables
    .filter((t) => TARGET_TABLE_DDL[t].indexes.length > 0)
    .filter((t) => Math.max(...writers(t).map((w) => levelOf.get(w)!)) < lastLoad)
    .map((t) => ({ step: `${INDEXES_STEP}:${t}`, after: writers(t) }));
  return [...items.filter((i) => i !== finalize), ...early, { ...finalize, after: [...finalize.after, ...early.map((e) => e.step)] }];
}

function unique(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

/**
 * Whether a user source's legacy plaintext passwords are hashed by the `passwords` step after the load
 * instead of inside its batches. The rule needs the target id to be the source key (ids kept), and a
 * source that does not change meanwhile (a live run hashes in its batches: catch-up re-derives rows).
 */
export function defersPasswordHashing(live: boolean, source: Pick<SourcePlan, 'key' | 'idStrategy' | 'columns'>): boolean {
  return !live && source.key !== null && source.idStrategy === 'keep'
    && source.columns.some((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column' && c.source !== null);
}

/**
 * The jobs of `finalize`, run on up to the run's concurrency of connections at once, each one transaction
 * with its checkpoint: per table its secondary indexes, summaries, sequence and statistics (they touch that
 * table only, so they run side by side); then every foreign key added NOT VALID in one short transaction
 * (it takes SHARE ROW EXCLUSIVE locks, so it waits for no index build and none waits for it); then per table
 * VALIDATE CONSTRAINT, which locks its table SHARE UPDATE EXCLUSIVE and the referenced ones ROW SHARE only,
 * so the validations of different tables run at once.
 */
export interface FinalizeJob {
  /** Checkpoint source of the job: the table's name for its table job (as before this graph), else the kind. */
  readonly name: string;
  readonly kind: 'table' | 'indexes' | 'vacuum' | 'foreign-keys' | 'validate';
  readonly table: TargetTable | null;
  /** `indexes`: which of the table's secondary index builds (renderIndexes, by position) the job runs. */
  readonly indexes?: readonly number[];
  readonly after: readonly string[];
}

/**
 * The table with the most rows builds its secondary indexes in this many jobs (every such index in one of them),
 * side by side before its table job: CREATE INDEX takes a SHARE lock, which two builds on one table both hold. At
 * scale 1 scan's table job (its four indexes, then ANALYZE: 6.75 s) was the longest path through finalize, with a
 * core idle for its last 2.5 s.
 */
export const FINALIZE_INDEX_JOBS = 2;

/**
 * The jobs in the order they start when ready: the tables with the most rows first (their index builds and validations
 * are the longest), so that the largest does not wait for a free connection while the small ones run. At scale 1 the
 * scan table's job started 0.36 s after the others in TARGET_ORDER, and its validation last of five. The largest
 * table with two or more secondary indexes left to finalize has its index builds first, in FINALIZE_INDEX_JOBS jobs,
 * and its table job (unique keys, summaries, sequence, statistics: after every index, as in one job) waits for them.
 * Then the foreign keys (NOT VALID), every table's vacuum, and the validations.
 */
export function planFinalizeJobs(plan: Pick<Plan, 'tables'> & { readonly steps?: Plan['steps'] } = { tables: [] }): FinalizeJob[] {
  const order = [...TARGET_ORDER].sort((a, b) => tableRows(plan, b) - tableRows(plan, a));
  // Tables whose indexes an `indexes:<table>` item built before finalize (withEarlyIndexItems) have none left to build.
  const built = new Set(plan.steps ? withEarlyIndexItems(planWorkItems({ ...plan, steps: plan.steps })).map((i) => parseIndexesStep(i.step)) : []);
  const largest = order.find((t) => !built.has(t) && renderIndexes('', t).length >= 2 && tableRows(plan, t) > 0);
  const builds = largest ? renderIndexes('', largest).length : 0;
  const jobs = Math.min(FINALIZE_INDEX_JOBS, builds);
  const split: FinalizeJob[] = Array.from({ length: jobs }, (_, k) => ({
    name: `${largest}:indexes-${k + 1}/${jobs}`, kind: 'indexes', table: largest!,
    indexes: Array.from({ length: builds }, (_, i) => i).filter((i) => i % jobs === k), after: [],
  }));
  const tables: FinalizeJob[] = order.map((t) => ({ name: t, kind: 'table', table: t, after: t === largest ? split.map((j) => j.name) : [] }));
  // The validations read both sides from their indexes (index-only where the pages are all-visible), and so do Verify's
  // reference checks and, after cutover, the application: every table is vacuumed once all the table jobs are done
  // (the summaries' UPDATEs clear the visibility of the pages they touch, and a VACUUM beside a job whose transaction
  // began before a table's last write cannot mark that table's new rows visible to all; the loads' VACUUMs ran beside
  // other steps). On 15 the validation of scan's keys made one heap fetch per bag and per bill-bag row without it
  // (2.70 s against 18's 1.01 s at scale 1; 1.17 s with it). A table already all-visible costs VACUUM little: it skips
  // those pages (every table, whatever its row estimate: a source never analysed has none).
  // After the foreign keys are added too (a moment's work): a VACUUM skips the pages another session holds pinned.
  const fks: FinalizeJob = { name: 'foreign-keys', kind: 'foreign-keys', table: null, after: [...TARGET_ORDER] };
  const vacuum: FinalizeJob[] = order.map((t) => ({ name: `vacuum:${t}`, kind: 'vacuum', table: t, after: [fks.name] }));
  const validate: FinalizeJob[] = order.filter((t) => TARGET_TABLE_DDL[t].foreignKeys.length)
    .map((t) => ({ name: `validate:${t}`, kind: 'validate', table: t, after: vacuum.map((v) => v.name) }));
  return [...split, ...tables, fks, ...vacuum, ...validate];
}

/** A target table's expected rows: its sources' estimates, and for links the bag rows they are derived from. */
function tableRows(plan: Pick<Plan, 'tables'>, target: TargetTable): number {
  const table = plan.tables.find((t) => t.target === target);
  const bag = plan.tables.find((t) => t.target === 'bag');
  const derived = (table?.derivedLinks ?? []).map((d) => bag?.sources.find((s) => s.table === d.fromSource)?.rowEstimate ?? 0);
  return [...(table?.sources ?? []).map((s) => s.rowEstimate), ...derived].reduce((a, n) => a + Math.max(n, 0), 0);
}
