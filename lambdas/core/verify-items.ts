import { InputError } from './errors';
import { DERIVED_COLUMNS, type TargetTable } from './rules';
import type { KeyRange } from './sql/mapping';
import {
  mergeOrphans,
  mergeSummaries,
  mergeUsers,
  EMPTY_USER_COUNTS,
  renderOrphanCheck,
  renderPasswordCheck,
  renderSummaries,
  type OrphanCount,
  type SummaryCount,
  type UserCounts,
} from './verify-target-items';
import {
  countsCheck,
  type BucketMismatch,
  type CheckResult,
  type Readiness,
  type SourceCounts,
  type SourceFingerprint,
  type TableCounts,
  type VerificationResult,
} from './verify';

/**
 * Verify as work items (MIGRATION_SPEC.md §3, issue 15): the checks of one verification split into items that
 * can run in parallel and resume from a cursor, each item's result persisted (`_migration_verify`) with its
 * cursor, and one VerificationResult assembled from them at the end — the same checks, in the same order and
 * with the same messages as when everything ran in one pass.
 *
 * A `range` item is one unit of a target table (a source table, or links derived from one) over a key range
 * aligned to checksum buckets: its chunks (one transaction each) add up to exactly what the single pass computed
 * for those buckets. `orphans`, `summaries`, `users` and `references` items are ranges of target ids of one target table, worked
 * through in chunks the same way (verify-target-items.ts adds their partial results up); `extra` and `sequences`
 * read a table's id index or its row count in one go.
 */
export type VerifyItemSpec =
  | {
      readonly kind: 'range';
      readonly table: TargetTable;
      /** The unit's label (tableUnits): a source table, or `<bag source>.<column> (derived link)`. */
      readonly unit: string;
      /** Source keys (lo, hi]; null: open-ended (the first item reads from the start, the last to the end). */
      readonly lo: number | null;
      readonly hi: number | null;
      /** Also fingerprint the source table's rows (runs without capture: the cutover compares them). */
      readonly fingerprint: boolean;
    }
  | { readonly kind: 'extra'; readonly table: TargetTable }
  /**
   * The table's references checked row by row (the unindexed ones, and scans naming no bag); `byRow` marks the items
   * planned since the indexed references moved to `references` items (an older item checked them all).
   */
  | ({ readonly kind: 'orphans'; readonly table: TargetTable; readonly byRow: true } & KeyRange)
  /**
   * The references into `ref` that an index of their table leads with (indexedReference), over ranges of the values they
   * hold, i.e. of `ref`'s ids: each range's rows are read from that index and matched against `ref`'s primary key in
   * order, without hashing the whole referenced table once per range of referencing rows.
   */
  | ({ readonly kind: 'references'; readonly ref: TargetTable } & KeyRange)
  | ({ readonly kind: 'summaries'; readonly table: 'bag' | 'bill' } & KeyRange)
  | ({ readonly kind: 'users' } & KeyRange)
  /** Sequences past the largest ids, and the readiness lists of bags and bills whose links were rejected. */
  | { readonly kind: 'sequences' };

/** The items over target ids (lo, hi], and the target table whose ids they cover. */
export type TargetRangeSpec = Extract<VerifyItemSpec, { kind: 'orphans' | 'summaries' | 'users' | 'references' }>;

export function targetRangeTable(spec: TargetRangeSpec): TargetTable {
  if (spec.kind === 'users') return 'user';
  return spec.kind === 'references' ? spec.ref : spec.table;
}

/**
 * Item and chunk sizes of target-range items: a user costs about as much as 20 source rows of a range item
 * (its hash patterns matched three times), the other checks about one.
 */
export function targetRangeSizes(spec: TargetRangeSpec, sizes: VerifySizes): VerifySizes {
  // References: a referenced id costs a few index entries read in order (scale 1: ~10 per bag, 70-90 ms per 350,000 bags of scan.parent_bag_id).
  if (spec.kind === 'references') return { ...sizes, itemKeys: sizes.itemKeys * REFERENCE_WIDTH, chunkKeys: sizes.chunkKeys * REFERENCE_WIDTH };
  if (spec.kind !== 'users') return sizes;
  const narrow = (n: number) => Math.max(sizes.bucketWidth, Math.ceil(n / USER_COST / sizes.bucketWidth) * sizes.bucketWidth);
  return { ...sizes, itemKeys: narrow(sizes.itemKeys), chunkKeys: narrow(sizes.chunkKeys) };
}

const USER_COST = 20;
const REFERENCE_WIDTH = 4;

/** Sizes of items and chunks, in source keys; both multiples of the bucket width. */
export interface VerifySizes {
  readonly bucketWidth: number;
  /** Keys per item (before the per-unit cap widens it). */
  readonly itemKeys: number;
  /** Keys per chunk: one transaction, one checkpoint. */
  readonly chunkKeys: number;
  /** At most this many items per unit (a wider item is still resumable chunk by chunk). */
  readonly maxItemsPerUnit: number;
}

// At most 8 items per unit: at 50 M source rows 16 made 161 items, most of the execution's history (2,420 events, 9.7 % of
// the limit); 8 make 89 (1,480 events), still many more than the Map runs at once, each item resuming chunk by chunk.
export const DEFAULT_VERIFY_SIZES: VerifySizes = { bucketWidth: 50_000, itemKeys: 500_000, chunkKeys: 500_000, maxItemsPerUnit: 8 };

/** Multiples of the bucket width (at least one bucket). */
export function resolveVerifySizes(o: Partial<VerifySizes> = {}): VerifySizes {
  const bucketWidth = o.bucketWidth ?? DEFAULT_VERIFY_SIZES.bucketWidth;
  const round = (n: number) => Math.max(bucketWidth, Math.ceil(n / bucketWidth) * bucketWidth);
  const chunkKeys = round(o.chunkKeys ?? (o.bucketWidth ? bucketWidth * 5 : DEFAULT_VERIFY_SIZES.chunkKeys));
  const itemKeys = round(Math.max(o.itemKeys ?? (o.bucketWidth ? bucketWidth * 10 : DEFAULT_VERIFY_SIZES.itemKeys), chunkKeys));
  return { bucketWidth, chunkKeys, itemKeys, maxItemsPerUnit: o.maxItemsPerUnit ?? DEFAULT_VERIFY_SIZES.maxItemsPerUnit };
}

/** The bucket boundary at or below key k, as an exclusive lower bound: keys of k's bucket are > it. */
export function bucketFloor(k: number, width: number): number {
  return Math.floor(k / width) * width - 1;
}

/**
 * The key ranges of a unit's items, given its key span now: (null, b1], (b1, b2], …, (bn, null] with the
 * boundaries on bucket edges, so no bucket is split between items. Open at both ends: rows written before a
 * chunk reads (a live source) are verified wherever their key falls. A unit without keys: one item.
 */
export function planUnitRanges(span: { min: number; max: number } | null, sizes: VerifySizes): KeyRange[] {
  if (!span) return [{ lo: null, hi: null }];
  const start = bucketFloor(span.min, sizes.bucketWidth);
  const buckets = Math.floor(span.max / sizes.bucketWidth) - Math.floor(span.min / sizes.bucketWidth) + 1;
  const widest = Math.max(Math.ceil(sizes.itemKeys / sizes.bucketWidth), Math.ceil(buckets / sizes.maxItemsPerUnit));
  const n = Math.ceil(buckets / widest);
  // As many buckets in each item as the count allows (750,000 keys: two items of 375,000, not 500,000 + 250,000).
  const perItem = Math.ceil(buckets / n);
  const ranges: KeyRange[] = [];
  for (let i = 0; i < n; i++) {
    ranges.push({ lo: i === 0 ? null : start + i * perItem * sizes.bucketWidth, hi: i === n - 1 ? null : start + (i + 1) * perItem * sizes.bucketWidth });
  }
  return ranges;
}

/**
 * The next chunk of a range item after `cursor` (the last key range end done, or null before the first chunk).
 * `span` is the unit's key span now; `last` says the chunk ends the item.
 */
export function nextChunk(item: { lo: number | null; hi: number | null }, cursor: number | null, span: { min: number; max: number } | null, sizes: VerifySizes): { range: KeyRange; last: boolean } {
  const from = cursor ?? item.lo;
  if (!span) return { range: { lo: from, hi: item.hi }, last: true };
  const base = from ?? bucketFloor(span.min, sizes.bucketWidth);
  let hi: number | null = base + sizes.chunkKeys;
  if (item.hi !== null && hi >= item.hi) hi = item.hi;
  else if (item.hi === null && hi >= span.max) hi = null;
  return { range: { lo: from, hi }, last: hi === item.hi };
}

/**
 * The next chunk of a target-range item after `cursor`, given the first target id after it (`next`, null: none
 * up to the item's end) and the largest id now: from the cursor over the gap up to `next`, then chunkKeys from
 * `next`'s bucket on. Target ids can be sparse (a second source's ids start at its offset; a row written with a
 * far id): chunks of keys counted from the cursor would walk the gap chunk by empty chunk.
 */
export function nextTargetChunk(item: KeyRange, cursor: number | null, next: number | null, max: number | null, sizes: VerifySizes): { range: KeyRange; last: boolean } {
  const from = cursor ?? item.lo;
  if (next === null || max === null) return { range: { lo: from, hi: item.hi }, last: true };
  let hi: number | null = bucketFloor(next, sizes.bucketWidth) + sizes.chunkKeys;
  if (item.hi !== null && hi >= item.hi) hi = item.hi;
  else if (item.hi === null && hi >= max) hi = null;
  return { range: { lo: from, hi }, last: hi === item.hi };
}

// ---------------------------------------------------------------- persisted results

/** What a range item has found so far (the sum of its chunks). Hash sums are decimal strings (numeric). */
export interface RangeResult {
  readonly counts: SourceCounts & { readonly redundant: number };
  /** Buckets with migrated rows on the source side. */
  readonly buckets: number;
  readonly columns: number;
  readonly mismatchCount: number;
  /** The first 20 differing buckets. */
  readonly mismatches: BucketMismatch[];
  /** Differing keys of the first differing bucket. */
  readonly sample: number[];
  readonly fingerprint: { readonly rows: number; readonly hash: string; readonly xmax: string; readonly typed?: boolean } | null;
  readonly live: { readonly positionMin: number; readonly positionMax: number; readonly drained: number } | null;
}

export type ItemResult =
  | ({ readonly kind: 'range' } & RangeResult)
  | { readonly kind: 'extra'; readonly targetRows: number; readonly outside: number; readonly accounted?: number; readonly live?: RangeResult['live'] }
  | { readonly kind: 'orphans'; readonly orphans: OrphanCount[]; readonly live?: RangeResult['live'] }
  | { readonly kind: 'summaries'; readonly summaries: SummaryCount[]; readonly live?: RangeResult['live'] }
  | ({ readonly kind: 'users'; readonly live?: RangeResult['live'] } & UserCounts)
  | { readonly kind: 'sequences'; readonly checks: CheckResult[]; readonly rejectedLinks: RejectedLinks; readonly live?: RangeResult['live'] };

/** Bags whose parent link and bills whose bill_bag rows were rejected: exact counts, the first 200 ids. */
export interface RejectedLinks {
  readonly bags: { readonly count: number; readonly list: number[] };
  readonly bills: { readonly count: number; readonly list: number[] };
}

/**
 * Refuses an item planned by an earlier version (whole-table orphans, summaries and users items, without id
 * ranges): an execution upgraded mid-way and redriven plans Verify again instead of mixing the two forms.
 */
export function assertCurrentItem(spec: VerifyItemSpec, result: ItemResult | null): void {
  const oldSpec = ((spec.kind === 'orphans' || spec.kind === 'users' || spec.kind === 'summaries') && (!('lo' in spec) || (spec.kind === 'summaries' && !spec.table)))
    || (spec.kind === 'orphans' && spec.byRow !== true);
  const oldResult = result !== null && ((result.kind === 'orphans' && !('orphans' in result)) || (result.kind === 'summaries' && !('summaries' in result)) || (result.kind === 'users' && !('sources' in result)));
  if (oldSpec || oldResult) {
    throw new InputError(`Verification item "${spec.kind}" was planned by an earlier version of the migration (checks over whole tables or without references items). Run Verify again from PlanVerify.`);
  }
}

/** An item's result so far plus one more chunk of a target-range item (null: its first). */
export function mergeTargetRange(a: ItemResult | null, b: ItemResult): ItemResult {
  if (!a) return b;
  const live = mergeLive(a.live ?? null, b.live ?? null);
  const liveField = live ? { live } : {};
  if (a.kind === 'orphans' && b.kind === 'orphans') return { kind: 'orphans', orphans: mergeOrphans(a.orphans, b.orphans), ...liveField };
  if (a.kind === 'summaries' && b.kind === 'summaries') return { kind: 'summaries', summaries: mergeSummaries(a.summaries, b.summaries), ...liveField };
  if (a.kind === 'users' && b.kind === 'users') return { kind: 'users', ...mergeUsers(a, b), ...liveField };
  throw new InputError(`A ${b.kind} chunk cannot be added to a stored ${a.kind} result. Run Verify again from PlanVerify.`);
}

export const EMPTY_RANGE_RESULT: RangeResult = {
  counts: { rows: 0, migrated: 0, rejected: 0, missing: 0, both: 0, redundant: 0, missingSample: [] },
  buckets: 0, columns: 0, mismatchCount: 0, mismatches: [], sample: [], fingerprint: null, live: null,
};

const SAMPLE = 5;
const MISMATCHES_KEPT = 20;

function addDecimal(a: string, b: string): string {
  return (BigInt(a) + BigInt(b)).toString();
}

/** Positions of a live run's snapshots: the lowest and highest, and the changes caught up in them. */
export function mergeLive(a: RangeResult['live'] | undefined, b: RangeResult['live'] | undefined): RangeResult['live'] {
  if (!a) return b ?? null;
  if (!b) return a;
  return { positionMin: Math.min(a.positionMin, b.positionMin), positionMax: Math.max(a.positionMax, b.positionMax), drained: a.drained + b.drained };
}

/** An item's result so far plus one more chunk (chunks come in key order). */
export function mergeRange(a: RangeResult, b: RangeResult): RangeResult {
  const c = a.counts;
  const d = b.counts;
  const fp = a.fingerprint && b.fingerprint
    ? {
        rows: a.fingerprint.rows + b.fingerprint.rows, hash: addDecimal(a.fingerprint.hash, b.fingerprint.hash), xmax: BigInt(a.fingerprint.xmax) <= BigInt(b.fingerprint.xmax) ? a.fingerprint.xmax : b.fingerprint.xmax,
        // Chunks hashed alike (one server) sum to the table's hash; otherwise the sum matches no cutover's.
        ...(a.fingerprint.typed && b.fingerprint.typed ? { typed: true } : {}),
      }
    : a.fingerprint ?? b.fingerprint;
  return {
    counts: {
      rows: c.rows + d.rows, migrated: c.migrated + d.migrated, rejected: c.rejected + d.rejected, missing: c.missing + d.missing,
      both: c.both + d.both, redundant: c.redundant + d.redundant, missingSample: [...c.missingSample, ...d.missingSample].slice(0, SAMPLE),
    },
    buckets: a.buckets + b.buckets,
    columns: Math.max(a.columns, b.columns),
    mismatchCount: a.mismatchCount + b.mismatchCount,
    mismatches: [...a.mismatches, ...b.mismatches].slice(0, MISMATCHES_KEPT),
    sample: a.mismatchCount > 0 ? a.sample : b.sample,
    fingerprint: fp,
    live: mergeLive(a.live, b.live),
  };
}

// ---------------------------------------------------------------- the verdict

/** One unit of a target table, as the assembly needs it. */
export interface AssemblyUnit {
  readonly label: string;
  readonly kind: 'source' | 'derived';
}

export interface AssemblyInput {
  readonly runId: string;
  readonly bucketWidth: number;
  readonly tables: readonly { readonly target: TargetTable; readonly units: readonly AssemblyUnit[] }[];
  /** Orphan check names in the order the single pass made them. */
  readonly orphanOrder: readonly string[];
  /** Source tables in the order the fingerprints are listed (null: no fingerprints, a live or cross-database run). */
  readonly fingerprintTables: readonly string[] | null;
  /** Every item with its result (items of one unit in key order). */
  readonly items: readonly { readonly spec: VerifyItemSpec; readonly result: ItemResult }[];
  readonly verifiedAt: string;
}

function checksumCheck(table: TargetTable, label: string, r: RangeResult, width: number): CheckResult {
  const name = `checksum:${table}:${label}`;
  if (r.mismatchCount === 0) return { name, passed: true, detail: `${r.buckets} key range(s) of ${width} match (${r.columns} columns)` };
  const first = r.mismatches[0]!;
  const from = first.bucket * width;
  return {
    name,
    passed: false,
    detail: `${r.mismatchCount} of ${r.buckets} key range(s) differ; first: keys ${from}–${from + width - 1} (${first.sourceRows} source rows, ${first.targetRows} target rows), differing keys e.g. ${r.sample.join(', ') || '(none found row by row)'}`,
    data: { mismatches: r.mismatches.slice(0, MISMATCHES_KEPT), sample: r.sample },
  };
}

function extraCheck(table: TargetTable, e: { targetRows: number; outside: number }, fromSource: number): CheckResult {
  const unaccounted = e.targetRows - fromSource;
  return {
    name: `extra:${table}`,
    passed: unaccounted === 0,
    detail: unaccounted === 0
      ? `${e.targetRows} target rows, all from the source`
      : `${e.targetRows} target rows but ${fromSource} come from the source: ${unaccounted} rows no source row accounts for (${e.outside} outside every source key range). Was the target written by something else?`,
  };
}

function ofKind<K extends ItemResult['kind']>(input: AssemblyInput, kind: K): { spec: VerifyItemSpec; result: Extract<ItemResult, { kind: K }> }[] {
  return input.items.filter((i) => i.result.kind === kind) as { spec: VerifyItemSpec; result: Extract<ItemResult, { kind: K }> }[];
}

/** Per table: counts and checksum per unit, then `extra`; the counts of every unit. */
function tableChecks(input: AssemblyInput): { checks: CheckResult[]; tables: Record<string, TableCounts>; fingerprints: Map<string, RangeResult['fingerprint']> } {
  const checks: CheckResult[] = [];
  const tables: Record<string, TableCounts> = {};
  const fingerprints = new Map<string, RangeResult['fingerprint']>();
  const ranges = ofKind(input, 'range');
  for (const t of input.tables) {
    const sources: TableCounts['sources'] = {};
    let migrated = 0;
    let rejected = 0;
    let derived = 0;
    for (const unit of t.units) {
      let r = EMPTY_RANGE_RESULT;
      let source: string | null = null;
      for (const i of ranges) {
        if (i.spec.kind !== 'range' || i.spec.table !== t.target || i.spec.unit !== unit.label) continue;
        r = mergeRange(r, i.result);
        if (i.spec.fingerprint) source = i.spec.unit;
      }
      if (source) fingerprints.set(source, r.fingerprint);
      const c = r.counts;
      sources[unit.label] = { ...c, kind: unit.kind };
      checks.push(countsCheck(t.target, unit.label, c, unit.kind));
      if (unit.kind === 'derived') derived += c.migrated;
      else migrated += c.migrated;
      rejected += c.rejected;
      checks.push(checksumCheck(t.target, unit.label, r, input.bucketWidth));
    }
    const extra = ofKind(input, 'extra').find((i) => i.spec.kind === 'extra' && i.spec.table === t.target)?.result ?? { targetRows: 0, outside: 0 };
    // Live runs: counted by the item itself, in one snapshot (see extraRows).
    checks.push(extraCheck(t.target, extra, 'accounted' in extra && extra.accounted !== undefined ? extra.accounted : migrated + derived));
    tables[t.target] = { targetRows: extra.targetRows, migrated, rejected, derived, sources };
  }
  return { checks, tables, fingerprints };
}

/**
 * The verdict from the items' results: the same checks, in the same order, as one pass over everything
 * (tables with their units, orphans, sequences and derived summaries, passwords), and the readiness report.
 */
export function assembleVerification(input: AssemblyInput): VerificationResult & { live: RangeResult['live'] } {
  const { checks, tables, fingerprints } = tableChecks(input);
  const orphans = ofKind(input, 'orphans').reduce<OrphanCount[]>((acc, i) => mergeOrphans(acc, i.result.orphans), []).map(renderOrphanCheck);
  const rank = (name: string) => { const i = input.orphanOrder.indexOf(name); return i < 0 ? input.orphanOrder.length : i; };
  checks.push(...orphans.sort((a, b) => rank(a.name) - rank(b.name)));
  const sequences = ofKind(input, 'sequences')[0]?.result;
  checks.push(...(sequences?.checks ?? []));
  const summaryOrder = input.tables.flatMap((t) => Object.entries(DERIVED_COLUMNS).filter(([, r]) => r.table === t.target).map(([k]) => k));
  const summaries = renderSummaries(ofKind(input, 'summaries').reduce<SummaryCount[]>((acc, i) => mergeSummaries(acc, i.result.summaries), []), summaryOrder);
  checks.push(...summaries.checks);
  const userItems = ofKind(input, 'users');
  const users = userItems.reduce<UserCounts>((acc, i) => mergeUsers(acc, i.result), EMPTY_USER_COUNTS);
  if (userItems.length) checks.push(renderPasswordCheck(users));
  // Stored results come back from JSONB with their keys reordered: the checks as the single pass listed them.
  const ordered = checks.map((c) => ({ name: c.name, passed: c.passed, detail: c.detail, ...(c.data ? { data: c.data } : {}) }));
  const summariesDisagreeing = summaries.disagreeing;
  const rejected = sequences?.rejectedLinks ?? { bags: { count: 0, list: [] }, bills: { count: 0, list: [] } };
  const readiness: Readiness = {
    ...users.lists,
    bagsWithRejectedParentLink: rejected.bags.list,
    billsWithRejectedBags: rejected.bills.list,
    summariesDisagreeing,
    counts: {
      ...(userItems.length ? users.counts : {}),
      ...(sequences ? { bagsWithRejectedParentLink: rejected.bags.count, billsWithRejectedBags: rejected.bills.count } : {}),
      ...Object.fromEntries(Object.entries(summariesDisagreeing).map(([k, v]) => [`summaryDisagrees:${k}`, v.count])),
    },
  };
  let live: RangeResult['live'] = null;
  for (const i of input.items) live = mergeLive(live, i.result.live ?? null);
  const passed = ordered.every((c) => c.passed);
  const sourceFingerprints: SourceFingerprint[] | undefined = input.fingerprintTables
    ? input.fingerprintTables.map((table) => {
        const f = fingerprints.get(table);
        return { table, rows: f?.rows ?? 0, hash: f?.hash ?? '0', xmax: f?.xmax ?? '0', ...(f?.typed ? { typed: true } : {}) };
      })
    : undefined;
  return {
    runId: input.runId, passed, verifiedAt: input.verifiedAt, checks: ordered, tables, readiness, live,
    ...(sourceFingerprints ? { sourceFingerprints } : {}),
  };
}

/** The Map item that names a persisted item: `<round>/<item number>`. */
export function itemRef(round: string, itemNo: number): string {
  return `${round}/${itemNo}`;
}

export function parseItemRef(ref: string): { round: string; itemNo: number } | null {
  const m = /^(.+)\/([0-9]+)$/.exec(ref);
  return m ? { round: m[1]!, itemNo: Number(m[2]) } : null;
}

/** A short label of an item for progress lines: `scan (keys 250000–499999)`, `orphans bag`. */
export function describeItem(spec: VerifyItemSpec): string {
  if (spec.kind === 'range') {
    const keys = spec.lo === null && spec.hi === null ? 'all keys' : `keys ${spec.lo === null ? 'start' : spec.lo + 1}–${spec.hi === null ? 'end' : spec.hi}`;
    return `${spec.table}${spec.unit === spec.table ? '' : ` from ${spec.unit}`} (${keys})`;
  }
  if (spec.kind === 'extra') return `extra ${spec.table}`;
  if (spec.kind === 'sequences') return 'sequences';
  const ids = spec.lo == null && spec.hi == null ? '' : ` (ids ${spec.lo == null ? 'start' : spec.lo + 1}–${spec.hi == null ? 'end' : spec.hi})`;
  return `${spec.kind}${spec.kind === 'users' ? '' : ` ${spec.kind === 'references' ? `to ${spec.ref}` : spec.table}`}${ids}`;
}
