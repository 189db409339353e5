import type { TablePlan } from '../planner';
import { DERIVED_COLUMNS, type DerivedColumnRule } from '../rules';
import { escapeIdentifier as id, qualified } from './ident';

/**
 * The summaries the application derives (rules.ts DERIVED_COLUMNS), computed from the migrated rows
 * after the load, and the queries that check them. A summary column is *computed* for the rows of the
 * sources that lack it (or all rows with --recompute-summaries) and *copied* for the others; the rows of
 * one source are a range of target ids (its id offset up to the next source's).
 */

export interface DerivedColumnScope {
  readonly key: string;
  readonly rule: DerivedColumnRule;
  /** SQL condition on `t.id`: rows whose value is computed ('FALSE' for none). */
  readonly computed: string;
  /** SQL condition on `t.id`: rows whose value was copied from the source ('FALSE' for none). */
  readonly copied: string;
}

function idRangeCondition(lo: number | null, hi: number | null): string {
  const parts = [lo === null ? null : `t.id > ${lo}`, hi === null ? null : `t.id <= ${hi}`].filter((x): x is string => x !== null);
  return parts.length ? `(${parts.join(' AND ')})` : 'TRUE';
}

function anyOf(conditions: readonly string[]): string {
  if (conditions.length === 0) return 'FALSE';
  if (conditions.includes('TRUE')) return 'TRUE';
  return `(${conditions.join(' OR ')})`;
}

/** Per derived column of the table: which target rows are computed and which copied. */
export function derivedColumnScopes(table: TablePlan, offsets: Readonly<Record<string, number>>): DerivedColumnScope[] {
  const sources = [...table.sources].sort((a, b) => (offsets[a.table] ?? 0) - (offsets[b.table] ?? 0));
  const ranges = sources.map((s, i) => ({
    source: s,
    range: idRangeCondition(i === 0 ? null : offsets[s.table] ?? 0, i === sources.length - 1 ? null : offsets[sources[i + 1]!.table] ?? 0),
  }));
  const out: DerivedColumnScope[] = [];
  for (const [key, rule] of Object.entries(DERIVED_COLUMNS)) {
    if (rule.table !== table.target) continue;
    const computed: string[] = [];
    const copied: string[] = [];
    for (const { source, range } of ranges) {
      const m = source.columns.find((c) => c.target === rule.column);
      if (!m) continue;
      (m.derived ? computed : copied).push(range);
    }
    out.push({ key, rule, computed: anyOf(computed), copied: anyOf(copied) });
  }
  return out;
}

/**
 * Per target row (`x.id`) the aggregates the rules read. A bill's distinct children are the sum of its parents'
 * child counts: the target allows one parent per child (link_child_bag_id_unique) and a parent once per bill
 * (uq_bill_bag_new), so no child is counted twice — and summing per-parent counts avoids joining every child of
 * every bill (20 M rows at scale 1). `onlyIds`: an SQL bigint[] (a placeholder) that restricts them to those rows
 * (catch-up recomputes the parents and bills its changes touched).
 */
function aggregates(schema: string, table: 'bag' | 'bill', onlyIds?: string, range?: TargetIdRange): string {
  const q = (t: string) => qualified(schema, t);
  // The same aggregates per row, as correlated subqueries when restricted to a few rows: index lookups,
  // where the grouped form hashed whole tables (335 ms for a few hundred bills at 50,000 bags).
  const children = (p: string) => `SELECT count(l.child_bag_id) FROM ${q('link')} l WHERE l.parent_bag_id = ${p}`;
  const billBags = (b: string) => `SELECT count(*) FROM ${q('bill_bag')} bb WHERE bb.bill_id = ${b}`;
  // The same rule as the grouped form below: the sum of the bill's parents' child counts.
  const billChildren = (b: string) => `SELECT COALESCE(sum((${children('p.id')})), 0) FROM ${q('bill_bag')} bb
                         JOIN ${q('bag')} p ON p.id = bb.bag_id AND p.type = 'parent' WHERE bb.bill_id = ${b}`;
  if (onlyIds) {
    if (table === 'bag') return `SELECT p.id, (${children('p.id')})::int AS children FROM ${q('bag')} p WHERE p.type = 'parent' AND p.id = ANY(${onlyIds})`;
    return `SELECT b.id, (${billBags('b.id')})::int AS bill_bags, (${billChildren('b.id')})::int AS children FROM ${q('bill')} b WHERE b.id = ANY(${onlyIds})`;
  }
  // A range of target ids (Verify's chunks): the rows and their links, bill_bag rows and parents' links (by
  // parent id) read through the same bounds, so a chunk reads what its ids hold, not whole tables.
  const within = (col: string) => (range ? ` AND ${idBounds(col, range)}` : '');
  if (table === 'bag') {
    return `SELECT p.id, count(l.child_bag_id)::int AS children FROM ${q('bag')} p LEFT JOIN ${q('link')} l ON l.parent_bag_id = p.id${within('l.parent_bag_id')}
             WHERE p.type = 'parent'${within('p.id')} GROUP BY p.id`;
  }
  return `SELECT b.id, COALESCE(bb.n, 0)::int AS bill_bags, COALESCE(ch.n, 0)::int AS children FROM ${q('bill')} b
            LEFT JOIN (SELECT bill_id, count(*) AS n FROM ${q('bill_bag')} WHERE TRUE${within('bill_id')} GROUP BY bill_id) bb ON bb.bill_id = b.id
            LEFT JOIN (SELECT bb.bill_id, sum(pc.n) AS n FROM ${q('bill_bag')} bb
                         JOIN ${q('bag')} p ON p.id = bb.bag_id AND p.type = 'parent'
                         JOIN (SELECT parent_bag_id, count(*) AS n FROM ${q('link')} GROUP BY parent_bag_id) pc ON pc.parent_bag_id = p.id
                        WHERE TRUE${within('bb.bill_id')} GROUP BY bb.bill_id) ch ON ch.bill_id = b.id
           WHERE TRUE${within('b.id')}`;
}

/** Target ids (lo, hi] as placeholders (null: unbounded on that side). */
export interface TargetIdRange {
  readonly lo: string | null;
  readonly hi: string | null;
}

function idBounds(col: string, range: TargetIdRange): string {
  const parts = [range.lo === null ? null : `${col} > ${range.lo}`, range.hi === null ? null : `${col} <= ${range.hi}`].filter((x): x is string => x !== null);
  return parts.length ? parts.join(' AND ') : 'TRUE';
}

/** The UPDATE that computes the table's derived summaries (null when none is computed). Idempotent. `onlyIds`: see aggregates. */
export function renderComputeSummaries(schema: string, table: TablePlan, offsets: Readonly<Record<string, number>>, onlyIds?: string): string | null {
  if (table.target !== 'bag' && table.target !== 'bill') return null;
  const scopes = derivedColumnScopes(table, offsets).filter((s) => s.computed !== 'FALSE');
  if (scopes.length === 0) return null;
  const sets = scopes.map((s) => {
    const col = id(s.rule.column);
    return s.computed === 'TRUE' ? `${col} = ${s.rule.sql}` : `${col} = CASE WHEN ${s.computed} THEN ${s.rule.sql} ELSE t.${col} END`;
  });
  const differs = scopes.map((s) => `(${s.computed} AND t.${id(s.rule.column)} IS DISTINCT FROM ${s.rule.sql})`);
  if (onlyIds) {
    // A few rows: their aggregates once each (materialized: a flattened subquery evaluates its per-row
    // subqueries again in SET and WHERE), and the rows by key (not a hash of the whole table, which made
    // the cutover's write freeze grow with the table).
    return `WITH x AS MATERIALIZED (${aggregates(schema, table.target, onlyIds)})
  UPDATE ${qualified(schema, table.target)} t SET ${sets.join(', ')}
    FROM x
   WHERE x.id = t.id AND t.id = ANY(${onlyIds}) AND ${scopes[0]!.rule.rowsWhere} AND (${differs.join(' OR ')})`;
  }
  return `UPDATE ${qualified(schema, table.target)} t SET ${sets.join(', ')}
    FROM (${aggregates(schema, table.target)}) x
   WHERE x.id = t.id AND ${scopes[0]!.rule.rowsWhere} AND (${differs.join(' OR ')})`;
}

/**
 * Every derived column of a table at once, over one range of target ids (Verify's summaries chunks): per scope
 * (`c<i>`: computed rows, `p<i>`: copied rows) the rows whose value differs from the application's rule, their
 * count and the first `sample` ids with the stored and derived values. The aggregates are computed once for all
 * scopes (one query per scope and kind computed them up to seven times).
 */
export function renderSummaryCounts(schema: string, table: 'bag' | 'bill', scopes: readonly DerivedColumnScope[], range: TargetIdRange, sample: number): string {
  const flags: string[] = [];
  const outs: string[] = [];
  scopes.forEach((scope, i) => {
    const col = id(scope.rule.column);
    const differs = `${scope.rule.rowsWhere} AND t.${col} IS DISTINCT FROM ${scope.rule.sql}`;
    flags.push(`(${scope.computed} AND ${differs}) AS c${i}`, `(${scope.copied} AND ${differs}) AS p${i}`, `t.${col}::text AS s${i}`, `(${scope.rule.sql})::text AS v${i}`);
    for (const k of ['c', 'p']) {
      outs.push(`count(*) FILTER (WHERE ${k}${i})::bigint AS ${k}${i}_n`, `(array_agg(id ORDER BY id) FILTER (WHERE ${k}${i}))[1:${sample}] AS ${k}${i}_ids`,
        `(array_agg(s${i} ORDER BY id) FILTER (WHERE ${k}${i}))[1:${sample}] AS ${k}${i}_stored`, `(array_agg(v${i} ORDER BY id) FILTER (WHERE ${k}${i}))[1:${sample}] AS ${k}${i}_derived`);
    }
  });
  return `WITH x AS MATERIALIZED (${aggregates(schema, table, undefined, range)}),
  d AS (SELECT t.id, ${flags.join(', ')} FROM ${qualified(schema, table)} t JOIN x ON x.id = t.id WHERE ${idBounds('t.id', range)})
  SELECT ${outs.join(',\n         ')} FROM d`;
}
