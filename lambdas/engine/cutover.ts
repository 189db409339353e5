import type pg from 'pg';
import { CutoverError, LeaseHeldError } from '../core/errors';
import type { Plan } from '../core/planner';
import { TARGET_TABLES } from '../core/rules';
import { AFTER_CUTOVER_TABLE, renderCreateGuard, renderDropGuard, renderWrittenSinceCutover } from '../core/sql/cutover-guard';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import type { SourceFingerprint, VerificationResult } from '../core/verify';
import { toMigrationError, withTransaction } from '../io/pg';
import { readCapture, removeCapture } from './capture';
import { catchUp, changedKeysProblems, drainInTransaction } from './catchup';
import type { EngineRun, PasswordHasher } from './migrate';
import { fingerprintRows } from './verify-checks';
import { latestRun, readRun, updateRun, type CutoverRecord, type RunRecord } from './runs';

/**
 * Cutover and rollback (MIGRATION_SPEC.md §4). Each is one transaction with a bounded lock wait:
 * cutover moves the legacy tables the plan read into `legacy_<run>` and the eight new tables into
 * the application schema; rollback is the exact reverse. Running either twice is a no-op.
 */
export interface CutoverOptions {
  readonly client: pg.ClientBase;
  readonly targetSchema: string;
  /** Schema the application reads (default `public`). */
  readonly appSchema?: string;
  /** Default: the latest run of the target schema. */
  readonly runId?: string;
  /** Rollback: roll back even though the application wrote into the new tables since the cutover. */
  readonly acceptNewWrites?: boolean;
  /** How long to wait for the tables' locks before failing (default 10 s). */
  readonly lockTimeoutMs?: number;
  /** Live runs: the remaining captured changes are caught up under the write lock (plaintext passwords hashed). */
  readonly hashPasswords?: PasswordHasher;
}

export interface CutoverOutcome {
  readonly status: 'cut-over' | 'already-cut-over' | 'rolled-back' | 'not-cut-over';
  readonly runId: string;
  readonly legacySchema: string;
  readonly moved: string[];
  /** Time from the write lock on the legacy tables to the swap being recorded (writes were blocked; reads went on). */
  readonly writeFreezeMs?: number;
  /** Live runs: changes caught up under the lock. */
  readonly caughtUp?: number;
  /** Where the freeze went: lock wait, catch-up, checks, capture removal, swap (ms). */
  readonly freezePhases?: Record<string, number>;
}

interface StoredCutover extends CutoverRecord {
  readonly auditLogId: number | null;
  readonly auditSequence: { last: number; isCalled: boolean } | null;
  readonly writeFreezeMs?: number;
  readonly freezePhases?: Record<string, number>;
  readonly live?: boolean;
}

/** Row count and content hash of every source table the plan reads, each hashed as Verify hashed it (`then`). */
export async function sourceFingerprints(client: pg.ClientBase, schema: string, plan: Plan, then: readonly SourceFingerprint[] = []): Promise<SourceFingerprint[]> {
  const out: SourceFingerprint[] = [];
  for (const table of readTables(plan)) {
    const typed = then.find((f) => f.table === table)?.typed === true;
    out.push({ table, ...(await fingerprintRows(client, schema, table, typed)) });
  }
  return out;
}

function readTables(plan: Plan): string[] {
  return [...new Set(plan.tables.flatMap((t) => t.sources.map((s) => s.table)))];
}

/**
 * A run without capture: the source under the write lock against its fingerprints at verification.
 * Changed → refused with how many rows changed: the difference in rows, and the rows written (inserted or
 * updated) since, by their xmin against the verification snapshot's horizon.
 */
async function assertSourceUnchanged(client: pg.ClientBase, run: RunRecord, plan: Plan, verification: VerificationResult): Promise<void> {
  const then = verification.sourceFingerprints;
  if (!then) return;
  const now = await sourceFingerprints(client, plan.sourceSchema, plan, then);
  const changed: string[] = [];
  let total = 0;
  for (const f of now) {
    const was = then.find((x) => x.table === f.table);
    if (!was || (was.rows === f.rows && was.hash === f.hash)) continue;
    const written = await client.query(
      `SELECT count(*)::bigint AS n FROM ${qualified(plan.sourceSchema, f.table)} t WHERE age(t.xmin) <= age((($1::bigint % 4294967296))::text::xid)`,
      [was.xmax],
    );
    const n = Number(written.rows[0].n);
    const deleted = Math.max(0, was.rows - f.rows);
    total += n + deleted;
    changed.push(`${f.table}: ${was.rows} → ${f.rows} rows, ${n} inserted or updated${deleted ? `, at least ${deleted} deleted` : ''}`);
  }
  if (changed.length === 0) return;
  throw new CutoverError(
    `The source changed since run ${run.runId} was verified (${verification.verifiedAt}), and the run has no change capture: at least ${total} rows changed (${changed.join('; ')}). ` +
      `Cutover refused: the new tables would miss those writes. Nothing was changed. Migrate again with the application stopped, or start a live run (tracetrack-migrate run --live) that captures the writes, then cut over.`,
  );
}

export function legacySchemaName(runId: string): string {
  return `legacy_${runId}`.slice(0, 63);
}

async function resolveRun(o: CutoverOptions): Promise<RunRecord> {
  const run = o.runId ? await readRun(o.client, o.targetSchema, o.runId) : await latestRun(o.client, o.targetSchema);
  if (!run) {
    throw new CutoverError(o.runId
      ? `No run ${o.runId} in target schema "${o.targetSchema}". Check --run-id and --target-schema.`
      : `No migration run in target schema "${o.targetSchema}". Run the migration first.`);
  }
  return run;
}

async function tablesIn(client: pg.ClientBase, schema: string): Promise<Set<string>> {
  const r = await client.query(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r','p')`,
    [schema],
  );
  return new Set(r.rows.map((row) => row.relname as string));
}

async function assertNoOtherLease(client: pg.ClientBase, schema: string, runId: string): Promise<void> {
  const r = await client.query(`SELECT run_id, expires_at FROM ${qualified(schema, '_migration_lease')} WHERE expires_at > now() AND run_id <> $1`, [runId]);
  if (r.rows[0]) {
    throw new LeaseHeldError(`Run ${r.rows[0].run_id} holds the lease of "${schema}" (until ${new Date(r.rows[0].expires_at).toISOString()}): it is still migrating. Wait for it, then cut over.`);
  }
}

async function setLockTimeout(client: pg.ClientBase, ms: number): Promise<void> {
  await client.query(`SELECT set_config('lock_timeout', $1, true)`, [`${Math.max(1, Math.floor(ms))}ms`]);
}

function lockFailure(err: unknown, what: string): never {
  const code = (err as { code?: string }).code;
  if (code === '55P03') {
    throw new CutoverError(`${what} gave up waiting for a table lock: the application (or another session) is using the tables. Nothing was changed. Stop the writers or retry in a quieter moment.`, { cause: err });
  }
  throw toMigrationError(err, what);
}

/**
 * The swap, inside the cutover's transaction: the legacy tables the plan read into `legacySchema`, the eight
 * new tables into the application schema. Refused when the application schema holds a table of the same name
 * that the migration did not read. Returns the legacy tables moved.
 */
async function swapTables(o: CutoverOptions, plan: Plan, read: string[], appSchema: string, legacySchema: string): Promise<string[]> {
  const appTables = await tablesIn(o.client, appSchema);
  const targetTables = await tablesIn(o.client, o.targetSchema);
  const missing = TARGET_TABLES.filter((t) => !targetTables.has(t));
  if (missing.length) throw new CutoverError(`Target schema "${o.targetSchema}" lacks ${missing.join(', ')}: nothing to cut over.`);
  const legacy = plan.sourceSchema === appSchema ? read.filter((t) => appTables.has(t)) : [];
  const colliding = TARGET_TABLES.filter((t) => appTables.has(t) && !legacy.includes(t));
  if (colliding.length) {
    throw new CutoverError(`Schema "${appSchema}" holds ${colliding.map((t) => `"${t}"`).join(', ')}, which the migration did not read: cutover would collide. Move or drop them, then cut over.`);
  }
  await o.client.query(`CREATE SCHEMA IF NOT EXISTS ${id(legacySchema)}`);
  for (const t of legacy) await o.client.query(`ALTER TABLE ${qualified(appSchema, t)} SET SCHEMA ${id(legacySchema)}`);
  for (const t of TARGET_TABLES) await o.client.query(`ALTER TABLE ${qualified(o.targetSchema, t)} SET SCHEMA ${id(appSchema)}`);
  return legacy;
}

/**
 * An autovacuum of a legacy table holds a lock that the cutover's SHARE lock waits for until PostgreSQL cancels
 * the worker, one deadlock_timeout (1 s by default) after the request: a 1,002 ms lock wait in a 1,055 ms
 * freeze (bench --live, scale 1). Where the role may set it (a superuser; GRANT SET ON PARAMETER on 15+) it
 * is 100 ms for the cutover; elsewhere (RDS's master user) the default stays and such a wait can add up to it.
 */
async function withFastAutovacuumCancel<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  const set = await client.query(`SET deadlock_timeout = '100ms'`).then(() => true, () => false);
  try {
    return await fn();
  } finally {
    if (set) await client.query('RESET deadlock_timeout').catch(() => undefined);
  }
}

export function cutoverRun(o: CutoverOptions): Promise<CutoverOutcome> {
  return withFastAutovacuumCancel(o.client, () => cutoverLocked(o));
}

async function cutoverLocked(o: CutoverOptions): Promise<CutoverOutcome> {
  const appSchema = o.appSchema ?? 'public';
  const run = await resolveRun(o);
  const legacySchema = legacySchemaName(run.runId);
  const existing = run.cutover as StoredCutover | null;
  if (existing?.status === 'cut-over') return { status: 'already-cut-over', runId: run.runId, legacySchema: existing.legacySchema, moved: [] };
  const verification = run.verification as VerificationResult | null;
  if (!verification?.passed) {
    throw new CutoverError(`Run ${run.runId} has ${verification ? 'failed' : 'not passed'} verification: cutover refused. ${verification ? 'Fix the differences it reports and migrate again.' : 'Let the run finish (Verify) first.'}`);
  }
  await assertNoOtherLease(o.client, o.targetSchema, run.runId);
  const plan = run.plan as Plan;
  // The legacy tables in this database (none when the target is another database than the source).
  const sourceHere = await tablesIn(o.client, plan.sourceSchema);
  const read = readTables(plan).filter((t) => sourceHere.has(t));
  const capture = await readCapture(o.client, run.runId);
  if (capture && !o.hashPasswords) throw new CutoverError(`Run ${run.runId} is live: its cutover must catch up the last changes (internal: no password hasher given).`);
  const engine: EngineRun = { runId: run.runId, sourceSchema: run.sourceSchema, targetSchema: o.targetSchema, runTime: run.runTime, batchSize: 200_000, live: true };
  // Catch up once more before freezing: under the lock only the changes of these last moments are left,
  // so the freeze depends on the write rate, not on how long ago the last catch-up ran.
  if (capture) await catchUp({ client: o.client, run: engine, plan, hashPasswords: o.hashPasswords!, deadline: Date.now() + 60_000 });
  try {
    return await withTransaction(o.client, async () => {
      await setLockTimeout(o.client, o.lockTimeoutMs ?? 10_000);
      // The write freeze: SHARE blocks the application's INSERT/UPDATE/DELETE (and waits for those in
      // flight, up to the lock timeout), not its reads. From here no change can reach the legacy tables.
      // The freeze starts with the lock request: the application's new writes queue behind it while it waits.
      const frozenAt = Date.now();
      const phases: Record<string, number> = {};
      let mark = frozenAt;
      const phase = (name: string) => {
        const now = Date.now();
        phases[name] = now - mark;
        mark = now;
      };
      if (read.length) await o.client.query(`LOCK TABLE ${read.map((t) => qualified(plan.sourceSchema, t)).join(', ')} IN SHARE MODE`);
      phase('lockMs');
      let caughtUp: number | undefined;
      if (capture) {
        const changed = new Map<string, Set<number>>();
        caughtUp = await drainInTransaction({ client: o.client, run: engine, plan, hashPasswords: o.hashPasswords! }, changed);
        phase('catchUpMs');
        const problems = await changedKeysProblems(o.client, engine, plan, changed);
        phase('checkMs');
        if (problems.length) {
          throw new CutoverError(`After the last catch-up under the write lock, changed rows of run ${run.runId} are not accounted for exactly once (${problems.join('; ')}). Cutover refused; nothing was changed. Catch up again (tracetrack-migrate catch-up --run-id ${run.runId}) and verify; report this if it persists.`);
        }
        await removeCapture(o.client, run.runId);
        phase('removeCaptureMs');
      } else {
        await assertSourceUnchanged(o.client, run, plan, verification);
        phase('checkMs');
      }
      const legacy = await swapTables(o, plan, read, appSchema, legacySchema);
      const seq = await o.client.query(`SELECT last_value::bigint AS last, is_called FROM ${qualified(appSchema, 'audit_log_id_seq')}`);
      const counts = Object.fromEntries(Object.entries(verification.tables).map(([k, v]) => [k, { migrated: v.migrated, rejected: v.rejected, derived: v.derived }]));
      phase('swapMs');
      const writeFreezeMs = Date.now() - frozenAt;
      const audit = await o.client.query(
        `INSERT INTO ${qualified(appSchema, 'audit_log')} ("timestamp", action, entity_type, details)
         VALUES (now() AT TIME ZONE 'utc', 'data_migration', 'migration', $1) RETURNING id`,
        [JSON.stringify({ runId: run.runId, legacySchema, counts, writeFreezeMs, freezePhases: phases, live: capture !== null, ...(caughtUp !== undefined ? { caughtUpAtCutover: caughtUp } : {}) })],
      );
      const record: StoredCutover = {
        status: 'cut-over', appSchema, legacySchema, at: new Date().toISOString(), movedLegacy: legacy,
        auditLogId: Number(audit.rows[0].id),
        auditSequence: { last: Number(seq.rows[0].last), isCalled: seq.rows[0].is_called },
        writeFreezeMs, freezePhases: phases, live: capture !== null,
      };
      // From here the application's writes into the new tables are counted, for a rollback to account for.
      for (const sql of renderCreateGuard(o.targetSchema, appSchema, run.runId)) await o.client.query(sql);
      await updateRun(o.client, o.targetSchema, run.runId, { cutover: record, status: 'cut-over' });
      return { status: 'cut-over' as const, runId: run.runId, legacySchema, moved: [...legacy, ...TARGET_TABLES], writeFreezeMs, freezePhases: phases, ...(caughtUp !== undefined ? { caughtUp } : {}) };
    });
  } catch (err) {
    if (err instanceof CutoverError || err instanceof LeaseHeldError || (err as Error).name === 'CatchUpRefusedError') throw err;
    lockFailure(err, `Cutover of run ${run.runId}`);
  }
}

/**
 * A rollback hands the legacy tables back to the application: what it wrote into the new tables since the cutover
 * would no longer be in its tables. Refused, saying exactly what, unless the operator accepts it (the rows stay in
 * the target schema, to be copied back by hand).
 */
async function assertNothingWrittenSince(o: CutoverOptions, runId: string, appSchema: string): Promise<void> {
  if (o.acceptNewWrites) return;
  // The new tables are locked against writes for the rest of the check (the rollback holds them until it commits).
  await o.client.query(`LOCK TABLE ${TARGET_TABLES.map((t) => qualified(appSchema, t)).join(', ')} IN SHARE MODE`);
  const exists = await o.client.query('SELECT to_regclass($1) IS NOT NULL AS ok', [qualified(o.targetSchema, AFTER_CUTOVER_TABLE)]);
  if (!exists.rows[0].ok) return;
  const written = (await o.client.query(renderWrittenSinceCutover(o.targetSchema), [runId])).rows;
  if (written.length === 0) return;
  const byTable = new Map<string, string[]>();
  for (const w of written) byTable.set(w.table_name, [...(byTable.get(w.table_name) ?? []), `${w.rows} ${w.op}`]);
  const what = [...byTable].map(([t, ops]) => `${t}: ${ops.join(', ')}`).join('; ');
  throw new CutoverError(
    `Since the cutover of run ${runId} the application wrote into the new tables (${what} rows). A rollback gives it the legacy tables back, ` +
      `which do not have those writes: refused, nothing was changed. Copy them into the legacy tables (schema "${legacySchemaName(runId)}") first, ` +
      `or roll back anyway with --accept-new-writes (the new tables, with those rows, go back to schema "${o.targetSchema}").`,
  );
}

export async function rollbackRun(o: CutoverOptions): Promise<CutoverOutcome> {
  const run = await resolveRun(o);
  const cut = run.cutover as StoredCutover | null;
  if (cut?.status !== 'cut-over') {
    // A live run that was never cut over: rolling it back ends its capture.
    await withTransaction(o.client, () => removeCapture(o.client, run.runId));
    return { status: 'not-cut-over', runId: run.runId, legacySchema: cut?.legacySchema ?? legacySchemaName(run.runId), moved: [] };
  }
  const appSchema = cut.appSchema;
  try {
    return await withTransaction(o.client, async () => {
      await setLockTimeout(o.client, o.lockTimeoutMs ?? 10_000);
      await assertNothingWrittenSince(o, run.runId, appSchema);
      for (const sql of renderDropGuard(o.targetSchema, appSchema)) await o.client.query(sql);
      if (cut.auditLogId !== null) {
        await o.client.query(`DELETE FROM ${qualified(appSchema, 'audit_log')} WHERE id = $1 AND action = 'data_migration'`, [cut.auditLogId]);
      }
      if (cut.auditSequence) {
        await o.client.query('SELECT setval($1::regclass, $2, $3)', [qualified(appSchema, 'audit_log_id_seq'), cut.auditSequence.last, cut.auditSequence.isCalled]);
      }
      for (const t of TARGET_TABLES) await o.client.query(`ALTER TABLE ${qualified(appSchema, t)} SET SCHEMA ${id(o.targetSchema)}`);
      for (const t of cut.movedLegacy) await o.client.query(`ALTER TABLE ${qualified(cut.legacySchema, t)} SET SCHEMA ${id(appSchema)}`);
      await o.client.query(`DROP SCHEMA IF EXISTS ${id(cut.legacySchema)} RESTRICT`);
      await updateRun(o.client, o.targetSchema, run.runId, {
        cutover: { ...cut, status: 'rolled-back', at: new Date().toISOString() },
        status: 'rolled-back',
      });
      return { status: 'rolled-back' as const, runId: run.runId, legacySchema: cut.legacySchema, moved: [...TARGET_TABLES, ...cut.movedLegacy] };
    });
  } catch (err) {
    if (err instanceof CutoverError) throw err;
    lockFailure(err, `Rollback of run ${run.runId}`);
  }
}
