import type pg from 'pg';
import type { Plan, SourcePlan, TablePlan } from '../core/planner';
import { TARGET_ORDER, type TargetTable } from '../core/rules';
import { checkableHashSql, plaintextPasswordSql } from '../core/sql/values';
import { derivedColumnScopes, renderSummaryMismatches } from '../core/sql/derived';
import { escapeIdentifier as id, escapeLiteral, Params, qualified } from '../core/sql/ident';
import {
  buildUnitSelect,
  derivedSourceName,
  targetIdExpr,
  tableUnits,
  unitOffset,
  type KeyRange,
  type TableUnit,
  type MappingContext,
} from '../core/sql/mapping';
import { renderAnalyze, TARGET_TABLE_DDL, WORK_TABLES } from '../core/sql/target-ddl';
import {
  compareBuckets,
  countsCheck,
  rowHashExpr,
  summarise,
  type Bucket,
  type CheckResult,
  type Readiness,
  type SourceCounts,
  type TableCounts,
  type VerificationResult,
} from '../core/verify';
import { checkPasswordWerkzeug } from '../io/password';
import { loadOffsets, type EngineRun } from './migrate';

export interface VerifyOptions {
  readonly client: pg.ClientBase;
  readonly run: EngineRun;
  readonly plan: Plan;
  readonly readSchema?: string;
  /** Key-range width of one checksum bucket. */
  readonly bucketWidth?: number;
  readonly onProgress?: (check: CheckResult) => void;
}

const SAMPLE = 5;

/**
 * Proves the invariants of MIGRATION_SPEC.md §3, source against target: every source row is
 * migrated or rejected (counts), migrated content equals the mapped source (checksums per key
 * range), no orphan, sequences past the largest id, and no password the application cannot check.
 */
export async function verifyRun(o: VerifyOptions): Promise<VerificationResult> {
  const { client, run, plan } = o;
  const readSchema = o.readSchema ?? run.sourceSchema;
  const offsets = await loadOffsets(client, run.targetSchema);
  await client.query(renderAnalyze(run.targetSchema, WORK_TABLES));
  const ctx: MappingContext = { sourceSchema: readSchema, targetSchema: run.targetSchema, offsets, mode: 'checksum', runTime: run.runTime };
  const checks: CheckResult[] = [];
  const push = (c: CheckResult) => {
    checks.push(c);
    o.onProgress?.(c);
  };
  const tables: Record<string, TableCounts> = {};
  const width = o.bucketWidth ?? 50_000;

  for (const table of plan.tables) {
    const t = await verifyTable(o, table, ctx, width, push);
    tables[table.target] = t;
  }
  for (const c of await orphanChecks(client, run.targetSchema)) push(c);
  for (const c of await sequenceChecks(client, run.targetSchema)) push(c);
  for (const c of await summaryChecks(client, run.targetSchema, plan, offsets)) push(c);
  push(await passwordCheck(client, run, plan, readSchema));
  const readiness = await readinessReport(client, run, plan, offsets);
  const { passed } = summarise(checks);
  return { runId: run.runId, passed, verifiedAt: new Date().toISOString(), checks, tables, readiness };
}

/** A unit of the table (core's tableUnits) with its target-id offset and its mapping over a key range. */
interface Unit extends TableUnit {
  readonly offset: number;
  readonly mapping: (params: Params, range?: KeyRange | null) => { text: string; columns: string[] };
}

function unitsFor(plan: Plan, table: TablePlan, ctx: MappingContext): Unit[] {
  return tableUnits(plan, table).map((u) => ({
    ...u,
    offset: unitOffset(u, ctx.offsets),
    mapping: (params: Params, range: KeyRange | null = null) => buildUnitSelect(table, u, ctx, params, range),
  }));
}

interface SourcePass {
  readonly counts: SourceCounts & { redundant: number };
  /** Per checksum bucket of the mapped source: rows kept in the target, and their summed hash. */
  readonly buckets: Bucket[];
  readonly columns: string[];
}

/**
 * One pass over the mapped source of a unit, per key range: 1. counts: every source row is in the target or
 * in the reject store, never both, never neither; 2. content: a hash of every migrated row's mapped columns.
 */
async function sourcePass(o: VerifyOptions, table: TablePlan, unit: Unit, ctx: MappingContext, width: number): Promise<SourcePass> {
  const { client, run } = o;
  const params = new Params();
  const mapping = unit.mapping(params);
  const runP = params.add(run.runId);
  const labelP = params.add(unit.label);
  const redundantExpr = unit.kind === 'derived' ? redundantLinkExpr(unit, ctx) : 'FALSE';
  const columns = mapping.columns.filter((col) => !isSaltedColumn(unit.source, col));
  const kept = `m._reject IS NULL AND r.source_key IS NULL`;
  const lost = `t.id IS NULL AND r.source_key IS NULL AND NOT (${redundantExpr})`;
  const pass = await client.query(
    `WITH m AS (${mapping.text})
     SELECT floor(m._key / ${width})::bigint AS bucket,
            count(*)::bigint AS rows,
            count(t.id)::bigint AS migrated,
            count(r.source_key)::bigint AS rejected,
            count(*) FILTER (WHERE ${lost})::bigint AS missing,
            count(*) FILTER (WHERE t.id IS NULL AND r.source_key IS NULL AND (${redundantExpr}))::bigint AS redundant,
            count(*) FILTER (WHERE t.id IS NOT NULL AND r.source_key IS NOT NULL)::bigint AS both,
            (array_agg(m._rkey ORDER BY m._key, m._rkey) FILTER (WHERE ${lost}))[1:${SAMPLE}] AS sample,
            count(*) FILTER (WHERE ${kept})::bigint AS hash_rows,
            COALESCE(sum(${rowHashExpr('m', table.target, columns)}) FILTER (WHERE ${kept}), 0)::text AS hash
       FROM m
       LEFT JOIN ${qualified(run.targetSchema, table.target)} t ON t.id = m.id
       LEFT JOIN ${qualified(run.targetSchema, '_migration_reject')} r ON r.run_id = ${runP} AND r.source_table = ${labelP} AND r.source_key = m._rkey
      GROUP BY 1`,
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
    columns,
  };
}

/** The unit's target rows hashed per bucket and compared with the source's; the id span it covers (for `extra`). */
async function checksumCheck(o: VerifyOptions, table: TablePlan, unit: Unit, ctx: MappingContext, width: number, pass: SourcePass): Promise<{ check: CheckResult; span: string | null }> {
  const { client, run } = o;
  const { columns } = pass;
  const span = await keySpan(client, ctx.sourceSchema, unit.source);
  const lo = span ? unit.offset + span.min - 1 : 0;
  const hi = span ? unit.offset + span.max : 0;
  // A link source's ids stop where the derived links' begin.
  const derivedFrom = unit.kind === 'source' && table.derivedLinks.length ? ctx.offsets[derivedSourceName(table.derivedLinks[0]!)] ?? null : null;
  const tgt = span
    ? (await client.query(
        `SELECT floor((t.id - ${unit.offset}) / ${width})::bigint AS bucket, count(*)::bigint AS rows, sum(${rowHashExpr('t', table.target, columns)})::text AS hash
           FROM ${qualified(run.targetSchema, table.target)} t WHERE t.id > ${lo} AND t.id <= ${hi} ${derivedFrom !== null ? `AND t.id <= ${derivedFrom}` : ''}
          GROUP BY 1`,
      )).rows.map((r) => ({ bucket: Number(r.bucket), rows: Number(r.rows), hash: String(r.hash) }))
    : [];
  const mismatches = compareBuckets(pass.buckets, tgt);
  const name = `checksum:${table.target}:${unit.label}`;
  const buckets = pass.buckets.length;
  const spanSql = span ? `(t.id > ${lo} AND t.id <= ${hi})` : null;
  if (mismatches.length === 0) return { check: { name, passed: true, detail: `${buckets} key range(s) of ${width} match (${columns.length} columns)` }, span: spanSql };
  const first = mismatches[0]!;
  const from = first.bucket * width;
  const sample = await differingKeys(client, table.target, unit, columns, from, from + width, run);
  return {
    check: {
      name,
      passed: false,
      detail: `${mismatches.length} of ${buckets} key range(s) differ; first: keys ${from}–${from + width - 1} (${first.sourceRows} source rows, ${first.targetRows} target rows), differing keys e.g. ${sample.join(', ') || '(none found row by row)'}`,
      data: { mismatches: mismatches.slice(0, 20), sample },
    },
    span: spanSql,
  };
}

async function verifyTable(o: VerifyOptions, table: TablePlan, ctx: MappingContext, width: number, push: (c: CheckResult) => void): Promise<TableCounts> {
  const target = qualified(o.run.targetSchema, table.target);
  const sources: TableCounts['sources'] = {};
  let migrated = 0;
  let rejected = 0;
  let derived = 0;
  const spans: string[] = [];
  for (const unit of unitsFor(o.plan, table, ctx)) {
    const pass = await sourcePass(o, table, unit, ctx, width);
    const c = pass.counts;
    sources[unit.label] = { ...c, kind: unit.kind };
    push(countsCheck(table.target, unit.label, c, unit.kind));
    if (unit.kind === 'derived') derived += c.migrated;
    else migrated += c.migrated;
    rejected += c.rejected;
    const { check, span } = await checksumCheck(o, table, unit, ctx, width, pass);
    if (span) spans.push(span);
    push(check);
  }
  const client = o.client;

  // Rows in the target that no source row accounts for.
  const extra = await client.query(
    `SELECT count(*)::bigint AS n, count(*) FILTER (WHERE NOT (${spans.length ? spans.join(' OR ') : 'FALSE'}))::bigint AS outside FROM ${target} t`,
  );
  const targetRows = Number(extra.rows[0].n);
  const unaccounted = targetRows - migrated - derived;
  push({
    name: `extra:${table.target}`,
    passed: unaccounted === 0,
    detail: unaccounted === 0
      ? `${targetRows} target rows, all from the source`
      : `${targetRows} target rows but ${migrated + derived} come from the source: ${unaccounted} rows no source row accounts for (${extra.rows[0].outside} outside every source key range). Was the target written by something else?`,
  });
  return { targetRows, migrated, rejected, derived, sources };
}

/** Rehashed plaintext passwords carry a random salt: compared by the password check, not the checksum. */
function isSaltedColumn(source: SourcePlan, column: string): boolean {
  return column === 'password_hash' && source.columns.some((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column');
}

/** A derived-link candidate that a link row already states (not derived again, not missing). */
function redundantLinkExpr(unit: Unit, ctx: MappingContext): string {
  // m has child_bag_id (NULL when the child is missing) and _rp (the translated parent).
  return `EXISTS (SELECT 1 FROM ${qualified(ctx.targetSchema, 'link')} l WHERE l.child_bag_id = m.id - ${ctx.offsets[unit.label] ?? 0} AND l.parent_bag_id = m._rp)`;
}

async function keySpan(client: pg.ClientBase, schema: string, source: SourcePlan): Promise<{ min: number; max: number } | null> {
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

/** Keys in [lo, hi) whose mapped source row and target row differ (for the error message). */
async function differingKeys(client: pg.ClientBase, table: TargetTable, unit: Unit, columns: string[], lo: number, hi: number, run: EngineRun): Promise<number[]> {
  const params = new Params();
  // Keys in [lo, hi) as a key range (exclusive lower, inclusive upper bound): only that range is mapped.
  const m = unit.mapping(params, { lo: lo - 1, hi: hi - 1 });
  const runP = params.add(run.runId);
  const labelP = params.add(unit.label);
  const r = await client.query(
    `WITH m AS (${m.text}),
     s AS (SELECT m._key AS k, ${rowHashExpr('m', table, columns)} AS h FROM m
            WHERE m._key >= ${lo} AND m._key < ${hi} AND m._reject IS NULL
              AND NOT EXISTS (SELECT 1 FROM ${qualified(run.targetSchema, '_migration_reject')} r WHERE r.run_id = ${runP} AND r.source_table = ${labelP} AND r.source_key = m._rkey)),
     t AS (SELECT t.id - ${unit.offset} AS k, ${rowHashExpr('t', table, columns)} AS h FROM ${qualified(run.targetSchema, table)} t
            WHERE t.id - ${unit.offset} >= ${lo} AND t.id - ${unit.offset} < ${hi})
     SELECT COALESCE(s.k, t.k) AS k FROM s FULL JOIN t ON s.k = t.k WHERE s.h IS DISTINCT FROM t.h ORDER BY 1 LIMIT ${SAMPLE}`,
    params.values,
  );
  return r.rows.map((row) => Number(row.k));
}

async function orphanChecks(client: pg.ClientBase, schema: string): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  const q = (t: string) => qualified(schema, t);
  const refs: { table: TargetTable; column: string; ref: TargetTable }[] = [];
  for (const table of TARGET_ORDER) for (const fk of TARGET_TABLE_DDL[table].foreignKeys) refs.push({ table, column: fk.column, ref: fk.ref });
  refs.push({ table: 'bag', column: 'parent_id', ref: 'bag' });
  for (const r of refs) {
    const res = await client.query(
      `SELECT count(*)::bigint AS n, (array_agg(c.id ORDER BY c.id))[1:${SAMPLE}] AS sample FROM ${q(r.table)} c
        WHERE c.${id(r.column)} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${q(r.ref)} p WHERE p.id = c.${id(r.column)})`,
    );
    const n = Number(res.rows[0].n);
    out.push({
      name: `orphans:${r.table}.${r.column}`,
      passed: n === 0,
      detail: n === 0 ? `every ${r.table}.${r.column} resolves to a ${r.ref}` : `${n} ${r.table} rows reference a missing ${r.ref} (ids ${res.rows[0].sample.join(', ')})`,
    });
  }
  const scans = await client.query(`SELECT count(*)::bigint AS n FROM ${q('scan')} WHERE parent_bag_id IS NULL AND child_bag_id IS NULL`);
  const n = Number(scans.rows[0].n);
  out.push({ name: 'orphans:scan.bag', passed: n === 0, detail: n === 0 ? 'every scan references at least one bag' : `${n} scans reference no bag` });
  return out;
}

async function sequenceChecks(client: pg.ClientBase, schema: string): Promise<CheckResult[]> {
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

/** Every user has a hash the application can check or is listed for a reset; no plaintext is left. */
async function passwordCheck(client: pg.ClientBase, run: EngineRun, plan: Plan, readSchema: string): Promise<CheckResult> {
  const users = qualified(run.targetSchema, 'user');
  const problems: string[] = [];
  const data: Record<string, unknown> = {};
  const cls = await client.query(
    `SELECT count(*) FILTER (WHERE ${checkableHashSql('password_hash')})::bigint AS hashed,
            count(*) FILTER (WHERE NOT ${checkableHashSql('password_hash')})::bigint AS placeholders
       FROM ${users}`,
  );
  data.hashed = Number(cls.rows[0].hashed);
  data.needReset = Number(cls.rows[0].placeholders);
  const userPlan = plan.tables.find((t) => t.target === 'user');
  let rehashed = 0;
  for (const s of userPlan?.sources ?? []) {
    const pw = s.columns.find((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column');
    if (!pw?.source || !s.key) continue;
    const ctx: MappingContext = { sourceSchema: readSchema, targetSchema: run.targetSchema, offsets: await loadOffsets(client, run.targetSchema), mode: 'checksum', runTime: run.runTime };
    const join = `FROM ${qualified(readSchema, s.table)} s JOIN ${users} u ON u.id = ${targetIdExpr(s, ctx)}`;
    const legacy = `s.${id(pw.source)}::text`;
    const plain = await client.query(
      `SELECT count(*) FILTER (WHERE u.password_hash = ${legacy} AND NOT ${checkableHashSql('u.password_hash')})::bigint AS leaked,
              count(*) FILTER (WHERE ${plaintextPasswordSql(legacy)})::bigint AS rehashed
         ${join}`,
    );
    const leaked = Number(plain.rows[0].leaked);
    rehashed += Number(plain.rows[0].rehashed);
    if (leaked) problems.push(`${leaked} users of ${s.table} hold their legacy plaintext password`);
    // A sample of rehashed passwords must log in with the legacy password (werkzeug check).
    const sample = await client.query(
      `SELECT u.id, u.password_hash AS hash, ${legacy} AS plain ${join} WHERE ${plaintextPasswordSql(legacy)} ORDER BY u.id LIMIT 3`,
    );
    for (const row of sample.rows) {
      if (!(await checkPasswordWerkzeug(row.hash, row.plain))) problems.push(`user ${row.id}: the new hash does not accept the legacy password`);
    }
  }
  data.rehashed = rehashed;
  return {
    name: 'passwords',
    passed: problems.length === 0,
    detail: problems.length
      ? problems.join('; ')
      : `${data.hashed} users have a checkable hash (${rehashed} rehashed from legacy plaintext, sample verified); ${data.needReset} need a password reset; no plaintext left`,
    data,
  };
}

/** Summaries computed after the load equal the application's rule (the load derived them: this re-derives them). */
async function summaryChecks(client: pg.ClientBase, schema: string, plan: Plan, offsets: Record<string, number>): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  for (const table of plan.tables) {
    for (const scope of derivedColumnScopes(table, offsets)) {
      if (scope.computed === 'FALSE') continue;
      const r = (await client.query(renderSummaryMismatches(schema, scope, 'computed', SAMPLE))).rows[0];
      const n = Number(r.n);
      out.push({
        name: `derived:${scope.key}`,
        passed: n === 0,
        detail: n === 0
          ? `every computed ${scope.key} follows the application's rule: ${scope.rule.rule}`
          : `${n} rows differ from the rule (${scope.rule.rule}), e.g. ids ${(r.sample as string[]).join(', ')}: run the finalize step again`,
      });
    }
  }
  return out;
}

/** Copied summaries that disagree with what the application derives: counted, with samples. */
async function summaryDisagreements(client: pg.ClientBase, schema: string, plan: Plan, offsets: Record<string, number>): Promise<Readiness['summariesDisagreeing']> {
  const out: Record<string, { count: number; sample: { id: number; stored: string | null; derived: string | null }[] }> = {};
  for (const table of plan.tables) {
    for (const scope of derivedColumnScopes(table, offsets)) {
      if (scope.copied === 'FALSE') continue;
      const r = (await client.query(renderSummaryMismatches(schema, scope, 'copied', SAMPLE))).rows[0];
      const ids = (r.sample ?? []) as string[];
      out[scope.key] = {
        count: Number(r.n),
        sample: ids.map((x, i) => ({ id: Number(x), stored: (r.stored as (string | null)[])[i] ?? null, derived: (r.derived as (string | null)[])[i] ?? null })),
      };
    }
  }
  return out;
}

const READINESS_LIST_LIMIT = 200;

/**
 * What the application will make of the migrated data: users who cannot log in, bags and bills whose
 * links were rejected, summaries that disagree with the application's rules. Counts are exact; the lists
 * are the first 200. Ids are target ids (reject keys are translated through the id offsets).
 */
async function readinessReport(client: pg.ClientBase, run: EngineRun, plan: Plan, offsets: Record<string, number>): Promise<Readiness> {
  const users = qualified(run.targetSchema, 'user');
  const userList = async (where: string, values: unknown[] = []) => {
    const count = Number((await client.query(`SELECT count(*)::bigint AS n FROM ${users} WHERE ${where}`, values)).rows[0].n);
    const list = (await client.query(`SELECT id, username FROM ${users} WHERE ${where} ORDER BY id LIMIT ${READINESS_LIST_LIMIT}`, values)).rows
      .map((r) => ({ id: Number(r.id), username: String(r.username) }));
    return { count, list };
  };
  const reset = await userList(`NOT ${checkableHashSql('password_hash')}`);
  const notVerified = await userList('verified IS NOT TRUE');
  const noArea = await userList(`role = 'dispatcher' AND (dispatch_area IS NULL OR btrim(dispatch_area) = '')`);
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
  const parentLinks = await idsOf('bag', (linkPlan?.derivedLinks ?? []).map((d) => ({ label: derivedSourceName(d), keySql: 'source_key', offset: offsets[d.fromSource] ?? 0 })));
  const billBagPlan = plan.tables.find((t) => t.target === 'bill_bag');
  const billParts = (billBagPlan?.sources ?? []).flatMap((s) => {
    const ref = s.columns.find((c) => c.target === 'bill_id' && c.source);
    return ref ? [{ label: s.table, keySql: `row_data ->> ${escapeLiteral(ref.source!)}`, offset: offsets[ref.ref?.sourceTable ?? ''] ?? 0 }] : [];
  });
  const bills = await idsOf('bill', billParts);
  const summariesDisagreeing = await summaryDisagreements(client, run.targetSchema, plan, offsets);
  return {
    usersNeedingPasswordReset: reset.list,
    usersNotVerified: notVerified.list,
    dispatchersWithoutArea: noArea.list,
    bagsWithRejectedParentLink: parentLinks.list,
    billsWithRejectedBags: bills.list,
    summariesDisagreeing,
    counts: {
      usersNeedingPasswordReset: reset.count,
      usersNotVerified: notVerified.count,
      dispatchersWithoutArea: noArea.count,
      bagsWithRejectedParentLink: parentLinks.count,
      billsWithRejectedBags: bills.count,
      ...Object.fromEntries(Object.entries(summariesDisagreeing).map(([k, v]) => [`summaryDisagrees:${k}`, v.count])),
    },
  };
}
