import type pg from 'pg';
import type { Plan, SourcePlan, TablePlan } from '../core/planner';
import { TARGET_ORDER, type TargetTable } from '../core/rules';
import { escapeIdentifier as id, escapeLiteral, Params, qualified } from '../core/sql/ident';
import {
  buildUnitSelect,
  derivedSourceName,
  rangeWhere,
  sourceRowsFrom,
  tableUnits,
  unitOffset,
  type KeyRange,
  type TableUnit,
  type MappingContext,
} from '../core/sql/mapping';
import { indexedReference, TARGET_TABLE_DDL } from '../core/sql/target-ddl';
import { CHECKSUM_TARGET_ROW } from '../core/transforms';
import { compareBuckets, fingerprintHashExpr, rowHashExpr, type Bucket, type BucketMismatch, type CheckResult } from '../core/verify';
import type { RangeResult, RejectedLinks } from '../core/verify-items';
import { READINESS_LIST_LIMIT } from '../core/verify-target-items';
import { readRowColumns } from '../io/catalog';
import type { EngineRun } from './migrate';

/**
 * The queries of Verify, each over one key range of one unit or one target table (lambdas/engine/verify.ts
 * runs them as work items). Ranges are aligned to checksum buckets, so a unit's ranges add up to what one
 * pass over the whole unit computes.
 */

const SAMPLE = 5;

/** A unit of the table (core's tableUnits) with its target-id offset and its mapping over a key range. */
export interface Unit extends TableUnit {
  readonly offset: number;
  readonly mapping: (params: Params, range?: KeyRange | null, targetRowHash?: string | null) => { text: string; columns: string[] };
}

export function unitsFor(plan: Plan, table: TablePlan, ctx: MappingContext): Unit[] {
  return tableUnits(plan, table).map((u) => ({
    ...u,
    offset: unitOffset(u, ctx.offsets),
    mapping: (params: Params, range: KeyRange | null = null, targetRowHash: string | null = null) => buildUnitSelect(table, u, ctx, params, range, null, targetRowHash),
  }));
}

/** Rehashed plaintext passwords carry a random salt: compared by the password check, not the checksum. */
function isSaltedColumn(source: SourcePlan, column: string): boolean {
  return column === 'password_hash' && source.columns.some((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column');
}

export function checksummedColumns(unit: Unit, params = new Params()): string[] {
  return unit.mapping(params).columns.filter((col) => !isSaltedColumn(unit.source, col));
}

/** A derived-link candidate that a link row already states (not derived again, not missing). */
function redundantLinkExpr(unit: Unit, ctx: MappingContext): string {
  // m has child_bag_id (NULL when the child is missing) and _rp (the translated parent).
  return `EXISTS (SELECT 1 FROM ${qualified(ctx.targetSchema, 'link')} l WHERE l.child_bag_id = m.id - ${ctx.offsets[unit.label] ?? 0} AND l.parent_bag_id = m._rp)`;
}

export async function keySpan(client: pg.ClientBase, schema: string, source: SourcePlan): Promise<{ min: number; max: number } | null> {
  const key = source.key ? id(source.key) : null;
  const r = await client.query(
    key
      ? `SELECT min(${key})::bigint AS min, max(${key})::bigint AS max FROM ${qualified(schema, source.table)}`
      : `SELECT 1::bigint AS min, count(*)::bigint AS max FROM ${qualified(schema, source.table)}`,
  );
  const row = r.rows[0];
  if (row.min === null || Number(row.max) < Number(row.min)) return null;
  return { min: Number(row.min), max: Number(row.max) };
}

export interface ChunkContext {
  readonly client: pg.ClientBase;
  readonly run: EngineRun;
  readonly table: TablePlan;
  readonly unit: Unit;
  readonly ctx: MappingContext;
  readonly width: number;
  readonly columns: string[];
  /** Hash rows by their values (PostgreSQL 14+), not their text. */
  readonly typedHash: boolean;
}

interface SourceBucket {
  readonly bucket: number;
  readonly rows: number;
  readonly rejected: number;
  readonly kept: number;
  readonly unstored: number;
  readonly hash: string;
  /** With the target rows read in the same pass (withTargetRows): the bucket's rows' own target rows, and their summed hash. */
  readonly targetRows?: number;
  readonly targetHash?: string;
}

/**
 * Whether a unit's target rows are read in its source pass, through each row's own target row (id = key + offset):
 * a source table keyed by its primary key. The target rows no source row of the range joins are then only counted
 * (targetRowCount). Derived links (their target id is not the row's) and keys that may repeat are hashed apart.
 */
function readsTargetInSourcePass(unit: Unit): boolean {
  return unit.kind === 'source' && unit.source.keyStrategy === 'primary-key';
}

/**
 * The source side per bucket: rows, rejects in the store, rows kept for the target (and their summed hash), and rows
 * the mapping rejects that the store does not hold; `withTargetRows`: also the rows' own target rows and their hash,
 * one pass instead of a second scan of the target (6-10 % of a range item's time).
 */
async function sourceAggregates(c: ChunkContext, range: KeyRange | null, withTargetRows = false): Promise<SourceBucket[]> {
  const params = new Params();
  const mapping = c.unit.mapping(params, range, withTargetRows ? rowHashExpr(CHECKSUM_TARGET_ROW, c.table.target, c.columns, c.typedHash) : null);
  const runP = params.add(c.run.runId);
  const labelP = params.add(c.unit.label);
  const kept = `m._reject IS NULL AND r.source_key IS NULL`;
  const targetSide = withTargetRows ? `, count(m._tid)::bigint AS target_rows, COALESCE(sum(m._th) FILTER (WHERE m._tid IS NOT NULL), 0)::text AS target_hash` : '';
  const r = await c.client.query(
    `WITH m AS (${mapping.text})
     SELECT floor(m._key / ${c.width})::bigint AS bucket, count(*)::bigint AS rows, count(r.source_key)::bigint AS rejected,
            count(*) FILTER (WHERE ${kept})::bigint AS kept,
            count(*) FILTER (WHERE m._reject IS NOT NULL AND r.source_key IS NULL)::bigint AS unstored,
            COALESCE(sum(${rowHashExpr('m', c.table.target, c.columns, c.typedHash)}) FILTER (WHERE ${kept}), 0)::text AS hash${targetSide}
       FROM m
       LEFT JOIN ${qualified(c.run.targetSchema, '_migration_reject')} r ON r.run_id = ${runP} AND r.source_table = ${labelP} AND r.source_key = m._rkey
      GROUP BY 1`,
    params.values,
  );
  return r.rows.map((row) => ({
    bucket: Number(row.bucket), rows: Number(row.rows), rejected: Number(row.rejected), kept: Number(row.kept), unstored: Number(row.unstored), hash: String(row.hash),
    ...(withTargetRows ? { targetRows: Number(row.target_rows), targetHash: String(row.target_hash) } : {}),
  }));
}

/**
 * Row by row, as exact as it gets (only for ranges whose aggregates differ): every source row is in the target
 * or in the reject store, never both, never neither; and the hash of every migrated row.
 */
async function exactSourcePass(c: ChunkContext, range: KeyRange | null): Promise<{ counts: RangeResult['counts']; buckets: Bucket[] }> {
  const params = new Params();
  const mapping = c.unit.mapping(params, range);
  const runP = params.add(c.run.runId);
  const labelP = params.add(c.unit.label);
  const redundantExpr = c.unit.kind === 'derived' ? redundantLinkExpr(c.unit, c.ctx) : 'FALSE';
  const kept = `m._reject IS NULL AND r.source_key IS NULL`;
  const lost = `t.id IS NULL AND r.source_key IS NULL AND NOT (${redundantExpr})`;
  const pass = await c.client.query(
    `WITH m AS (${mapping.text})
     SELECT floor(m._key / ${c.width})::bigint AS bucket,
            count(*)::bigint AS rows,
            count(t.id)::bigint AS migrated,
            count(r.source_key)::bigint AS rejected,
            count(*) FILTER (WHERE ${lost})::bigint AS missing,
            count(*) FILTER (WHERE t.id IS NULL AND r.source_key IS NULL AND (${redundantExpr}))::bigint AS redundant,
            count(*) FILTER (WHERE t.id IS NOT NULL AND r.source_key IS NOT NULL)::bigint AS both,
            (array_agg(m._rkey ORDER BY m._key, m._rkey) FILTER (WHERE ${lost}))[1:${SAMPLE}] AS sample,
            count(*) FILTER (WHERE ${kept})::bigint AS hash_rows,
            COALESCE(sum(${rowHashExpr('m', c.table.target, c.columns, c.typedHash)}) FILTER (WHERE ${kept}), 0)::text AS hash
       FROM m
       LEFT JOIN ${qualified(c.run.targetSchema, c.table.target)} t ON t.id = m.id
       LEFT JOIN ${qualified(c.run.targetSchema, '_migration_reject')} r ON r.run_id = ${runP} AND r.source_table = ${labelP} AND r.source_key = m._rkey
      GROUP BY 1 ORDER BY 1`,
    params.values,
  );
  const sum = (k: string) => pass.rows.reduce((acc, row) => acc + Number(row[k]), 0);
  return {
    counts: {
      rows: sum('rows'), migrated: sum('migrated'), rejected: sum('rejected'),
      missing: sum('missing'), both: sum('both'), redundant: sum('redundant'),
      missingSample: pass.rows.flatMap((row) => (row.sample ?? []).map(String)).slice(0, SAMPLE),
    },
    buckets: pass.rows.filter((row) => Number(row.hash_rows) > 0).map((row) => ({ bucket: Number(row.bucket), rows: Number(row.hash_rows), hash: row.hash })),
  };
}

/** The ids of the unit's target rows in a key range: inside the unit's span (and below the derived links of a link source). */
function targetBounds(c: ChunkContext, range: KeyRange | null, span: { min: number; max: number }): string {
  const { unit, table, ctx } = c;
  const bounds = [`t.id > ${unit.offset + span.min - 1}`, `t.id <= ${unit.offset + span.max}`];
  if (range?.lo != null) bounds.push(`t.id > ${unit.offset + range.lo}`);
  if (range?.hi != null) bounds.push(`t.id <= ${unit.offset + range.hi}`);
  // A link source's ids stop where the derived links' begin.
  const derivedFrom = unit.kind === 'source' && table.derivedLinks.length ? ctx.offsets[derivedSourceName(table.derivedLinks[0]!)] ?? null : null;
  if (derivedFrom !== null) bounds.push(`t.id <= ${derivedFrom}`);
  return bounds.join(' AND ');
}

/** The unit's target rows of a key range, hashed per bucket. */
async function targetBuckets(c: ChunkContext, range: KeyRange | null, span: { min: number; max: number } | null): Promise<Bucket[]> {
  if (!span) return [];
  const r = await c.client.query(
    `SELECT floor((t.id - ${c.unit.offset}) / ${c.width})::bigint AS bucket, count(*)::bigint AS rows, sum(${rowHashExpr('t', c.table.target, c.columns, c.typedHash)})::text AS hash
       FROM ${qualified(c.run.targetSchema, c.table.target)} t WHERE ${targetBounds(c, range, span)}
      GROUP BY 1`,
  );
  return r.rows.map((row) => ({ bucket: Number(row.bucket), rows: Number(row.rows), hash: String(row.hash) }));
}

/** How many target rows of the unit a key range holds (its primary key's index only). */
async function targetRowCount(c: ChunkContext, range: KeyRange | null, span: { min: number; max: number } | null): Promise<number> {
  if (!span) return 0;
  const r = await c.client.query(`SELECT count(*)::bigint AS n FROM ${qualified(c.run.targetSchema, c.table.target)} t WHERE ${targetBounds(c, range, span)}`);
  return Number(r.rows[0].n);
}

/**
 * Whether a range is clean: no rejected row outside the store, and per bucket the rows kept are the target's rows
 * with the same summed hash. Read in one pass (SourceBucket.targetRows): every target row of the range must be a
 * joined one (`targetRows`, their count); otherwise compared with the target's own buckets (`tgt`).
 */
function isCleanRange(agg: readonly SourceBucket[], target: { targetRows: number } | { tgt: readonly Bucket[] }): boolean {
  if (agg.some((s) => s.unstored !== 0)) return false;
  if ('targetRows' in target) {
    return agg.every((s) => s.targetRows === s.kept && (s.kept === 0 || s.targetHash === s.hash)) && agg.reduce((a, s) => a + s.targetRows!, 0) === target.targetRows;
  }
  const byBucket = new Map(target.tgt.map((b) => [b.bucket, b]));
  return agg.every((s) => (s.kept === 0 ? !byBucket.has(s.bucket) : byBucket.get(s.bucket)?.rows === s.kept && byBucket.get(s.bucket)?.hash === s.hash))
    && target.tgt.every((t) => agg.some((s) => s.bucket === t.bucket));
}

/**
 * One chunk of a range item: counts and checksums of the unit's buckets in the range. Where the source's
 * aggregates equal the target's (rows kept = target rows, same summed hash, every rejected row in the store),
 * every kept row is in the target and no rejected one, so the counts follow without joining row by row;
 * otherwise the exact row-by-row pass gives the counts, and the differing keys are sampled.
 */
export async function rangeChunk(c: ChunkContext, range: KeyRange | null, span: { min: number; max: number } | null, wantSample: boolean): Promise<RangeResult> {
  const onePass = readsTargetInSourcePass(c.unit);
  const agg = await sourceAggregates(c, range, onePass);
  let tgt: Bucket[] | null = onePass ? null : await targetBuckets(c, range, span);
  const clean = isCleanRange(agg, tgt ? { tgt } : { targetRows: await targetRowCount(c, range, span) });
  const sourceBuckets = agg.filter((s) => s.kept > 0).map((s) => ({ bucket: s.bucket, rows: s.kept, hash: s.hash }));
  const base = { columns: c.columns.length, fingerprint: null, live: null };
  if (clean) {
    const sum = (k: 'rows' | 'rejected' | 'kept') => agg.reduce((a, s) => a + s[k], 0);
    return {
      ...base,
      counts: { rows: sum('rows'), migrated: sum('kept'), rejected: sum('rejected'), missing: 0, both: 0, redundant: 0, missingSample: [] },
      buckets: sourceBuckets.length, mismatchCount: 0, mismatches: [], sample: [],
    };
  }
  const exact = await exactSourcePass(c, range);
  tgt ??= await targetBuckets(c, range, span);
  const mismatches = compareBuckets(exact.buckets, tgt);
  const sample = wantSample && mismatches.length ? await differingKeys(c, mismatches[0]!) : [];
  return { ...base, counts: exact.counts, buckets: exact.buckets.length, mismatchCount: mismatches.length, mismatches: mismatches.slice(0, 20), sample };
}

/** Keys of a bucket whose mapped source row and target row differ (for the error message). */
async function differingKeys(c: ChunkContext, first: BucketMismatch): Promise<number[]> {
  const { table, unit, run, columns } = c;
  const lo = first.bucket * c.width;
  const hi = lo + c.width;
  const params = new Params();
  // Keys in [lo, hi) as a key range (exclusive lower, inclusive upper bound): only that range is mapped.
  const m = unit.mapping(params, { lo: lo - 1, hi: hi - 1 });
  const runP = params.add(run.runId);
  const labelP = params.add(unit.label);
  const r = await c.client.query(
    `WITH m AS (${m.text}),
     s AS (SELECT m._key AS k, ${rowHashExpr('m', table.target, columns, c.typedHash)} AS h FROM m
            WHERE m._key >= ${lo} AND m._key < ${hi} AND m._reject IS NULL
              AND NOT EXISTS (SELECT 1 FROM ${qualified(run.targetSchema, '_migration_reject')} r WHERE r.run_id = ${runP} AND r.source_table = ${labelP} AND r.source_key = m._rkey)),
     t AS (SELECT t.id - ${unit.offset} AS k, ${rowHashExpr('t', table.target, columns, c.typedHash)} AS h FROM ${qualified(run.targetSchema, table.target)} t
            WHERE t.id - ${unit.offset} >= ${lo} AND t.id - ${unit.offset} < ${hi})
     SELECT COALESCE(s.k, t.k) AS k FROM s FULL JOIN t ON s.k = t.k WHERE s.h IS DISTINCT FROM t.h ORDER BY 1 LIMIT ${SAMPLE}`,
    params.values,
  );
  return r.rows.map((row) => Number(row.k));
}

/**
 * Row count and content hash of a source table's rows (`where`: a key range of them), and the snapshot's horizon:
 * Verify records them, a cutover compares. `typed` (PostgreSQL 14+): the columns hashed typed (fingerprintHashExpr).
 */
export async function fingerprintRows(client: pg.ClientBase, schema: string, table: string, typed: boolean, where: string[] = [], params = new Params()): Promise<NonNullable<RangeResult['fingerprint']>> {
  const columns = typed ? await readRowColumns(client, schema, table) : null;
  const r = await client.query(
    // sum(bigint) is exact (numeric) like sum(bigint::numeric), without a numeric per row: 0.10 s against 0.12-0.14 s for 350,000 bags.
    `SELECT count(*)::bigint AS n, COALESCE(sum(${fingerprintHashExpr('s', columns)}), 0)::text AS h, txid_snapshot_xmax(txid_current_snapshot())::text AS xmax
       FROM ${qualified(schema, table)} s ${where.length ? `WHERE ${where.join(' AND ')}` : ''}`,
    params.values,
  );
  return { rows: Number(r.rows[0].n), hash: String(r.rows[0].h), xmax: String(r.rows[0].xmax), ...(typed ? { typed } : {}) };
}

/** fingerprintRows of a source's key range. */
export async function fingerprintRange(client: pg.ClientBase, schema: string, source: SourcePlan, range: KeyRange | null, typed: boolean): Promise<NonNullable<RangeResult['fingerprint']>> {
  const params = new Params();
  return fingerprintRows(client, schema, source.table, typed, rangeWhere(source, range, params), params);
}

/**
 * Target rows of a table, and those outside every unit's id span (rows no source row can account for).
 * `live`: also the target rows a source row accounts for, counted here, in this item's snapshot: the range
 * items' migrated counts are taken at other capture positions while the application writes, so comparing
 * this item's row count with them fails by the rows written in between (-12 bags in a live bench run).
 */
export async function extraRows(client: pg.ClientBase, run: EngineRun, plan: Plan, table: TablePlan, ctx: MappingContext, live = false): Promise<{ targetRows: number; outside: number; accounted?: number }> {
  const spans: string[] = [];
  const units = unitsFor(plan, table, ctx);
  for (const unit of units) {
    const span = await keySpan(client, ctx.sourceSchema, unit.source);
    if (span) spans.push(`(t.id > ${unit.offset + span.min - 1} AND t.id <= ${unit.offset + span.max})`);
  }
  const r = await client.query(
    `SELECT count(*)::bigint AS n, count(*) FILTER (WHERE NOT (${spans.length ? spans.join(' OR ') : 'FALSE'}))::bigint AS outside FROM ${qualified(run.targetSchema, table.target)} t`,
  );
  const out = { targetRows: Number(r.rows[0].n), outside: Number(r.rows[0].outside) };
  const keyed = live && units.every((u) => u.source.key);
  if (!keyed) return out;
  // The units' id spans are disjoint (offsets), so their joins add up; a join, not EXISTS per row (a subplan).
  let accounted = 0;
  for (const u of units) {
    const a = await client.query(
      `SELECT count(*)::bigint AS n FROM ${qualified(run.targetSchema, table.target)} t JOIN ${sourceRowsFrom(u.source, ctx)} ON s.${id(u.source.key!)} = t.id - ${u.offset} WHERE ${u.filter ?? 'TRUE'}`,
    );
    accounted += Number(a.rows[0].n);
  }
  return { ...out, accounted };
}

/** Every foreign key (and bag.parent_id), in the order the checks are listed; `scan.bag` last. */
/** `indexed`: only the references an index of their table leads with (true, checked by value) or the others (false, row by row). */
export function orphanRefs(indexed?: boolean): { table: TargetTable; column: string; ref: TargetTable }[] {
  const refs: { table: TargetTable; column: string; ref: TargetTable }[] = [];
  for (const table of TARGET_ORDER) for (const fk of TARGET_TABLE_DDL[table].foreignKeys) refs.push({ table, column: fk.column, ref: fk.ref });
  refs.push({ table: 'bag', column: 'parent_id', ref: 'bag' });
  return indexed === undefined ? refs : refs.filter((r) => indexedReference(r.table, r.column) === indexed);
}

export function orphanCheckNames(): string[] {
  return [...orphanRefs().map((r) => `orphans:${r.table}.${r.column}`), 'orphans:scan.bag'];
}

/**
 * Target tables with a reference checked row by row (no index leads with it), and scan (its scans naming no bag): one
 * orphans item each. A reference that an index leads with (indexedReference) is checked by the values it holds instead.
 */
export function referencingTables(): TargetTable[] {
  return [...new Set([...orphanRefs(false).map((r) => r.table), 'scan' as TargetTable])];
}

/** Target tables referenced by a reference that an index leads with: one references item each. */
export function referencedTables(): TargetTable[] {
  return [...new Set(orphanRefs(true).map((r) => r.ref))];
}

export async function sequenceChecks(client: pg.ClientBase, schema: string): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const table of TARGET_ORDER) {
    const r = await client.query(
      `SELECT (SELECT max(id) FROM ${qualified(schema, table)})::bigint AS max_id, s.last_value::bigint AS last, s.is_called
         FROM pg_sequences q JOIN LATERAL (SELECT last_value, is_called FROM ${qualified(schema, `${table}_id_seq`)}) s ON TRUE
        WHERE q.schemaname = $1 AND q.sequencename = $2`,
      [schema, `${table}_id_seq`],
    );
    const row = r.rows[0];
    if (!row) {
      out.push({ name: `sequence:${table}`, passed: false, detail: `no sequence ${table}_id_seq in ${schema}` });
      continue;
    }
    const maxId = row.max_id === null ? 0 : Number(row.max_id);
    const next = row.is_called ? Number(row.last) + 1 : Number(row.last);
    out.push({
      name: `sequence:${table}`,
      passed: next > maxId,
      detail: next > maxId ? `next id ${next} > largest id ${maxId}` : `next id ${next} would clash with existing ids up to ${maxId}: run the finalize step again`,
    });
  }
  return out;
}

/**
 * Bags whose parent link and bills whose bill_bag rows were rejected (the readiness report; users are counted by
 * the users items). Ids are target ids (reject keys are translated through the id offsets); counts are exact,
 * the lists the first 200.
 */
export async function rejectedLinks(client: pg.ClientBase, run: EngineRun, plan: Plan, offsets: Record<string, number>): Promise<RejectedLinks> {
  const rej = qualified(run.targetSchema, '_migration_reject');
  // Each rejected link or bill_bag row, as the target id of the bag / bill it concerns.
  const idsOf = async (target: TargetTable, parts: { label: string; keySql: string; offset: number }[]) => {
    if (parts.length === 0) return { count: 0, list: [] as number[] };
    const params = new Params();
    const runP = params.add(run.runId);
    const union = parts
      .map((p) => `SELECT (${p.keySql})::bigint + ${p.offset} AS id FROM ${rej} WHERE run_id = ${runP} AND source_table = ${params.add(p.label)} AND (${p.keySql}) ~ '^-?[0-9]{1,18}$'`)
      .join(' UNION ');
    const r = await client.query(
      `WITH k AS (${union}), hit AS (SELECT DISTINCT x.id FROM k JOIN ${qualified(run.targetSchema, target)} x ON x.id = k.id)
       SELECT (SELECT count(*) FROM hit)::bigint AS n, ARRAY(SELECT id FROM hit ORDER BY id LIMIT ${READINESS_LIST_LIMIT}) AS ids`,
      params.values,
    );
    return { count: Number(r.rows[0].n), list: (r.rows[0].ids as string[]).map(Number) };
  };
  const linkPlan = plan.tables.find((t) => t.target === 'link');
  const bags = await idsOf('bag', (linkPlan?.derivedLinks ?? []).map((d) => ({ label: derivedSourceName(d), keySql: 'source_key', offset: offsets[d.fromSource] ?? 0 })));
  const billBagPlan = plan.tables.find((t) => t.target === 'bill_bag');
  const billParts = (billBagPlan?.sources ?? []).flatMap((s) => {
    const ref = s.columns.find((c) => c.target === 'bill_id' && c.source);
    return ref ? [{ label: s.table, keySql: `row_data ->> ${escapeLiteral(ref.source!)}`, offset: offsets[ref.ref?.sourceTable ?? ''] ?? 0 }] : [];
  });
  return { bags, bills: await idsOf('bill', billParts) };
}
