import type pg from 'pg';
import type { Plan } from '../core/planner';
import type { TargetTable } from '../core/rules';
import { derivedColumnScopes, renderSummaryCounts, type TargetIdRange } from '../core/sql/derived';
import { escapeIdentifier as id, Params, qualified } from '../core/sql/ident';
import { targetIdExpr, type KeyRange, type MappingContext } from '../core/sql/mapping';
import { checkableHashSql, plaintextPasswordSql } from '../core/sql/values';
import {
  PASSWORD_SAMPLE_SIZE,
  READINESS_LIST_LIMIT,
  type OrphanCount,
  type PasswordSourceCount,
  type SummaryCount,
  type UserCounts,
} from '../core/verify-target-items';
import { checkPasswordWerkzeug } from '../io/password';
import type { EngineRun } from './migrate';
import { orphanRefs } from './verify-checks';

/**
 * The checks over target tables, each over one range of target ids (Verify's orphans, summaries and users
 * chunks): what the range holds, counted, with the first ids; core/verify-target-items.ts adds the ranges up.
 */

const SAMPLE = 5;

/** The table's ids now (its primary key's ends), null when it is empty. */
export async function targetSpan(client: pg.ClientBase, schema: string, table: TargetTable): Promise<{ min: number; max: number } | null> {
  const r = await client.query(`SELECT min(id)::bigint AS min, max(id)::bigint AS max FROM ${qualified(schema, table)}`);
  return r.rows[0].min === null ? null : { min: Number(r.rows[0].min), max: Number(r.rows[0].max) };
}

/** The first id of the table in (lo, hi] and the largest id now (index lookups). */
export async function nextTargetIds(client: pg.ClientBase, schema: string, table: TargetTable, range: KeyRange): Promise<{ next: number | null; max: number | null }> {
  const params = new Params();
  const ids = idRange(range, params);
  const t = qualified(schema, table);
  const r = await client.query(`SELECT (SELECT min(id) FROM ${t} c WHERE ${bounds('c.id', ids)})::bigint AS next, (SELECT max(id) FROM ${t})::bigint AS max`, params.values);
  return { next: r.rows[0].next === null ? null : Number(r.rows[0].next), max: r.rows[0].max === null ? null : Number(r.rows[0].max) };
}

function idRange(range: KeyRange, params: Params): TargetIdRange {
  return { lo: range.lo === null ? null : params.add(range.lo, 'bigint'), hi: range.hi === null ? null : params.add(range.hi, 'bigint') };
}

function bounds(col: string, r: TargetIdRange): string {
  return [r.lo === null ? 'TRUE' : `${col} > ${r.lo}`, r.hi === null ? 'TRUE' : `${col} <= ${r.hi}`].join(' AND ');
}

/**
 * The orphans of the references into `ref` that an index of their table leads with (indexedReference), among the values in a range of
 * `ref`'s ids: the values read in order from the index that leads with them, matched against `ref`'s primary key (a merge
 * anti-join, both sides index-only where the pages are all-visible). Only a range with orphans reads their rows, for the first ids.
 */
export async function referenceOrphanCounts(client: pg.ClientBase, schema: string, ref: TargetTable, range: KeyRange): Promise<OrphanCount[]> {
  const out: OrphanCount[] = [];
  const q = (t: string) => qualified(schema, t);
  // In the chunk's transaction only: over a wide range the planner hashes the referenced table and probes it with every
  // row, which the cache misses make slow: 1.0 s for scan.child_bag_id at scale 1 against 0.21 s merged from both indexes
  // (all six references into bag: 2.4 s against 0.76 s).
  await client.query(`SELECT set_config('enable_hashjoin', 'off', true)`);
  for (const r of orphanRefs(true).filter((x) => x.ref === ref)) {
    const params = new Params();
    const ids = idRange(range, params);
    const col = `c.${id(r.column)}`;
    const where = `${col} IS NOT NULL AND ${bounds(col, ids)} AND NOT EXISTS (SELECT 1 FROM ${q(r.ref)} p WHERE p.id = ${col})`;
    const n = Number((await client.query(`SELECT count(*)::bigint AS n FROM ${q(r.table)} c WHERE ${where}`, params.values)).rows[0].n);
    const sample = n === 0 ? [] : (await client.query(`SELECT c.id FROM ${q(r.table)} c WHERE ${where} ORDER BY c.id LIMIT ${SAMPLE}`, params.values)).rows.map((x) => Number(x.id));
    out.push({ name: `orphans:${r.table}.${r.column}`, table: r.table, column: r.column, ref: r.ref, n, sample });
  }
  return out;
}

/** The orphans of the references one target table holds that are checked row by row (and, for scans, those naming no bag), over an id range. */
export async function orphanCounts(client: pg.ClientBase, schema: string, table: TargetTable, range: KeyRange): Promise<OrphanCount[]> {
  const out: OrphanCount[] = [];
  const q = (t: string) => qualified(schema, t);
  for (const r of orphanRefs(false).filter((x) => x.table === table)) {
    const params = new Params();
    const ids = idRange(range, params);
    const res = await client.query(
      `SELECT count(*)::bigint AS n, (array_agg(c.id ORDER BY c.id))[1:${SAMPLE}] AS sample FROM ${q(r.table)} c
        WHERE ${bounds('c.id', ids)} AND c.${id(r.column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${q(r.ref)} p WHERE p.id = c.${id(r.column)})`,
      params.values,
    );
    out.push({ name: `orphans:${r.table}.${r.column}`, table: r.table, column: r.column, ref: r.ref, n: Number(res.rows[0].n), sample: (res.rows[0].sample ?? []).map(Number) });
  }
  if (table !== 'scan') return out;
  const params = new Params();
  const ids = idRange(range, params);
  const scans = await client.query(`SELECT count(*)::bigint AS n FROM ${q('scan')} c WHERE ${bounds('c.id', ids)} AND parent_bag_id IS NULL AND child_bag_id IS NULL`, params.values);
  out.push({ name: 'orphans:scan.bag', table: 'scan', column: null, ref: null, n: Number(scans.rows[0].n), sample: [] });
  return out;
}

/** Computed summaries that differ from the application's rule, and copied ones that disagree with it, over an id range of bags or bills. */
export async function summaryCounts(client: pg.ClientBase, schema: string, plan: Plan, table: 'bag' | 'bill', offsets: Record<string, number>, range: KeyRange): Promise<SummaryCount[]> {
  const tablePlan = plan.tables.find((t) => t.target === table);
  const scopes = tablePlan ? derivedColumnScopes(tablePlan, offsets) : [];
  if (scopes.length === 0) return [];
  const params = new Params();
  const row = (await client.query(renderSummaryCounts(schema, table, scopes, idRange(range, params), SAMPLE), params.values)).rows[0];
  const out: SummaryCount[] = [];
  scopes.forEach((scope, i) => {
    for (const [k, which] of [['c', 'computed'], ['p', 'copied']] as const) {
      if (scope[which] === 'FALSE') continue;
      const ids = (row[`${k}${i}_ids`] ?? []) as string[];
      const stored = (row[`${k}${i}_stored`] ?? []) as (string | null)[];
      const derived = (row[`${k}${i}_derived`] ?? []) as (string | null)[];
      out.push({ key: scope.key, which, n: Number(row[`${k}${i}_n`]), sample: ids.map((x, j) => ({ id: Number(x), stored: stored[j] ?? null, derived: derived[j] ?? null })) });
    }
  });
  return out;
}

/**
 * Users of an id range: who has a hash the application can check, who cannot log in (the readiness lists), and
 * per source with legacy plaintext passwords, who still holds it and who was rehashed (the first `want` of those checked with werkzeug).
 */
export async function userCounts(client: pg.ClientBase, run: EngineRun, plan: Plan, ctx: MappingContext, range: KeyRange, want: (table: string) => number): Promise<UserCounts> {
  const users = qualified(run.targetSchema, 'user');
  const lim = READINESS_LIST_LIMIT;
  const params = new Params();
  const ids = idRange(range, params);
  // The hash pattern is evaluated once per row (its 128-hex-digit repetition costs ~45 µs a row).
  const r = await client.query(
    `WITH u AS MATERIALIZED (SELECT id, username, NOT ${checkableHashSql('password_hash')} AS reset, verified IS NOT TRUE AS unverified,
                                    role = 'dispatcher' AND (dispatch_area IS NULL OR btrim(dispatch_area) = '') AS no_area
                               FROM ${users} WHERE ${bounds('id', ids)})
     SELECT count(*) FILTER (WHERE NOT reset)::bigint AS hashed, count(*) FILTER (WHERE reset)::bigint AS reset_n,
            count(*) FILTER (WHERE unverified)::bigint AS unverified_n, count(*) FILTER (WHERE no_area)::bigint AS no_area_n,
            (array_agg(json_build_object('id', id, 'username', username) ORDER BY id) FILTER (WHERE reset))[1:${lim}] AS reset,
            (array_agg(json_build_object('id', id, 'username', username) ORDER BY id) FILTER (WHERE unverified))[1:${lim}] AS unverified,
            (array_agg(json_build_object('id', id, 'username', username) ORDER BY id) FILTER (WHERE no_area))[1:${lim}] AS no_area
       FROM u`,
    params.values,
  );
  const row = r.rows[0];
  const list = (v: unknown) => ((v ?? []) as { id: string | number; username: unknown }[]).map((x) => ({ id: Number(x.id), username: String(x.username) }));
  const sources: PasswordSourceCount[] = [];
  for (const s of plaintextSources(plan, ctx)) sources.push(await plaintextCounts(client, s.legacy, s.table, s.join, range, want(s.table)));
  return {
    hashed: Number(row.hashed), needReset: Number(row.reset_n), sources,
    lists: { usersNeedingPasswordReset: list(row.reset), usersNotVerified: list(row.unverified), dispatchersWithoutArea: list(row.no_area) },
    counts: { usersNeedingPasswordReset: Number(row.reset_n), usersNotVerified: Number(row.unverified_n), dispatchersWithoutArea: Number(row.no_area_n) },
  };
}

/** One plaintext source's users of an id range: still holding the legacy password, rehashed, and the first `want` rehashed ones checked with werkzeug. */
async function plaintextCounts(client: pg.ClientBase, legacy: string, table: string, join: string, range: KeyRange, want: number): Promise<PasswordSourceCount> {
  const params = new Params();
  const ids = idRange(range, params);
  const plain = await client.query(
    `WITH x AS MATERIALIZED (SELECT u.id, CASE WHEN u.password_hash = ${legacy} THEN NOT ${checkableHashSql('u.password_hash')} ELSE FALSE END AS leaked,
                                    ${plaintextPasswordSql(legacy)} AS rehashed ${join} WHERE ${bounds('u.id', ids)})
     SELECT count(*) FILTER (WHERE leaked)::bigint AS leaked, count(*) FILTER (WHERE rehashed)::bigint AS rehashed,
            (array_agg(id ORDER BY id) FILTER (WHERE rehashed))[1:${PASSWORD_SAMPLE_SIZE}] AS sample FROM x`,
    params.values,
  );
  const first = ((plain.rows[0].sample ?? []) as string[]).slice(0, Math.max(want, 0));
  // A sample of rehashed passwords must log in with the legacy password (werkzeug check), the checks at once (libuv's thread pool).
  const rows = first.length ? (await client.query(`SELECT u.id, u.password_hash AS hash, ${legacy} AS plain ${join} WHERE u.id = ANY($1::bigint[]) ORDER BY u.id`, [first])).rows : [];
  const accepted = await Promise.all(rows.map((row) => checkPasswordWerkzeug(row.hash, row.plain)));
  return { table, leaked: Number(plain.rows[0].leaked), rehashed: Number(plain.rows[0].rehashed), sample: rows.map((row, i) => ({ id: Number(row.id), accepted: accepted[i]! })) };
}

function plaintextSources(plan: Plan, ctx: MappingContext): { table: string; legacy: string; join: string }[] {
  const users = qualified(ctx.targetSchema, 'user');
  return (plan.tables.find((t) => t.target === 'user')?.sources ?? []).flatMap((s) => {
    const pw = s.columns.find((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column');
    if (!pw?.source || !s.key) return [];
    return [{ table: s.table, legacy: `s.${id(pw.source)}::text`, join: `FROM ${qualified(ctx.sourceSchema, s.table)} s JOIN ${users} u ON u.id = ${targetIdExpr(s, ctx)}` }];
  });
}
