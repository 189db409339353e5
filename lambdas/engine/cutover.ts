import type pg from 'pg';
import { CutoverError, LeaseHeldError } from '../core/errors';
import type { Plan } from '../core/planner';
import { TARGET_TABLES } from '../core/rules';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import type { VerificationResult } from '../core/verify';
import { toMigrationError, withTransaction } from '../io/pg';
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
  /** How long to wait for the tables' locks before failing (default 10 s). */
  readonly lockTimeoutMs?: number;
}

export interface CutoverOutcome {
  readonly status: 'cut-over' | 'already-cut-over' | 'rolled-back' | 'not-cut-over';
  readonly runId: string;
  readonly legacySchema: string;
  readonly moved: string[];
}

interface StoredCutover extends CutoverRecord {
  readonly auditLogId: number | null;
  readonly auditSequence: { last: number; isCalled: boolean } | null;
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

export async function cutoverRun(o: CutoverOptions): Promise<CutoverOutcome> {
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
  const read = [...new Set(plan.tables.flatMap((t) => t.sources.map((s) => s.table)))];
  try {
    return await withTransaction(o.client, async () => {
      await setLockTimeout(o.client, o.lockTimeoutMs ?? 10_000);
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
      const seq = await o.client.query(`SELECT last_value::bigint AS last, is_called FROM ${qualified(appSchema, 'audit_log_id_seq')}`);
      const counts = Object.fromEntries(Object.entries(verification.tables).map(([k, v]) => [k, { migrated: v.migrated, rejected: v.rejected, derived: v.derived }]));
      const audit = await o.client.query(
        `INSERT INTO ${qualified(appSchema, 'audit_log')} ("timestamp", action, entity_type, details)
         VALUES (now() AT TIME ZONE 'utc', 'data_migration', 'migration', $1) RETURNING id`,
        [JSON.stringify({ runId: run.runId, legacySchema, counts })],
      );
      const record: StoredCutover = {
        status: 'cut-over', appSchema, legacySchema, at: new Date().toISOString(), movedLegacy: legacy,
        auditLogId: Number(audit.rows[0].id),
        auditSequence: { last: Number(seq.rows[0].last), isCalled: seq.rows[0].is_called },
      };
      await updateRun(o.client, o.targetSchema, run.runId, { cutover: record, status: 'cut-over' });
      return { status: 'cut-over' as const, runId: run.runId, legacySchema, moved: [...legacy, ...TARGET_TABLES] };
    });
  } catch (err) {
    if (err instanceof CutoverError || err instanceof LeaseHeldError) throw err;
    lockFailure(err, `Cutover of run ${run.runId}`);
  }
}

export async function rollbackRun(o: CutoverOptions): Promise<CutoverOutcome> {
  const run = await resolveRun(o);
  const cut = run.cutover as StoredCutover | null;
  if (cut?.status !== 'cut-over') return { status: 'not-cut-over', runId: run.runId, legacySchema: cut?.legacySchema ?? legacySchemaName(run.runId), moved: [] };
  const appSchema = cut.appSchema;
  try {
    return await withTransaction(o.client, async () => {
      await setLockTimeout(o.client, o.lockTimeoutMs ?? 10_000);
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
