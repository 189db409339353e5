import type pg from 'pg';
import { CatchUpRefusedError } from '../core/errors';
import type { ColumnMapping, Plan, TablePlan } from '../core/planner';
import { TARGET_ORDER, type TargetTable } from '../core/rules';
import { renderComputeSummaries } from '../core/sql/derived';
import { bagRoleRefs, bagRolesNeeded, renderRefDelete, renderRefInsert, renderRolesOf } from '../core/sql/bag-roles';
import { captureLog } from '../core/sql/capture';
import { escapeIdentifier as id, Params, qualified } from '../core/sql/ident';
import { buildBatchInsert, buildUnitSelect, createdAtExpr, foldedQrExpr, sourceFrom, tableUnits, targetIdExpr, translatedRefExpr, unitOffset, type MappingContext, type TableUnit } from '../core/sql/mapping';
import { renderResetSequence, TARGET_TABLE_DDL } from '../core/sql/target-ddl';
import { toMigrationError, withTransaction } from '../io/pg';
import { captureStatus, readCapture, type CaptureStatus } from './capture';
import {
  hashPlaintextPasswords,
  loadOffsets,
  mappingContext,
  tuneBatchTransaction,
  type EngineRun,
  type PasswordHasher,
} from './migrate';
import { readRun } from './runs';

/**
 * Catch-up (MIGRATION_SPEC.md §6): the keys the capture logged are re-derived through the very mapping
 * SQL of the batches (`buildMappingSelect` / `buildDerivedLinkSelect` with a key set instead of a key
 * range, and the batch insert itself), one bounded chunk of the change log per transaction:
 *   1. the chunk is DELETEd from the change log (RETURNING its keys): only committed changes are visible,
 *      and the deletion commits or rolls back with the re-derived rows, so the log is its own checkpoint:
 *      nothing is applied twice or skipped, whatever the order in which the application's transactions commit;
 *   2. per unit (source table, or links derived from it), in foreign-key order: the reject of each key is
 *      deleted; target rows whose source row is gone or now rejected are deleted (their dependent target
 *      rows are re-derived too: a deleted bag's links, bill_bag rows and scans); surviving rows are updated
 *      in place from the mapping; new rows and rejects go through the batch insert unchanged;
 *   3. what prepare derived from the whole source is kept true for the touched keys (bag roles, QR
 *      duplicate renames of a new younger duplicate, the id map), and the summaries the application derives
 *      are recomputed for the parents and bills touched.
 * Cases it cannot re-derive exactly are refused with CatchUpRefusedError, naming the change and what to do.
 */

export interface CatchUpOptions {
  readonly client: pg.ClientBase;
  readonly run: EngineRun;
  readonly plan: Plan;
  readonly hashPasswords: PasswordHasher;
  /** Stop starting new chunks after this time (epoch ms). */
  readonly deadline: number;
  /** Changes per transaction (default 2,000): memory and transaction size stay bounded whatever the backlog. */
  readonly chunkSize?: number;
  readonly shouldStop?: () => boolean;
}

export interface CatchUpResult extends CaptureStatus {
  readonly applied: number;
  readonly chunks: number;
  /** Changes per second applied by this call. */
  readonly rate: number;
}

export const DEFAULT_CHUNK = 2000;

/** Catches up until the log is empty (as far as this transaction can see) or out of time. */
export async function catchUp(o: CatchUpOptions): Promise<CatchUpResult> {
  const started = Date.now();
  let applied = 0;
  let chunks = 0;
  await assertCaptureOf(o.client, o.run);
  for (;;) {
    if (chunks > 0 && (Date.now() >= o.deadline || o.shouldStop?.())) break;
    const n = await withTransaction(o.client, async () => {
      await o.client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
      await tuneBatchTransaction(o.client);
      return applyChunk(o);
    }).catch((err) => {
      if (err instanceof CatchUpRefusedError) throw err;
      throw toMigrationError(err, `Catching up run ${o.run.runId}`);
    });
    applied += n;
    if (n > 0) chunks += 1;
    // A short chunk: the log was empty as far as this transaction could see. Caught up as of now (a busy
    // application keeps adding changes: the next CatchUp, or the cutover under its lock, takes them).
    if (n < (o.chunkSize ?? DEFAULT_CHUNK)) break;
  }
  const status = await captureStatus(o.client, o.run.runId);
  const seconds = Math.max((Date.now() - started) / 1000, 0.001);
  return { ...status, applied, chunks, rate: applied / seconds };
}

/**
 * Applies every change the current transaction can see (cutover: under its lock; verify: in its snapshot).
 * `changed` collects the source keys applied (cutover checks them; its backlog is a few seconds of writes).
 */
export async function drainInTransaction(o: Omit<CatchUpOptions, 'deadline'>, changed?: Map<string, Set<number>>): Promise<number> {
  await assertCaptureOf(o.client, o.run);
  // The batches' planner settings (random_page_cost above all: with the default the key-set mappings hashed
  // whole referenced tables, 0.43 s instead of 0.1 s for 200 changes at 50,000 bags).
  await tuneBatchTransaction(o.client);
  let applied = 0;
  for (;;) {
    const n = await applyChunk(o, changed);
    if (n === 0) return applied;
    applied += n;
  }
}

/**
 * Every changed source key is accounted for exactly once: its source row exists if and only if the target
 * holds its row or the reject store its reason, never both. With Verify's counts at its capture position,
 * this keeps the counts invariant true at the cutover without counting whole tables under the lock.
 */
export async function changedKeysProblems(client: pg.ClientBase, run: EngineRun, plan: Plan, changed: Map<string, Set<number>>): Promise<string[]> {
  const offsets = await loadOffsets(client, run.targetSchema);
  const problems: string[] = [];
  for (const table of plan.tables) {
    for (const s of table.sources) {
      const keys = changed.get(s.table);
      if (!keys?.size || !s.key) continue;
      const r = await client.query(
        `SELECT k, src, tgt, rej FROM (
           SELECT k, EXISTS (SELECT 1 FROM ${qualified(run.sourceSchema, s.table)} s WHERE s.${id(s.key)} = k) AS src,
                  EXISTS (SELECT 1 FROM ${qualified(run.targetSchema, table.target)} t WHERE t.id = k + $2::bigint) AS tgt,
                  EXISTS (SELECT 1 FROM ${qualified(run.targetSchema, '_migration_reject')} r WHERE r.run_id = $3 AND r.source_table = $4 AND r.source_key = k::text) AS rej
             FROM unnest($1::bigint[]) k) x
          WHERE src <> (tgt OR rej) OR (tgt AND rej) ORDER BY k LIMIT 5`,
        [[...keys], offsets[s.table] ?? 0, run.runId, s.table],
      );
      for (const row of r.rows) problems.push(`${s.table} key ${row.k}: source row ${row.src ? 'exists' : 'gone'}, target row ${row.tgt ? 'present' : 'absent'}, reject ${row.rej ? 'present' : 'absent'}`);
    }
  }
  return problems;
}

async function assertCaptureOf(client: pg.ClientBase, run: EngineRun): Promise<void> {
  if (!(await readCapture(client, run.runId))) {
    throw new CatchUpRefusedError(`Run ${run.runId} has no change capture installed (it was not started with --live / "live": true, or its capture was removed). Nothing to catch up; a run that was not live must be migrated again to pick up later writes.`);
  }
}

/** One chunk of the change log, in the caller's transaction; returns the number of changes applied. */
export async function applyChunk(o: Omit<CatchUpOptions, 'deadline'>, collect?: Map<string, Set<number>>): Promise<number> {
  const { client, run } = o;
  const taken = await client.query(
    `DELETE FROM ${captureLog()} WHERE pos IN (SELECT pos FROM ${captureLog()} WHERE run_id = $1 ORDER BY pos LIMIT $2)
     RETURNING pos, table_name, op, key`,
    [run.runId, o.chunkSize ?? DEFAULT_CHUNK],
  );
  if (taken.rows.length === 0) return 0;
  const planned = new Map(o.plan.tables.flatMap((t) => t.sources.map((s) => [s.table, s] as const)));
  const keys = new Map<string, Set<number>>();
  for (const row of taken.rows) {
    const source = planned.get(row.table_name);
    if (!source) continue; // a table the plan does not read (retired, skipped): in the backup only
    if (row.op === 'T') {
      throw new CatchUpRefusedError(`Table "${row.table_name}" was TRUNCATEd during the run (capture position ${row.pos}): catch-up does not re-derive a truncated table. Nothing of this chunk was applied. Abandon this run (tracetrack-migrate abandon --run-id ${run.runId}) and migrate again.`);
    }
    if (row.key === null || source.keyStrategy !== 'primary-key') {
      throw new CatchUpRefusedError(`Table "${row.table_name}" changed during the run but has no integer primary key to re-derive its rows by (capture position ${row.pos}). Nothing of this chunk was applied. Stop the application's writes to it, abandon this run (tracetrack-migrate abandon --run-id ${run.runId}) and migrate again.`);
    }
    let set = keys.get(row.table_name);
    if (!set) keys.set(row.table_name, (set = new Set()));
    set.add(Number(row.key));
  }
  if (keys.size) await applyKeys(o, keys);
  if (collect) for (const [t, ks] of keys) { let set = collect.get(t); if (!set) collect.set(t, (set = new Set())); for (const k of ks) set.add(k); }
  const maxPos = taken.rows.reduce((a, r) => Math.max(a, Number(r.pos)), 0);
  await client.query(
    `UPDATE ${qualified(run.targetSchema, '_migration_run')}
        SET steps = jsonb_set(steps, '{catch-up}', COALESCE(steps -> 'catch-up', '{}'::jsonb)
              || jsonb_build_object('applied', COALESCE((steps -> 'catch-up' ->> 'applied')::bigint, 0) + $2::bigint,
                                    'position', GREATEST(COALESCE((steps -> 'catch-up' ->> 'position')::bigint, 0), $3::bigint),
                                    'at', now())), updated_at = now()
      WHERE run_id = $1`,
    [run.runId, taken.rows.length, maxPos],
  );
  return taken.rows.length;
}

/** The capture position caught up to so far (the highest change applied), from the run record. */
export async function caughtUpPosition(client: pg.ClientBase, run: EngineRun): Promise<number> {
  const rec = await readRun(client, run.targetSchema, run.runId);
  return Number((rec?.steps['catch-up'] as { position?: number } | undefined)?.position ?? 0);
}

// ---------------------------------------------------------------- re-deriving keys

interface UnitInfo {
  readonly unit: TableUnit;
  readonly table: TablePlan;
  /** Target id of key k: offset + k. */
  readonly offset: number;
  /** Largest key the prepared id range holds (null: unbounded). */
  readonly maxKey: number | null;
}

function unitInfos(plan: Plan, offsets: Record<string, number>): Map<TargetTable, UnitInfo[]> {
  const out = new Map<TargetTable, UnitInfo[]>();
  for (const table of plan.tables) {
    const units = tableUnits(plan, table, true).map((unit) => ({ unit, table, offset: unitOffset(unit, offsets) }));
    const sorted = [...units].sort((a, b) => a.offset - b.offset);
    out.set(table.target, sorted.map((u, i) => ({ ...u, maxKey: i + 1 < sorted.length ? sorted[i + 1]!.offset - u.offset : null })));
  }
  return out;
}

/** The unit (and source key) a target id of `table` came from. */
function unitOfTargetId(infos: UnitInfo[], targetId: number): { info: UnitInfo; key: number } | null {
  let best: UnitInfo | null = null;
  for (const u of infos) if (u.offset < targetId && (u.maxKey === null || targetId - u.offset <= u.maxKey)) best = u;
  return best ? { info: best, key: targetId - best.offset } : null;
}

/** Foreign keys into each target table (plus bag.parent_id, resolved by the migration rather than a constraint). */
function dependentsOf(table: TargetTable): { table: TargetTable; column: string; noAction: boolean }[] {
  const out: { table: TargetTable; column: string; noAction: boolean }[] = [];
  for (const t of TARGET_ORDER) for (const fk of TARGET_TABLE_DDL[t].foreignKeys) if (fk.ref === table) out.push({ table: t, column: fk.column, noAction: !fk.onDelete });
  if (table === 'bag') out.push({ table: 'bag', column: 'parent_id', noAction: false });
  return out;
}

class KeySets {
  private readonly sets = new Map<string, Set<number>>();
  add(label: string, keys: Iterable<number>): void {
    let s = this.sets.get(label);
    if (!s) this.sets.set(label, (s = new Set()));
    for (const k of keys) s.add(k);
  }
  take(label: string): number[] {
    const s = this.sets.get(label);
    this.sets.delete(label);
    return s ? [...s].sort((a, b) => a - b) : [];
  }
}

interface Touched {
  readonly parents: Set<number>;
  readonly bills: Set<number>;
  /** Bags whose parent_id must be resolved again (touched, or children of a deleted bag). */
  readonly resolve: Set<number>;
}

async function applyKeys(o: Omit<CatchUpOptions, 'deadline'>, changed: Map<string, Set<number>>): Promise<void> {
  const { client, run, plan } = o;
  const schema = run.targetSchema;
  const offsets = await loadOffsets(client, schema);
  const ctx = mappingContext(run, run.sourceSchema, offsets, 'load');
  const infos = unitInfos(plan, offsets);
  const pending = new KeySets();
  for (const [table, infosOf] of infos) {
    void table;
    for (const u of infosOf) {
      const keys = changed.get(u.unit.source.table);
      // A derived-link unit re-derives the links of the bags whose row changed.
      if (keys) pending.add(u.unit.label, keys);
    }
  }
  assertInPreparedRanges(run, infos, changed);
  await recordIdMap(client, schema, plan, offsets, changed);
  const bagInfos = infos.get('bag') ?? [];
  await keepBagRolesTrue(o, ctx, infos, changed, pending);
  await keepQrRenamesTrue(o, ctx, bagInfos, changed, pending);
  const touched: Touched = { parents: new Set(), bills: new Set(), resolve: new Set() };
  const order = plan.steps.filter((s): s is TargetTable => (TARGET_ORDER as readonly string[]).includes(s));
  for (const target of order) {
    let applied = false;
    // Again while a unit of this table queued more of its keys (bag children of a bag that came back).
    for (let round = 0; round < 10; round++) {
      let any = false;
      for (const info of infos.get(target) ?? []) {
        const keys = pending.take(info.unit.label);
        if (keys.length) await applyUnit(o, ctx, info, keys, infos, pending, touched);
        any ||= keys.length > 0;
      }
      applied ||= any;
      if (!any) break;
    }
    // New rows keep their source ids: the sequence must stay past the largest (an index lookup, not a scan).
    if (applied) await client.query(renderResetSequence(schema, target));
    if (target === 'bag' && touched.resolve.size) {
      const bag = qualified(schema, 'bag');
      await client.query(
        `UPDATE ${bag} b SET parent_id = NULL WHERE b.id = ANY($1::bigint[]) AND b.parent_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM ${bag} p WHERE p.id = b.parent_id)`,
        [[...touched.resolve]],
      );
    }
  }
  await recomputeSummaries(client, schema, plan, offsets, touched);
}

/** Merged sources: a key past the id range `prepare` reserved would take another source's ids: refused. */
function assertInPreparedRanges(run: EngineRun, infos: Map<TargetTable, UnitInfo[]>, changed: Map<string, Set<number>>): void {
  for (const list of infos.values()) {
    for (const u of list) {
      const keys = changed.get(u.unit.source.table);
      if (!keys || u.maxKey === null || u.unit.derived) continue;
      const over = [...keys].filter((k) => k > u.maxKey! || k < 1);
      if (over.length) {
        throw new CatchUpRefusedError(`Rows of "${u.unit.source.table}" with keys ${over.slice(0, 5).join(', ')} were written during the run beyond the id range prepared for that source (keys 1–${u.maxKey}, target ids offset by ${u.offset}): catch-up cannot give them target ids without moving another source's rows. Nothing of this chunk was applied. Abandon this run (tracetrack-migrate abandon --run-id ${run.runId}) and migrate again.`);
      }
    }
  }
}

async function recordIdMap(client: pg.ClientBase, schema: string, plan: Plan, offsets: Record<string, number>, changed: Map<string, Set<number>>): Promise<void> {
  for (const table of plan.tables.filter((t) => t.merged)) {
    for (const s of table.sources) {
      const keys = changed.get(s.table);
      if (!keys || !s.key) continue;
      await client.query(
        `INSERT INTO ${qualified(schema, '_migration_id_map')} (source_table, source_key, target_table, target_id)
         SELECT $1, k, $2, k + $3::bigint FROM unnest($4::bigint[]) k ON CONFLICT (source_table, source_key) DO NOTHING`,
        [s.table, table.target, offsets[s.table] ?? 0, [...keys]],
      );
    }
  }
}

/**
 * Bag roles (prepare's "is someone's parent / child") for every bag a change can affect: the touched bags,
 * the parents they referenced before (the target) and now (the source), and the bags of touched link rows.
 * A bag whose role changed is re-derived too (its type may follow from the role).
 */
async function keepBagRolesTrue(o: Omit<CatchUpOptions, 'deadline'>, ctx: MappingContext, infos: Map<TargetTable, UnitInfo[]>, changed: Map<string, Set<number>>, pending: KeySets): Promise<void> {
  const { client, plan } = o;
  const schema = ctx.targetSchema;
  if (!bagRolesNeeded(plan)) return;
  await assertBagRefsKept(client, o.run);
  // The bags whose role may have changed: those the changed rows referenced before (the references kept
  // since prepare) and reference now (their current source rows, looked up by key), and changed bags themselves.
  const affected = new Set<number>();
  const bag = plan.tables.find((t) => t.target === 'bag');
  for (const s of bag?.sources ?? []) for (const k of changed.get(s.table) ?? []) affected.add(k + (ctx.offsets[s.table] ?? 0));
  const refs = bagRoleRefs(plan, ctx);
  for (const table of new Set(refs.map((r) => r.sourceTable))) {
    const keys = [...(changed.get(table) ?? [])];
    if (!keys.length) continue;
    const gone = await client.query(renderRefDelete(schema), [table, keys]);
    gone.rows.forEach((r) => affected.add(Number(r.target_id)));
    for (const ref of refs.filter((r) => r.sourceTable === table)) {
      const now = await client.query(renderRefInsert(schema, ref, true), [table, keys]);
      now.rows.forEach((r) => affected.add(Number(r.target_id)));
    }
  }
  if (affected.size === 0) return;
  const list = [...affected];
  const before = await roleRows(client, schema, list);
  for (const sql of renderRolesOf(schema)) await client.query(sql, [list]);
  const after = await roleRows(client, schema, list);
  for (const tid of list) {
    if (before.get(tid) === after.get(tid)) continue;
    const hit = unitOfTargetId((infos.get('bag') ?? []).filter((u) => !u.unit.derived), tid);
    if (hit) pending.add(hit.info.unit.label, [hit.key]);
  }
}

/**
 * The per-row bag references are filled by prepare (`bagRefs` in its step record). A live run prepared by a
 * version without them (upgraded mid-run) would re-derive roles from an empty table and silently change bag
 * types, which Verify could not see (it derives types from the same roles): refused instead.
 */
async function assertBagRefsKept(client: pg.ClientBase, run: { runId: string; targetSchema: string }): Promise<void> {
  const r = await client.query(`SELECT steps -> 'migrate:prepare' ->> 'bagRefs' AS refs FROM ${qualified(run.targetSchema, '_migration_run')} WHERE run_id = $1`, [run.runId]);
  if (r.rows[0]?.refs === 'true') return;
  throw new CatchUpRefusedError(
    `Run ${run.runId} was prepared without the per-row bag references that catch-up needs to keep bag types exact (it was started by an earlier version of tracetrack-migrate). Nothing of this chunk was applied. Abandon it (tracetrack-migrate abandon --run-id ${run.runId}) and start a new live run.`,
  );
}

async function roleRows(client: pg.ClientBase, schema: string, ids: number[]): Promise<Map<number, string>> {
  const r = await client.query(
    `SELECT x.id, (EXISTS (SELECT 1 FROM ${qualified(schema, '_mig_bag_parent')} p WHERE p.target_id = x.id))::text || '/' ||
                  (EXISTS (SELECT 1 FROM ${qualified(schema, '_mig_bag_child')} c WHERE c.target_id = x.id))::text AS role
       FROM unnest($1::bigint[]) x(id)`,
    [ids],
  );
  return new Map(r.rows.map((row) => [Number(row.id), row.role as string]));
}

/**
 * QR codes that collide after folding keep the oldest row's code; the others become `<QR>_DUP_<id>`
 * (prepare). For every code a change touched (a touched bag's old code and its new one) the group of bags
 * holding it is ranked again by prepare's own rule (created_at, then id) over the current source rows, the
 * renames are set accordingly, and bags already migrated whose name changes are re-derived too. A renamed
 * code that another bag already has is refused, as prepare refuses it.
 */
async function keepQrRenamesTrue(o: Omit<CatchUpOptions, 'deadline'>, ctx: MappingContext, bagInfos: UnitInfo[], changed: Map<string, Set<number>>, pending: KeySets): Promise<void> {
  const { client, run } = o;
  const schema = ctx.targetSchema;
  const rename = qualified(schema, '_mig_qr_rename');
  const bagTable = qualified(schema, 'bag');
  const sources = bagInfos.filter((u) => !u.unit.derived);
  const codes = new Set<string>();
  const touched = new Set<number>();
  const sourceRows = async (info: UnitInfo, keys: number[]) => {
    const s = info.unit.source;
    const r = await client.query(
      `SELECT ${targetIdExpr(s, ctx)} AS tid, ${foldedQrExpr(s, ctx)} AS folded, ${createdAtExpr(s, ctx)} AS created_at
         FROM ${sourceFrom(s, ctx)} WHERE s.${id(s.key!)} = ANY($1::bigint[])`,
      [keys],
    );
    return r.rows.map((x) => ({ tid: Number(x.tid), folded: String(x.folded), createdAt: x.created_at === null ? null : new Date(x.created_at).getTime(), info }));
  };
  for (const info of sources) {
    const keys = changed.get(info.unit.source.table);
    if (!keys) continue;
    const tids = [...keys].map((k) => k + info.offset);
    tids.forEach((t) => touched.add(t));
    const old = await client.query(
      `SELECT COALESCE(regexp_replace(r.qr_id, '_DUP_[0-9]+$', ''), upper(b.qr_id)) AS code FROM ${bagTable} b LEFT JOIN ${rename} r ON r.target_id = b.id WHERE b.id = ANY($1::bigint[])`,
      [tids],
    );
    old.rows.forEach((x) => codes.add(String(x.code)));
    (await sourceRows(info, [...keys])).forEach((x) => codes.add(x.folded));
  }
  if (codes.size === 0) return;
  const list = [...codes];
  const holders = await client.query(
    `SELECT b.id FROM ${bagTable} b WHERE upper(b.qr_id) = ANY($1::text[])
     UNION SELECT r.target_id FROM ${rename} r WHERE regexp_replace(r.qr_id, '_DUP_[0-9]+$', '') = ANY($1::text[])`,
    [list],
  );
  const members = new Set<number>([...touched, ...holders.rows.map((x) => Number(x.id))]);
  const byInfo = new Map<UnitInfo, number[]>();
  for (const tid of members) {
    const hit = unitOfTargetId(sources, tid);
    if (!hit) continue;
    byInfo.set(hit.info, [...(byInfo.get(hit.info) ?? []), hit.key]);
  }
  const rows = (await Promise.all([...byInfo].map(([info, keys]) => sourceRows(info, keys)))).flat().filter((x) => codes.has(x.folded));
  const desired = new Map<number, string | null>();
  for (const code of list) {
    const group = rows.filter((x) => x.folded === code)
      .sort((a, b) => (a.createdAt ?? Infinity) - (b.createdAt ?? Infinity) || a.tid - b.tid);
    group.forEach((x, n) => desired.set(x.tid, n === 0 ? null : `${code}_DUP_${x.tid}`));
  }
  const current = await client.query(`SELECT target_id, qr_id FROM ${rename} WHERE target_id = ANY($1::bigint[])`, [[...members]]);
  const now = new Map(current.rows.map((x) => [Number(x.target_id), String(x.qr_id)]));
  for (const tid of members) {
    const want = desired.get(tid) ?? null;
    if ((now.get(tid) ?? null) === want) continue;
    if (want === null) await client.query(`DELETE FROM ${rename} WHERE target_id = $1`, [tid]);
    else {
      const clash = await client.query(`SELECT id FROM ${bagTable} WHERE upper(qr_id) = $1 AND id <> $2 LIMIT 1`, [want, tid]);
      if (clash.rows[0]) {
        throw new CatchUpRefusedError(`Bag ${tid} duplicates QR code ${want.replace(/_DUP_\d+$/, '')} and would be renamed ${want}, which bag ${clash.rows[0].id} already has. Nothing of this chunk was applied. Fix the QR code in the source; then catch up again (tracetrack-migrate catch-up --run-id ${run.runId}).`);
      }
      await client.query(`INSERT INTO ${rename} (target_id, qr_id) VALUES ($1, $2) ON CONFLICT (target_id) DO UPDATE SET qr_id = EXCLUDED.qr_id`, [tid, want]);
    }
    if (!touched.has(tid)) {
      const hit = unitOfTargetId(sources, tid);
      if (hit) pending.add(hit.info.unit.label, [hit.key]);
    }
  }
}

/** Re-derives the given keys of one unit (see the module comment, step 2). */
async function applyUnit(
  o: Omit<CatchUpOptions, 'deadline'>,
  ctx: MappingContext,
  info: UnitInfo,
  keys: number[],
  infos: Map<TargetTable, UnitInfo[]>,
  pending: KeySets,
  touched: Touched,
): Promise<void> {
  const { client, run } = o;
  const schema = run.targetSchema;
  const target = info.table.target;
  const targetTable = qualified(schema, target);
  const tids = keys.map((k) => k + info.offset);
  const fkCols = [...TARGET_TABLE_DDL[target].foreignKeys.map((f) => f.column), ...(target === 'bag' ? ['parent_id', 'type'] : [])];
  const refsOf = async () =>
    (await client.query(`SELECT id${fkCols.map((c) => `, ${id(c)}`).join('')} FROM ${targetTable} WHERE id = ANY($1::bigint[])`, [tids])).rows;
  const before = await refsOf();

  const passwords = info.unit.derived ? null : await hashPlaintextPasswords(o, info.unit.source, ctx.sourceSchema, { keys });
  const mappingFor = (params: Params) => buildUnitSelect(info.table, info.unit, ctx, params, { keys }, passwords);

  // Rejects of these keys go; the batch insert below rejects again whatever is still bad.
  const unrejected = (await client.query(
    `DELETE FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1 AND source_table = $2 AND source_key = ANY($3::text[]) RETURNING source_key`,
    [run.runId, info.unit.label, keys.map(String)],
  )).rows.map((r) => Number(r.source_key) + info.offset);

  await deleteGoneRows(o, info, mappingFor, tids, { infos, pending, touched });

  await updateSurvivors(o, info, mappingFor);

  // New rows and rejects: the batch insert itself.
  {
    const params = new Params();
    const m = mappingFor(params);
    const preIds = params.add(tids, 'bigint[]');
    const q = buildBatchInsert(
      { runId: run.runId, target, sourceLabel: info.unit.label, mapping: m, sourceSchema: ctx.sourceSchema, targetSchema: schema, source: info.unit.source, preIds, ...(info.unit.mayConflict === false ? { mayConflict: false } : {}) },
      params,
    );
    await client.query(q.text, q.values);
  }

  const after = await refsOf();
  noteStructuralChanges(target, fkCols, before, after, touched);
  // A row that was rejected and now migrates (fixed in the source): rows that reference it were loaded
  // without it (a NULL reference, or rejected) and are re-derived. Found in the source (a scan of each
  // referring table: only when a rejected row comes back, which is rare).
  const present = new Set(before.map((r) => Number(r.id)));
  const back = after.map((r) => Number(r.id)).filter((x) => !present.has(x) && unrejected.includes(x));
  if (back.length && !info.unit.derived) await queueReferrers(o, ctx, target, back, infos, pending);
  if (target === 'bag') for (const t of tids) touched.resolve.add(t);
}

type MappingFor = (params: Params) => { text: string; columns: string[] };

/** Target rows whose source row is gone or now bad: deleted, with what depends on them re-derived. */
async function deleteGoneRows(
  o: Omit<CatchUpOptions, 'deadline'>, info: UnitInfo, mappingFor: MappingFor, tids: number[],
  state: { infos: Map<TargetTable, UnitInfo[]>; pending: KeySets; touched: Touched },
): Promise<void> {
  const { client, run } = o;
  const schema = run.targetSchema;
  const target = info.table.target;
  const targetTable = qualified(schema, target);
  const { infos, pending, touched } = state;
  const params = new Params();
  const m = mappingFor(params);
  const p = params.add(tids, 'bigint[]');
  const gone = (await client.query(
    `WITH m AS MATERIALIZED (${m.text}) SELECT t.id FROM ${targetTable} t WHERE t.id = ANY(${p}) AND NOT EXISTS (SELECT 1 FROM m WHERE m.id = t.id AND m._reject IS NULL)`,
    params.values,
  )).rows.map((r) => Number(r.id));
  if (gone.length) await deleteWithDependents(client, schema, target, gone, infos, pending, touched);
}

/** Surviving rows: updated in place from the mapping (no delete: their dependents stay). */
async function updateSurvivors(o: Omit<CatchUpOptions, 'deadline'>, info: UnitInfo, mappingFor: MappingFor): Promise<void> {
  const { client, run } = o;
  const target = info.table.target;
  const targetTable = qualified(run.targetSchema, target);
  const params = new Params();
  const m = mappingFor(params);
  const cols = m.columns.filter((c) => c !== 'id');
  if (cols.length) {
    await client.query('SAVEPOINT catch_up_update');
    try {
      if (target === 'bag' && cols.includes('qr_id')) {
        // Codes that move between bags (a rename re-ranked): out of the way first, as the unique QR index
        // is checked row by row.
        await client.query(
          `WITH m AS MATERIALIZED (${m.text})
           UPDATE ${targetTable} t SET qr_id = '~' || t.id::text FROM m WHERE t.id = m.id AND m._reject IS NULL AND t.qr_id IS DISTINCT FROM m.qr_id`,
          params.values,
        );
      }
      await client.query(
        `WITH m AS MATERIALIZED (${m.text})
         UPDATE ${targetTable} t SET (${cols.map(id).join(', ')}) = ROW(${cols.map((c) => `m.${id(c)}`).join(', ')})
           FROM m WHERE t.id = m.id AND m._reject IS NULL`,
        params.values,
      );
      await client.query('RELEASE SAVEPOINT catch_up_update');
    } catch (err) {
      await client.query('ROLLBACK TO SAVEPOINT catch_up_update');
      if ((err as { code?: string }).code === '23505') {
        throw new CatchUpRefusedError(`A row of "${info.unit.label}" changed during the run to a value another ${target} row already has (${(err as { detail?: string }).detail ?? 'a unique key'}): the batches would have rejected one of the two by id order, which catch-up cannot redo for rows already migrated. Nothing of this chunk was applied. Fix the duplicate in the source; then catch up again (tracetrack-migrate catch-up --run-id ${run.runId}).`, { cause: err });
      }
      throw err;
    }
  }
}

/**
 * Summaries follow the structure: only rows that came, went, or changed a reference (or a bag its type)
 * touch their parents and bills (a reweighed child does not change its parent's summaries).
 */
function noteStructuralChanges(target: TargetTable, fkCols: string[], before: Record<string, unknown>[], after: Record<string, unknown>[], touched: Touched): void {
  const key = (r: Record<string, unknown>) => fkCols.map((c) => String(r[c])).join('|');
  const beforeById = new Map(before.map((r) => [Number(r.id), r]));
  const afterById = new Map(after.map((r) => [Number(r.id), r]));
  for (const tid of new Set([...beforeById.keys(), ...afterById.keys()])) {
    const b = beforeById.get(tid);
    const a = afterById.get(tid);
    if (target !== 'bill' && b && a && key(b) === key(a)) continue;
    for (const row of [b, a]) if (row) noteTouched(target, row, touched);
  }
}

/** Source rows that reference the given target ids of `target` (through a mapped reference), queued for re-derivation. */
async function queueReferrers(o: Omit<CatchUpOptions, 'deadline'>, ctx: MappingContext, target: TargetTable, tids: number[], infos: Map<TargetTable, UnitInfo[]>, pending: KeySets): Promise<void> {
  for (const table of o.plan.tables) {
    for (const s of table.sources) {
      if (!s.key) continue;
      const refs = s.columns.filter((m) => m.kind === 'ref' && m.source && m.ref?.target === target).map((m) => translatedRefExpr(m, ctx));
      if (s.singleBag && target === 'bag') {
        const single = { target: 'bag_id', source: s.singleBag.column, sourceType: null, kind: 'ref', ref: { target: 'bag', sourceTable: s.singleBag.refSource, onOrphan: 'null' } } as const;
        refs.push(translatedRefExpr(single as unknown as ColumnMapping, ctx));
      }
      for (const ref of refs) {
        const r = await o.client.query(`SELECT s.${id(s.key)}::bigint AS k FROM ${sourceFrom(s, ctx)} WHERE (${ref})::text = ANY($1::text[])`, [tids.map(String)]);
        if (r.rows.length === 0) continue;
        const keys = r.rows.map((x) => Number(x.k));
        for (const u of infos.get(table.target) ?? []) if (u.unit.source.table === s.table) pending.add(u.unit.label, keys);
        // Links derived from a bag's parent reference follow the bag.
        if (table.target === 'bag') for (const u of infos.get('link') ?? []) if (u.unit.derived && u.unit.source.table === s.table) pending.add(u.unit.label, keys);
      }
    }
  }
}

function noteTouched(target: TargetTable, row: Record<string, unknown>, touched: Touched): void {
  const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));
  const add = (set: Set<number>, v: unknown) => {
    const n = num(v);
    if (n !== null) set.add(n);
  };
  if (target === 'bag') {
    add(touched.parents, row.id);
    add(touched.parents, row.parent_id);
  } else if (target === 'link') {
    add(touched.parents, row.parent_bag_id);
  } else if (target === 'bill') {
    add(touched.bills, row.id);
  } else if (target === 'bill_bag') {
    add(touched.bills, row.bill_id);
    add(touched.parents, row.bag_id);
  }
}

/**
 * Deletes target rows and queues their dependent target rows for re-derivation (the target's ON DELETE
 * CASCADE / SET NULL would otherwise leave them neither migrated nor rejected). Dependents whose foreign
 * key has no ON DELETE action (scans of a bag) are deleted first, then re-derived with the rest.
 */
async function deleteWithDependents(client: pg.ClientBase, schema: string, target: TargetTable, ids: number[], infos: Map<TargetTable, UnitInfo[]>, pending: KeySets, touched: Touched): Promise<void> {
  for (const dep of dependentsOf(target)) {
    const rows = await client.query(`SELECT id FROM ${qualified(schema, dep.table)} WHERE ${id(dep.column)} = ANY($1::bigint[])`, [ids]);
    if (rows.rows.length === 0) continue;
    const depIds = rows.rows.map((r) => Number(r.id));
    if (dep.table === 'bag' && dep.column === 'parent_id') {
      depIds.forEach((x) => touched.resolve.add(x));
      continue;
    }
    for (const d of depIds) {
      const hit = unitOfTargetId(infos.get(dep.table) ?? [], d);
      if (hit) pending.add(hit.info.unit.label, [hit.key]);
    }
    if (dep.noAction) await deleteWithDependents(client, schema, dep.table, depIds, infos, pending, touched);
  }
  if (target === 'link') {
    const r = await client.query(`SELECT parent_bag_id FROM ${qualified(schema, 'link')} WHERE id = ANY($1::bigint[])`, [ids]);
    r.rows.forEach((x) => touched.parents.add(Number(x.parent_bag_id)));
  }
  if (target === 'bill_bag') {
    const r = await client.query(`SELECT bill_id, bag_id FROM ${qualified(schema, 'bill_bag')} WHERE id = ANY($1::bigint[])`, [ids]);
    r.rows.forEach((x) => { touched.bills.add(Number(x.bill_id)); touched.parents.add(Number(x.bag_id)); });
  }
  await client.query(`DELETE FROM ${qualified(schema, target)} WHERE id = ANY($1::bigint[])`, [ids]);
}

/** The summaries the application derives, for the parents and bills the changes touched (and the bills of those parents). */
async function recomputeSummaries(client: pg.ClientBase, schema: string, plan: Plan, offsets: Record<string, number>, touched: Touched): Promise<void> {
  const bag = plan.tables.find((t) => t.target === 'bag');
  const bill = plan.tables.find((t) => t.target === 'bill');
  if (bag && touched.parents.size) {
    const sql = renderComputeSummaries(schema, bag, offsets, '$1::bigint[]');
    if (sql) await client.query(sql, [[...touched.parents]]);
  }
  if (bill) {
    if (touched.parents.size) {
      const r = await client.query(`SELECT DISTINCT bill_id FROM ${qualified(schema, 'bill_bag')} WHERE bag_id = ANY($1::bigint[])`, [[...touched.parents]]);
      r.rows.forEach((x) => touched.bills.add(Number(x.bill_id)));
    }
    if (touched.bills.size) {
      const sql = renderComputeSummaries(schema, bill, offsets, '$1::bigint[]');
      if (sql) await client.query(sql, [[...touched.bills]]);
    }
  }
}
