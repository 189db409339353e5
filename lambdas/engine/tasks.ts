import type pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { CutoverError, InputError, PermissionError, VerificationFailedError } from '../core/errors';
import { parseMappingFile, type MappingOverrides } from '../core/mapping-file';
import { renderPlanText, type Plan } from '../core/planner';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import { deferredUniqueKeyTables } from '../core/sql/mapping';
import { renderFailures, type VerificationResult } from '../core/verify';
import type {
  AnalyseResult,
  BackupTableEvent,
  BackupTableResult,
  FinalizeBackupResult,
  ExecutionInput,
  MigrateStepEvent,
  MigrateStepResult,
  PreflightEvent,
  PreflightResult,
  PlanVerifyResult,
  VerifyEvent,
  VerifyItemEvent,
  VerifyItemResult,
  ReportResult,
  CutoverResult,
  CatchUpResult,
  RunContext,
  RunEvent,
  VerifyResult,
} from '../core/contract';
import { BACKUP_PART_CONCURRENCY, backupTable, finalizeBackup } from '../io/backup';
import { listObjectKeys, putJsonObject, putTextObject, readObjectText } from '../io/s3';
import { writeLegacyJsonBackup } from '../io/legacy-json-backup';
import { readTableInfo, readTableNames } from '../io/catalog';
import { assertSourceReadable, assertTargetWritable } from '../io/privileges';
import { resolveExecutionInput } from '../core/execution-input';
import { graphOptionsOf, hashingCompanions, parseStageStep, planWaves, stagedTables, stageStep, stepReads } from '../core/work-graph';
import { connect, describeDatabase, toMigrationError, withClient, type DatabaseConfig } from '../io/pg';
import { analyseSource, assertPlan } from './analyse';
import { createTargetTables, runMigrateStep, type EngineRun, type PasswordHasher, type Progress } from './migrate';
import { exportRejects, buildReport, readRejectGroups } from './report';
import { renderReportHtml } from '../core/report-html';
import {
  acquireLease,
  ensureInternalTables,
  internalTablesExist,
  markRunRunning,
  newRunId,
  readRun,
  recordRun,
  recordStep,
  releaseLease,
  renewLease,
  updateRun,
} from './runs';
import { assembleRun, planVerification, runVerifyItem, verifyAll, type VerifyOptions } from './verify';
import { runRetryStep, startRetryRound } from './retry-rejects';
import { assertNoOtherCapture, captureStatus, installCapture, readCapture } from './capture';
import { catchUp } from './catchup';
import { cutoverRun } from './cutover';
import { assertStaged, compareStaged, dropStaging, runStageStep, runStageTableStep, stagingSchema } from './stage';

/**
 * The workflow's tasks as plain functions over their dependencies. Lambda handlers and the local
 * runner are thin adapters over these; each task is idempotent (safe to redrive).
 */
export interface TaskDeps {
  readonly source: () => Promise<DatabaseConfig>;
  readonly target: () => Promise<DatabaseConfig>;
  readonly s3: S3Client;
  readonly bucket: string;
  /** Global key prefix, '' or ending in '/'. */
  readonly prefix: string;
  readonly kmsKeyId?: string;
  readonly timeBudgetMs: number;
  /** The run's concurrency when the execution input names none (default DEFAULT_CONCURRENCY). */
  readonly defaultConcurrency?: number;
  readonly hashPasswords: PasswordHasher;
  /** Who runs the tasks (execution name, or `local`). */
  readonly holder?: string;
  readonly onProgress?: (p: Progress) => void;
  readonly log?: (line: string) => void;
}

export function engineRun(run: RunContext): EngineRun {
  return {
    runId: run.runId, sourceSchema: run.sourceSchema, targetSchema: run.targetSchema, runTime: run.runTime, batchSize: run.batchSize,
    ...(run.live ? { live: true } : {}),
  };
}

function runKey(deps: TaskDeps, run: RunContext, name: string): string {
  return `${deps.prefix}${run.prefix}${name}`;
}

/** Preflight: validate the input, connect, check privileges, take the lease, record the run. */
export async function preflightTask(event: PreflightEvent, deps: TaskDeps): Promise<PreflightResult> {
  const base = resolveExecutionInput(
    event.input as ExecutionInput,
    () => (event.executionName && /^[A-Za-z0-9]/.test(event.executionName) ? event.executionName.slice(0, 63) : newRunId()),
    deps.defaultConcurrency,
  );
  const source = await deps.source();
  const backupTables = await withClient(source, (c) => assertSourceReadable(c, base.sourceSchema), { statementTimeoutMs: 60_000 });
  let runTime = new Date().toISOString().replace('Z', '');
  const target = await deps.target();
  const crossDatabase = !sameDatabase(source, target);
  if (base.cutover && !base.dryRun) await assertCutoverOwnership(deps, base, target);
  if (base.retryRejects && crossDatabase) {
    throw new InputError(`--retry-rejects works on runs in place (source and target in one database); run ${base.runId} migrates into another database. Rerun that migration with a new run id instead.`);
  }
  const { retryRejects, ...runBase } = base;
  let retry: RunContext['retry'];
  if (base.live && crossDatabase) {
    throw new InputError(`A live run ("live": true) needs the target schema in the source database: catch-up re-derives changed rows by reading the source tables where the target is. Use a target schema in the source database, or run without "live" while the application is stopped.`);
  }
  if (!base.dryRun) {
    runTime = await withClient(target, async (c) => {
      if (retryRejects) {
        const prior = (await internalTablesExist(c, base.targetSchema)) ? await readRun(c, base.targetSchema, base.runId) : null;
        if (!prior?.plan) {
          throw new InputError(`Run ${base.runId} has not migrated anything in schema "${base.targetSchema}", so it has no rejected rows to retry. Run it first (tracetrack-migrate run --run-id ${base.runId}), or check --run-id / --target-schema.`);
        }
      }
      await assertTargetWritable(c, base.targetSchema);
      await ensureInternalTables(c, base.targetSchema);
      const cut = await c.query(
        `SELECT run_id, cutover->>'at' AS at FROM ${qualified(base.targetSchema, '_migration_run')} WHERE cutover->>'status' = 'cut-over' LIMIT 1`,
      );
      if (cut.rows[0]) {
        throw new CutoverError(`Run ${cut.rows[0].run_id} was cut over at ${cut.rows[0].at}: the new tables now live in the application schema. Roll it back first (tracetrack-migrate rollback --run-id ${cut.rows[0].run_id}) or use another target schema.`);
      }
      // A capture another run left behind (crashed, never cut over or abandoned) is reported before anything is taken.
      await assertNoOtherCapture(c, base.runId);
      await acquireLease(c, base.targetSchema, base.runId, deps.holder ?? 'local');
      const rec = await recordRun(c, base.targetSchema, { runId: base.runId, sourceSchema: base.sourceSchema, runTime });
      await markRunRunning(c, base.targetSchema, base.runId);
      if (retryRejects) retry = await startRetryRound(c, base.targetSchema, base.runId);
      // Before Backup reads a row: from here on every write to a source table is in the change log.
      if (base.live) await installCapture(c, { runId: base.runId, sourceSchema: base.sourceSchema, targetSchema: base.targetSchema, tables: backupTables });
      await recordStep(c, base.targetSchema, base.runId, 'preflight', { status: 'done', at: new Date().toISOString(), source: describeDatabase(source), target: describeDatabase(target) });
      return rec.runTime;
    });
  }
  deps.log?.(`Preflight: run ${base.runId}, ${backupTables.length} source tables in "${base.sourceSchema}"${base.dryRun ? ' (dry run)' : ''}`);
  return { run: { ...runBase, runTime, crossDatabase, ...(retry ? { retry } : {}) }, backupTables };
}

/**
 * `--cutover` moves the legacy tables the plan reads (ALTER TABLE … SET SCHEMA), which only their owner
 * may do, and ownership cannot be granted. Checked before the backup, so the run does not fail at its end.
 */
async function assertCutoverOwnership(deps: TaskDeps, base: Omit<RunContext, 'runTime' | 'crossDatabase'>, target: DatabaseConfig): Promise<void> {
  const overrides = await readOverrides(deps, { ...base, runTime: '', crossDatabase: false });
  const { plan } = await withClient(await deps.source(), (c) =>
    analyseSource(c, { sourceSchema: base.sourceSchema, targetSchema: base.targetSchema, skipTables: base.skipTables, tables: base.tables, overrides }),
  );
  if (plan.sourceSchema !== base.appSchema) return;
  const read = [...new Set(plan.tables.flatMap((t) => t.sources.map((s) => s.table)))];
  const notOwned = await withClient(target, async (c) => {
    const r = await c.query<{ relname: string; owner: string; role: string }>(
      `SELECT c.relname, pg_get_userbyid(c.relowner) AS owner, current_user AS role
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')
          AND NOT pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1`,
      [base.appSchema, read],
    );
    return r.rows;
  });
  if (!notOwned.length) return;
  const role = notOwned[0]!.role;
  throw new PermissionError(
    `--cutover moves the legacy tables into a legacy schema, which only their owner may do, and role "${role}" does not own ` +
      `${notOwned.map((t) => `${qualified(base.appSchema, t.relname)} (owner ${t.owner})`).join(', ')}. Ownership cannot be granted: ` +
      `run as the owner, or as the owner (or a superuser) run\n${notOwned.map((t) => `  ALTER TABLE ${qualified(base.appSchema, t.relname)} OWNER TO ${escapeIdentifier(role)};`).join('\n')}\n` +
      `then rerun. (Without --cutover the migration needs no ownership; cut over later with tracetrack-migrate cutover.) Nothing was backed up or written yet.`,
  );
}

function sameDatabase(a: DatabaseConfig, b: DatabaseConfig): boolean {
  const host = (h: string) => (h === 'localhost' || h === '::1' ? '127.0.0.1' : h);
  return host(a.host) === host(b.host) && a.port === b.port && a.database === b.database;
}

/** Where the migration reads the source tables in the target database. */
function readSchemaOf(run: RunContext): string | undefined {
  return run.crossDatabase ? stagingSchema(run.targetSchema) : undefined;
}


async function readOverrides(deps: TaskDeps, run: RunContext): Promise<MappingOverrides | undefined> {
  if (!run.mappingKey) return undefined;
  const text = await readObjectText(deps.s3, deps.bucket, run.mappingKey);
  if (text === null) throw new InputError(`The mapping file s3://${deps.bucket}/${run.mappingKey} does not exist.`);
  return parseMappingFile(text, `mapping file s3://${deps.bucket}/${run.mappingKey}`);
}

/** BackupTable: one source table to S3, part by part, until the time budget is spent. */
export async function backupTableTask(event: BackupTableEvent, deps: TaskDeps): Promise<BackupTableResult> {
  const deadlineMs = Date.now() + deps.timeBudgetMs;
  const { run, cursor } = event;
  const source = await deps.source();
  const clientOptions = { applicationName: 'tracetrack-migrate:backup' };
  // A split table's parts are written BACKUP_PART_CONCURRENCY at a time, each on its own connection.
  const more = async () => {
    const client = await connect(source, clientOptions);
    return { client, release: () => client.end() };
  };
  return withClient(source, async (client) => {
    const table = await readTableInfo(client, run.sourceSchema, event.table);
    const progress = await backupTable({
      client, s3: deps.s3, bucket: deps.bucket, prefix: deps.prefix, runId: run.runId, table, cursor, deadlineMs, kmsKeyId: deps.kmsKeyId,
      connect: more, partConcurrency: BACKUP_PART_CONCURRENCY,
    });
    return { table: event.table, done: progress.done, cursor: progress.cursor, rows: progress.rows };
  }, clientOptions);
}

/** FinalizeBackup: the run's manifest, once every table of the source schema has finished (and the legacy JSON backup if asked). */
export async function finalizeBackupTask(event: RunEvent, deps: TaskDeps): Promise<FinalizeBackupResult> {
  const { run } = event;
  const source = await deps.source();
  const expectedTables = await withClient(source, (client) => readTableNames(client, run.sourceSchema));
  const { manifestKey, manifest } = await finalizeBackup({ s3: deps.s3, bucket: deps.bucket, prefix: deps.prefix, runId: run.runId, expectedTables, kmsKeyId: deps.kmsKeyId });
  const rows = manifest.tables.reduce((sum, t) => sum + t.rows, 0);
  if (!run.legacyJsonBackup) return { manifestKey, tables: manifest.tables.length, rows };
  // The seed's single-file JSON backup, once per run (a redrive finds it and writes no second one).
  const runPrefix = runKey(deps, run, '');
  let legacyJsonKey = (await listObjectKeys(deps.s3, deps.bucket, `${runPrefix}rds_backup_`))[0];
  if (!legacyJsonKey) {
    const out = await withClient(source, (client) => writeLegacyJsonBackup({ client, s3: deps.s3, bucket: deps.bucket, prefix: runPrefix, schema: run.sourceSchema, kmsKeyId: deps.kmsKeyId }));
    legacyJsonKey = out.key;
  }
  return { manifestKey, tables: manifest.tables.length, rows, legacyJsonKey };
}

/** Analyse: plan to S3 (JSON and text), and into the run record. Refuses a source it cannot map. */
export async function analyseTask(event: RunEvent, deps: TaskDeps): Promise<AnalyseResult> {
  const { run } = event;
  const overrides = await readOverrides(deps, run);
  const { plan } = await withClient(await deps.source(), (c) =>
    analyseSource(c, { sourceSchema: run.sourceSchema, targetSchema: run.targetSchema, skipTables: run.skipTables, tables: run.tables, overrides, recomputeSummaries: run.recomputeSummaries === true }),
  );
  const planKey = runKey(deps, run, 'plan.json');
  await putJsonObject(deps.s3, deps.bucket, planKey, plan, deps.kmsKeyId);
  await putJsonObject(deps.s3, deps.bucket, runKey(deps, run, 'analysis.json'), { text: renderPlanText(plan) }, deps.kmsKeyId);
  assertPlan(plan);
  if (!run.dryRun) {
    await withTarget(deps, run, async (c) => {
      await updateRun(c, run.targetSchema, run.runId, { plan });
      await recordStep(c, run.targetSchema, run.runId, 'analyse', { status: 'done', at: new Date().toISOString(), planKey });
    });
  }
  deps.log?.(`Analyse: ${plan.tables.length} target tables from ${plan.tables.flatMap((t) => t.sources).length} source tables; ${plan.warnings.length} warnings`);
  for (const w of plan.warnings) deps.log?.(`  warning: ${w}`);
  const steps = run.crossDatabase ? [...stagedTables(plan).map(stageStep), ...plan.steps] : plan.steps;
  const waves = planWaves(plan, graphOptionsOf(run));
  return { planKey, steps, waves, waveCount: waves.length, decisions: plan.decisions.length, warnings: plan.warnings.length };
}

/** Every task after Preflight works on the target under the run's lease. */
async function withTarget<T>(deps: TaskDeps, run: RunContext, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  return withClient(await deps.target(), async (c) => {
    await renewLease(c, run.targetSchema, run.runId);
    return fn(c);
  });
}

async function loadPlan(c: pg.ClientBase, run: RunContext): Promise<Plan> {
  const rec = await readRun(c, run.targetSchema, run.runId);
  if (!rec?.plan) throw new InputError(`Run ${run.runId} has no plan: the Analyse step has not finished. Redrive from Analyse.`);
  return rec.plan;
}

export async function createSchemaTask(event: RunEvent, deps: TaskDeps): Promise<void> {
  const { run } = event;
  await withTarget(deps, run, async (c) => {
    await createTargetTables(c, run.targetSchema, deferredUniqueKeyTables(await loadPlan(c, run), run.live === true));
    await recordStep(c, run.targetSchema, run.runId, 'create-schema', { status: 'done', at: new Date().toISOString() });
  });
}

export async function migrateStepTask(event: MigrateStepEvent, deps: TaskDeps): Promise<MigrateStepResult> {
  const { run, step } = event;
  const deadline = Date.now() + deps.timeBudgetMs;
  return withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    const staged = parseStageStep(step);
    if (staged !== null || step === 'stage') {
      const r = await withClient(await deps.source(), (src) => {
        const o = { source: src, target: c, run: engineRun(run), plan, deadline };
        return staged !== null ? runStageTableStep(o, staged) : runStageStep(o);
      });
      return { step, done: r.done, cursor: r.cursor, migrated: r.migrated, rejected: 0, batches: r.batches };
    }
    if (run.crossDatabase) await assertStaged(c, engineRun(run), step, stepReads(plan, step));
    const target = await deps.target();
    const options = {
      client: c, run: engineRun(run), plan, deadline, hashPasswords: deps.hashPasswords, onProgress: deps.onProgress, readSchema: readSchemaOf(run),
      concurrency: run.concurrency ?? 1,
      hashingBeside: hashingCompanions(planWaves(plan, graphOptionsOf(run)), step),
      openClient: async () => {
        const extra = await connect(target);
        return { client: extra, close: () => extra.end() };
      },
    };
    const r = run.retry ? await runRetryStep(options, step, run.retry) : await runMigrateStep(options, step);
    return { step, done: r.done, cursor: r.cursor, migrated: r.migrated, rejected: r.rejected, batches: r.batches };
  });
}

/** How Verify runs for this run: fingerprints without capture (same database only), catch-up in every chunk when live. */
function verifyOptions(c: pg.ClientBase, run: RunContext, plan: Plan, deps: TaskDeps): VerifyOptions {
  return {
    client: c, run: engineRun(run), plan, readSchema: readSchemaOf(run),
    // The source as verified, to refuse a cutover over a source that changed since (no capture to tell which
    // rows). Same database only: a cross-database cutover cannot see (or lock) the source tables.
    fingerprints: !run.live && !run.crossDatabase,
    // Live: each chunk catches up the changes its snapshot sees, then checks in that snapshot, so the target is
    // checked against the source as of a capture position; later writes stay in the log.
    ...(run.live ? { live: { hashPasswords: deps.hashPasswords } } : {}),
  };
}

/** PlanVerify: a new round of verification items; the workflow's Map runs them, Verify assembles the verdict. */
export async function planVerifyTask(event: RunEvent, deps: TaskDeps): Promise<PlanVerifyResult> {
  const { run } = event;
  const r = await withTarget(deps, run, async (c) => planVerification(verifyOptions(c, run, await loadPlan(c, run), deps)));
  deps.log?.(`PlanVerify: ${r.items.length} verification items`);
  return r;
}

/** VerifyItem: one item, chunk by chunk (each committed with its cursor), until done or the time budget is spent. */
export async function verifyItemTask(event: VerifyItemEvent, deps: TaskDeps): Promise<VerifyItemResult> {
  const { run, item } = event;
  const deadline = Date.now() + deps.timeBudgetMs;
  const r = await withTarget(deps, run, async (c) => runVerifyItem({ ...verifyOptions(c, run, await loadPlan(c, run), deps), deadline }, item));
  return { item, label: r.label, done: r.done, cursor: r.cursor, chunks: r.chunks };
}

/**
 * Verify: the verdict from the round's items (without a round: the whole verification in this invocation),
 * to S3 and the run record; fails the execution when any check fails.
 */
export async function verifyTask(event: VerifyEvent, deps: TaskDeps): Promise<VerifyResult> {
  const { run } = event;
  const { result, reportKey } = await withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    const o = verifyOptions(c, run, plan, deps);
    const { live, ...verified } = event.round ? await assembleRun(o, event.round) : await verifyAll(o);
    let result: VerificationResult = verified;
    if (run.crossDatabase) {
      const staged = await withClient(await deps.source(), (src) => compareStaged(src, c, engineRun(run), plan));
      const checks = [
        ...staged.map((t) => ({
          name: `staged:${t.table}`,
          passed: t.match,
          detail: t.match ? `${t.sourceRows} rows copied from the source database, content identical` : `source has ${t.sourceRows} rows, the staged copy ${t.stagedRows}, or their content differs: the source changed during the run, or the copy is incomplete`,
        })),
        ...result.checks,
      ];
      result = { ...result, checks, passed: checks.every((x) => x.passed) };
    }
    // Every item was checked in a snapshot of its own at a capture position; every change up to the highest was caught up.
    if (live) result = { ...result, capturePosition: live.positionMax };
    const reportKey = runKey(deps, run, 'verification.json');
    await putJsonObject(deps.s3, deps.bucket, reportKey, result, deps.kmsKeyId);
    await updateRun(c, run.targetSchema, run.runId, { verification: result, status: result.passed ? 'verified' : 'verification-failed' });
    await recordStep(c, run.targetSchema, run.runId, 'verify', {
      status: 'done', at: new Date().toISOString(), passed: result.passed,
      ...(live ? { capturePosition: live.positionMax, capturePositionFrom: live.positionMin, caughtUpInVerify: live.drained, capture: await captureStatus(c, run.runId) } : {}),
    });
    return { result, reportKey };
  });
  const failedChecks = result.checks.filter((x) => !x.passed).map((x) => x.name);
  deps.log?.(`Verify: ${result.checks.length - failedChecks.length}/${result.checks.length} checks passed`);
  if (!result.passed) {
    throw new VerificationFailedError(
      `Verification of run ${run.runId} failed (${failedChecks.length} of ${result.checks.length} checks):\n${renderFailures(result.checks)}\nThe full result is at s3://${deps.bucket}/${reportKey}. Nothing was cut over. Investigate, then rerun the migration.`,
    );
  }
  return { passed: true, reportKey, failedChecks };
}

/** Report: the run's JSON report and the reject store to S3; the run is completed and its lease released. */
export async function reportTask(event: RunEvent, deps: TaskDeps): Promise<ReportResult> {
  const { run } = event;
  return withTarget(deps, run, async (c) => {
    const rec = await readRun(c, run.targetSchema, run.runId);
    const verification = rec?.verification as VerificationResult | null;
    const rejectsKey = runKey(deps, run, 'rejects.jsonl.gz');
    const rejects = await exportRejects(c, run.targetSchema, run.runId, deps.s3, deps.bucket, rejectsKey, deps.kmsKeyId);
    const rejectGroups = await readRejectGroups(c, run.targetSchema, run.runId);
    const capture = run.live ? await readCapture(c, run.runId) : null;
    const lag = run.live ? await captureStatus(c, run.runId) : null;
    const live = run.live
      ? { verifiedAtPosition: verification?.capturePosition ?? null, pending: lag!.pending, oldestSeconds: lag!.oldestSeconds, captureOn: capture !== null }
      : null;
    const report = await buildReport({ deps, run, record: rec, verification, rejectsKey, rejects, rejectGroups, live });
    const reportKey = runKey(deps, run, 'report.json');
    await putJsonObject(deps.s3, deps.bucket, reportKey, report, deps.kmsKeyId);
    await putTextObject(deps.s3, deps.bucket, runKey(deps, run, 'report.html'), renderReportHtml(report, rec?.plan ?? null), 'text/html; charset=utf-8', deps.kmsKeyId);
    await updateRun(c, run.targetSchema, run.runId, { status: report.status, finished: true });
    await recordStep(c, run.targetSchema, run.runId, 'report', { status: 'done', at: new Date().toISOString(), reportKey });
    if (run.crossDatabase && report.status === 'completed') await dropStaging(c, run.targetSchema);
    await releaseLease(c, run.targetSchema, run.runId);
    return { runId: run.runId, status: report.status, reportKey, tables: report.tables };
  }).catch((err) => {
    throw toMigrationError(err, `Writing the report of run ${run.runId}`);
  });
}

/** Cutover (only when the execution input asks for it): one transaction, refused unless Verify passed. */
export async function cutoverTask(event: RunEvent, deps: TaskDeps): Promise<CutoverResult> {
  const { run } = event;
  const outcome = await withTarget(deps, run, (c) => cutoverRun({ client: c, targetSchema: run.targetSchema, appSchema: run.appSchema, runId: run.runId, hashPasswords: deps.hashPasswords }));
  deps.log?.(`Cutover: ${outcome.status}; legacy tables in "${outcome.legacySchema}"${outcome.writeFreezeMs !== undefined ? `; writes frozen for ${outcome.writeFreezeMs} ms` : ''}`);
  return {
    status: outcome.status === 'cut-over' ? 'cut-over' : 'already-cut-over', legacySchema: outcome.legacySchema,
    ...(outcome.writeFreezeMs !== undefined ? { writeFreezeMs: outcome.writeFreezeMs } : {}),
    ...(outcome.freezePhases ? { freezePhases: outcome.freezePhases } : {}),
  };
}

/** Changes pending below this count the run as caught up (the workflow's IsCaughtUp). */
export const CAUGHT_UP_CHANGES = 1000;

/** CatchUp (live runs): applies the captured changes within the time budget; the lag goes into the run record. */
export async function catchUpTask(event: RunEvent, deps: TaskDeps): Promise<CatchUpResult> {
  const { run } = event;
  const r = await withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    const r = await catchUp({ client: c, run: engineRun(run), plan, hashPasswords: deps.hashPasswords, deadline: Date.now() + deps.timeBudgetMs });
    await recordStep(c, run.targetSchema, run.runId, 'catch-up', { pending: r.pending, oldestSeconds: r.oldestSeconds, rate: Math.round(r.rate), lastAt: new Date().toISOString() });
    return r;
  });
  const caughtUp = r.pending < CAUGHT_UP_CHANGES;
  deps.log?.(`CatchUp: ${r.applied} changes applied (${Math.round(r.rate)}/s); ${r.pending} pending, oldest ${r.oldestSeconds.toFixed(1)} s${caughtUp ? ': caught up' : ''}`);
  return { caughtUp, applied: r.applied, pending: r.pending, oldestSeconds: r.oldestSeconds, position: r.position, rate: r.rate };
}
