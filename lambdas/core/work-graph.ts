import type { Plan, SourcePlan, TablePlan } from './plan';
import { bagRoleSourceTables, bagRolesNeeded } from './sql/bag-roles';
import { tableUnits } from './sql/mapping';
import { TARGET_TABLE_DDL } from './sql/target-ddl';
import { isTargetTable, TARGET_ORDER, type TargetTable } from './rules';

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
 * Example (shape A, in place): prepare → user → {bag, bill, passwords:1/3} → {link, bill_bag, scan, passwords:2-3/3, indexes:bag, indexes:bill} → finalize.
 */

export interface WorkItem {
  readonly step: string;
  /** Steps that must be done before this one starts. */
  readonly after: readonly string[];
  /** Run as early as the dependencies allow, even where only the last items wait for it. */
  readonly early?: boolean;
  /** Staging: run in the first wave of the other items, or in the wave just before the first item that waits for it, if earlier. */
  readonly late?: boolean;
}

export interface WorkGraph {
  readonly items: readonly WorkItem[];
  /** Steps by wave; every dependency of a step is in an earlier wave. */
  readonly waves: readonly (readonly string[])[];
}

/** The steps that hash legacy plaintext passwords after their rows are in (engine/migrate.ts, runPasswordsStep). */
export const PASSWORDS_STEP = 'passwords';
/**
 * The hashing (CPU only, ~34 ms of scrypt a password alone, about twice that beside a load on two cores) is split by key
 * (hash of the key mod the sum of PASSWORD_SHARES) into items that spread over the waves after `user`: the first as
 * early as it can (beside bag, when one database core is idle), the others as late as they can (beside scan), so that
 * no wave waits for it alone. The first takes one third: with half (the first version) the wave of bag waited 3 s for
 * it at scale 1 (bag 5.1 s, passwords:1/2 8.1 s), while the last wave hides its share behind the scan load.
 */
export const PASSWORD_SHARES: readonly number[] = [1, 2];

/**
 * The plan's hashing steps: `passwords:<first>[-<last>]/<buckets>`, the buckets (hash of the key mod <buckets>, plus one)
 * that the step hashes: `passwords:1/3`, `passwords:2-3/3`. (Runs planned by earlier versions have `passwords:1/2`, `passwords:2/2`.)
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

/** The buckets a hashing step takes: part..through (1-based) of `parts`. */
export interface PasswordBuckets {
  readonly part: number;
  readonly through: number;
  readonly parts: number;
}

/** The buckets of a hashing step (`passwords:2-3/3` → { part: 2, through: 3, parts: 3 }), null for any other step. */
export function parsePasswordsStep(step: string): PasswordBuckets | null {
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
  const table = plan.tables.find((t) => t.target === (passwords ? 'user' : step));
  if (!table || (!passwords && !isTargetTable(step))) return [];
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
export function planWorkItems(plan: Pick<Plan, 'steps'> & { readonly tables?: Plan['tables'] }, options: { readonly stage?: boolean } = {}): WorkItem[] {
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
      items.push({ step, after: [...base(present), ...(present.has('user') ? ['user'] : []), ...reads(step)], ...(parsePasswordsStep(step)!.part === 1 ? { early: true } : {}) });
    }
    else if (step === 'finalize') items.push({ step, after: [...steps.filter((s) => s !== 'finalize'), ...staged.map(stageStep)] });
    else items.push({ step, after: [...base(present), ...tables, ...staged.map(stageStep)] });
  }
  // The largest first: a wave's Map starts its items in order, and the longest should not start last.
  const rows = (t: string) => Math.max(0, ...(plan.tables ?? []).flatMap((x) => x.sources).filter((s) => s.table === t).map((s) => s.rowEstimate));
  const bySize = [...staged].sort((a, b) => rows(b) - rows(a) || (a < b ? -1 : a > b ? 1 : 0));
  return [...items, ...bySize.map((t) => ({ step: stageStep(t), after: [], late: true }))];
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
  const waves: string[][] = [];
  for (const item of items) (waves[level.get(item.step)!] ??= []).push(item.step);
  return { items, waves: waves.filter((w) => w.length > 0) };
}

/** The waves of a plan (what Analyse hands the workflow). */
export function planWaves(plan: Pick<Plan, 'steps'> & { readonly tables?: Plan['tables'] }, options: { readonly stage?: boolean } = {}): string[][] {
  return resolveWaves(withEarlyIndexItems(planWorkItems(plan, options))).waves.map((w) => [...w]);
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
  const writers = (t: TargetTable) => items.filter((i) => i.step === t || (t === 'user' && parsePasswordsStep(i.step))).map((i) => i.step);
  const early: WorkItem[] = items
    .filter((i) => isTargetTable(i.step) && TARGET_TABLE_DDL[i.step].indexes.length > 0)
    .filter((i) => Math.max(...writers(i.step as TargetTable).map((w) => levelOf.get(w)!)) < lastLoad)
    .map((i) => ({ step: `${INDEXES_STEP}:${i.step}`, after: writers(i.step as TargetTable) }));
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
  readonly kind: 'table' | 'foreign-keys' | 'validate';
  readonly table: TargetTable | null;
  readonly after: readonly string[];
}

/**
 * The jobs in the order they start when ready: the tables with the most rows first (their index builds and validations
 * are the longest), so that the largest does not wait for a free connection while the small ones run. At scale 1 the
 * scan table's job started 0.36 s after the others in TARGET_ORDER, and its validation last of five.
 */
export function planFinalizeJobs(plan: Pick<Plan, 'tables'> = { tables: [] }): FinalizeJob[] {
  const order = [...TARGET_ORDER].sort((a, b) => tableRows(plan, b) - tableRows(plan, a));
  const tables: FinalizeJob[] = order.map((t) => ({ name: t, kind: 'table', table: t, after: [] }));
  const fks: FinalizeJob = { name: 'foreign-keys', kind: 'foreign-keys', table: null, after: [...TARGET_ORDER] };
  const validate: FinalizeJob[] = order.filter((t) => TARGET_TABLE_DDL[t].foreignKeys.length)
    .map((t) => ({ name: `validate:${t}`, kind: 'validate', table: t, after: [fks.name] }));
  return [...tables, fks, ...validate];
}

/** A target table's expected rows: its sources' estimates, and for links the bag rows they are derived from. */
function tableRows(plan: Pick<Plan, 'tables'>, target: TargetTable): number {
  const table = plan.tables.find((t) => t.target === target);
  const bag = plan.tables.find((t) => t.target === 'bag');
  const derived = (table?.derivedLinks ?? []).map((d) => bag?.sources.find((s) => s.table === d.fromSource)?.rowEstimate ?? 0);
  return [...(table?.sources ?? []).map((s) => s.rowEstimate), ...derived].reduce((a, n) => a + Math.max(n, 0), 0);
}
