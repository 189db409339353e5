import type pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { CutoverError, InputError, PermissionError, VerificationFailedError } from '../core/errors';
import { parseMappingFile, type MappingOverrides } from '../core/mapping-file';
import { renderPlanText, type Plan } from '../core/planner';
import { TARGET_TABLES } from '../core/rules';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import { renderFailures, type VerificationResult } from '../core/verify';
import type {
  AnalyseResult,
  ExecutionInput,
  MigrateStepEvent,
  MigrateStepResult,
  PreflightEvent,
  PreflightResult,
  ReportResult,
  CutoverResult,
  CatchUpResult,
  RunContext,
  RunEvent,
  VerifyResult,
} from '../handlers/contract';
import { putJsonObject, readObjectText } from '../io/backup';
import { readTableNames } from '../io/catalog';
import { describeDatabase, toMigrationError, withClient, withTransaction, type DatabaseConfig } from '../io/pg';
import { analyseSource, assertPlan } from './analyse';
import { createTargetTables, runMigrateStep, type EngineRun, type PasswordHasher, type Progress } from './migrate';
import { exportRejects, buildReport } from './report';
import {
  acquireLease,
  assertRunId,
  ensureInternalTables,
  newRunId,
  readRun,
  recordRun,
  recordStep,
  releaseLease,
  renewLease,
  updateRun,
} from './runs';
import { verifyRun } from './verify';
import { assertNoOtherCapture, captureStatus, installCapture, readCapture } from './capture';
import { catchUp, caughtUpPosition, drainInTransaction } from './catchup';
import { sourceFingerprints } from './cutover';
import { cutoverRun } from './cutover';
import { compareStaged, dropStaging, runStageStep, stagingSchema } from './stage';

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
  readonly hashPasswords: PasswordHasher;
  /** Who runs the tasks (execution name, or `local`). */
  readonly holder?: string;
  readonly onProgress?: (p: Progress) => void;
  readonly log?: (line: string) => void;
}

export const DEFAULT_BATCH_SIZE = 200_000;
const IDENT = /^[A-Za-z_][A-Za-z0-9_$ -]{0,62}$/;

/** Validates the execution input; every problem is reported at once. */
export function resolveExecutionInput(input: unknown, fallbackRunId: () => string): Omit<RunContext, 'runTime' | 'crossDatabase'> {
  const raw = (input ?? {}) as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof input !== 'object' || input === null || Array.isArray(input)) problems.push('the input must be a JSON object');
  const known = ['runId', 'sourceSchema', 'targetSchema', 'tables', 'skipTables', 'batchSize', 'cutover', 'dryRun', 'mappingKey', 'appSchema', 'legacyJsonBackup', 'recomputeSummaries', 'live'];
  for (const k of Object.keys(raw)) if (!known.includes(k)) problems.push(`unknown field "${k}" (allowed: ${known.join(', ')})`);
  const str = (k: string, def: string) => {
    const v = raw[k];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' || !IDENT.test(v)) problems.push(`"${k}" must be a schema name (letters, digits, _; at most 63)`);
    return String(v);
  };
  const list = (k: string): string[] | null => {
    const v = raw[k];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      problems.push(`"${k}" must be a list of table names`);
      return null;
    }
    return v as string[];
  };
  const bool = (k: string) => {
    const v = raw[k];
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') problems.push(`"${k}" must be true or false`);
    return v === true;
  };
  let runId = raw.runId === undefined || raw.runId === null ? '' : String(raw.runId);
  if (!runId) runId = fallbackRunId();
  try {
    assertRunId(runId);
  } catch (e) {
    problems.push((e as Error).message);
  }
  const tables = list('tables');
  for (const t of tables ?? []) if (!(TARGET_TABLES as readonly string[]).includes(t)) problems.push(`"tables" has "${t}", not a target table (${TARGET_TABLES.join(', ')})`);
  const batchSize = raw.batchSize === undefined || raw.batchSize === null ? DEFAULT_BATCH_SIZE : Number(raw.batchSize);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 5_000_000) problems.push('"batchSize" must be a whole number from 1 to 5,000,000');
  const mappingKey = raw.mappingKey === undefined || raw.mappingKey === null ? null : String(raw.mappingKey);
  const ctx = {
    runId,
    sourceSchema: str('sourceSchema', 'public'),
    targetSchema: str('targetSchema', 'tracetrack'),
    appSchema: str('appSchema', 'public'),
    tables,
    skipTables: list('skipTables') ?? [],
    batchSize,
    cutover: bool('cutover'),
    dryRun: bool('dryRun'),
    legacyJsonBackup: bool('legacyJsonBackup'),
    recomputeSummaries: bool('recomputeSummaries'),
    live: bool('live'),
    mappingKey,
    prefix: `runs/${runId}/`,
  };
  if (ctx.live && ctx.dryRun) problems.push('"live" and "dryRun" exclude each other (a dry run writes nothing, a live run installs change capture)');
  if (ctx.sourceSchema === ctx.targetSchema) problems.push(`"targetSchema" must differ from "sourceSchema" (both are "${ctx.sourceSchema}")`);
  if (problems.length) {
    throw new InputError(`The execution input has ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\nFix the input and start a new execution.`);
  }
  return ctx;
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

async function assertSourceReadable(client: pg.ClientBase, schema: string): Promise<string[]> {
  const ns = await client.query(`SELECT has_schema_privilege(current_user, n.oid, 'USAGE') AS usage FROM pg_namespace n WHERE n.nspname = $1`, [schema]);
  if (!ns.rows[0]) throw new InputError(`The source schema "${schema}" does not exist. Check --source-schema / "sourceSchema".`);
  if (!ns.rows[0].usage) throw new PermissionError(`The role may not use schema "${schema}": GRANT USAGE ON SCHEMA ${schema} TO <role>.`);
  const tables = await readTableNames(client, schema);
  const denied = await client.query(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind IN ('r','p') AND NOT has_table_privilege(current_user, c.oid, 'SELECT') ORDER BY 1`,
    [schema],
  );
  if (denied.rows.length) {
    throw new PermissionError(`The role may not read ${denied.rows.map((r) => `"${r.relname}"`).join(', ')} in schema "${schema}": GRANT SELECT ON ALL TABLES IN SCHEMA ${schema} TO <role>, then redrive.`);
  }
  await assertEveryRowVisible(client, schema);
  return largestFirst(client, schema, tables);
}

/**
 * Row-level security would hide rows from the migration: refused, naming each table and the fix. A
 * policy applies unless the role is a superuser, has BYPASSRLS, or owns the table (and it is not FORCEd)
 * — PostgreSQL's own rule (check_enable_rls). Every session also runs with row_security=off, so a read
 * that a policy would filter fails rather than returning part of a table.
 */
async function assertEveryRowVisible(client: pg.ClientBase, schema: string): Promise<void> {
  const r = await client.query<{ relname: string; forced: boolean; owner: string; role: string }>(
    `SELECT c.relname, c.relforcerowsecurity AS forced, pg_get_userbyid(c.relowner) AS owner, current_user::text AS role
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles me ON me.rolname = current_user
      WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relrowsecurity
        AND NOT (me.rolsuper OR me.rolbypassrls)
        AND (c.relforcerowsecurity OR NOT pg_has_role(current_user, c.relowner, 'USAGE'))
      ORDER BY 1`,
    [schema],
  );
  if (r.rows.length === 0) return;
  const role = r.rows[0]!.role;
  const tables = r.rows.map((x) => `"${x.relname}"${x.forced ? ' (FORCE ROW LEVEL SECURITY)' : ''}`).join(', ');
  const first = r.rows[0]!;
  throw new PermissionError(
    `Row-level security would hide rows of ${tables} in schema "${schema}" from role "${role}": the migration must read every row. ` +
      `Either ALTER ROLE ${escapeIdentifier(role)} BYPASSRLS (as a superuser), or run as the tables' owner (${escapeIdentifier(first.owner)}${r.rows.some((x) => x.forced) ? '; forced tables also need ALTER TABLE … NO FORCE ROW LEVEL SECURITY' : ''}), ` +
      `or give the role a policy that shows it every row (CREATE POLICY migrate_read_all ON ${qualified(schema, first.relname)} FOR SELECT TO ${escapeIdentifier(role)} USING (true), per table). Then start the run again.`,
  );
}

/**
 * The backup Map runs a few tables at a time: starting with the largest keeps the biggest table off the
 * end of the phase (at scale 1, alphabetical order started the 3,000,000-row scan table last).
 */
async function largestFirst(client: pg.ClientBase, schema: string, tables: string[]): Promise<string[]> {
  const r = await client.query<{ relname: string; bytes: string }>(
    `SELECT c.relname,
            (CASE WHEN c.relkind = 'p' THEN (SELECT COALESCE(sum(pg_relation_size(p.relid)), 0) FROM pg_partition_tree(c.oid) p)
                  ELSE pg_relation_size(c.oid) END)::bigint AS bytes
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relname = ANY($2::text[]) AND c.relkind IN ('r', 'p')`,
    [schema, tables],
  );
  const bytes = new Map(r.rows.map((row) => [row.relname, Number(row.bytes)]));
  return [...tables].sort((a, b) => (bytes.get(b) ?? 0) - (bytes.get(a) ?? 0) || (a < b ? -1 : a > b ? 1 : 0));
}

async function assertTargetWritable(client: pg.ClientBase, schema: string): Promise<void> {
  const r = await client.query(
    `SELECT has_database_privilege(current_user, current_database(), 'CREATE') AS db_create,
            (SELECT has_schema_privilege(current_user, n.oid, 'CREATE') FROM pg_namespace n WHERE n.nspname = $1) AS schema_create`,
    [schema],
  );
  const { db_create: dbCreate, schema_create: schemaCreate } = r.rows[0];
  if (schemaCreate === null && !dbCreate) {
    throw new PermissionError(`The target role may not create schema "${schema}" in database ${(await client.query('SELECT current_database() AS d')).rows[0].d}: GRANT CREATE ON DATABASE <db> TO <role> (or create the schema and grant CREATE on it), then redrive.`);
  }
  if (schemaCreate === false) throw new PermissionError(`The target role may not create tables in schema "${schema}": GRANT CREATE ON SCHEMA ${schema} TO <role>, then redrive.`);
}

/** Preflight: validate the input, connect, check privileges, take the lease, record the run. */
export async function preflightTask(event: PreflightEvent, deps: TaskDeps): Promise<PreflightResult> {
  const base = resolveExecutionInput(event.input as ExecutionInput, () => (event.executionName && /^[A-Za-z0-9]/.test(event.executionName) ? event.executionName.slice(0, 63) : newRunId()));
  const source = await deps.source();
  const backupTables = await withClient(source, (c) => assertSourceReadable(c, base.sourceSchema), { statementTimeoutMs: 60_000 });
  let runTime = new Date().toISOString().replace('Z', '');
  const target = await deps.target();
  const crossDatabase = !sameDatabase(source, target);
  if (base.live && crossDatabase) {
    throw new InputError(`A live run ("live": true) needs the target schema in the source database: catch-up re-derives changed rows by reading the source tables where the target is. Use a target schema in the source database, or run without "live" while the application is stopped.`);
  }
  if (!base.dryRun) {
    runTime = await withClient(target, async (c) => {
      await assertTargetWritable(c, base.targetSchema);
      await ensureInternalTables(c, base.targetSchema);
      const cut = await c.query(
        `SELECT run_id, cutover->>'at' AS at FROM ${schemaTable(base.targetSchema, '_migration_run')} WHERE cutover->>'status' = 'cut-over' LIMIT 1`,
      );
      if (cut.rows[0]) {
        throw new CutoverError(`Run ${cut.rows[0].run_id} was cut over at ${cut.rows[0].at}: the new tables now live in the application schema. Roll it back first (tracetrack-migrate rollback --run-id ${cut.rows[0].run_id}) or use another target schema.`);
      }
      // A capture another run left behind (crashed, never cut over or abandoned) is reported before anything is taken.
      await assertNoOtherCapture(c, base.runId);
      await acquireLease(c, base.targetSchema, base.runId, deps.holder ?? 'local');
      const rec = await recordRun(c, base.targetSchema, { runId: base.runId, sourceSchema: base.sourceSchema, runTime });
      // Before Backup reads a row: from here on every write to a source table is in the change log.
      if (base.live) await installCapture(c, { runId: base.runId, sourceSchema: base.sourceSchema, targetSchema: base.targetSchema, tables: backupTables });
      await recordStep(c, base.targetSchema, base.runId, 'preflight', { status: 'done', at: new Date().toISOString(), source: describeDatabase(source), target: describeDatabase(target) });
      return rec.runTime;
    });
  }
  deps.log?.(`Preflight: run ${base.runId}, ${backupTables.length} source tables in "${base.sourceSchema}"${base.dryRun ? ' (dry run)' : ''}`);
  return { run: { ...base, runTime, crossDatabase }, backupTables };
}

function sameDatabase(a: DatabaseConfig, b: DatabaseConfig): boolean {
  const host = (h: string) => (h === 'localhost' || h === '::1' ? '127.0.0.1' : h);
  return host(a.host) === host(b.host) && a.port === b.port && a.database === b.database;
}

/** Where the migration reads the source tables in the target database. */
function readSchemaOf(run: RunContext): string | undefined {
  return run.crossDatabase ? stagingSchema(run.targetSchema) : undefined;
}

function schemaTable(schema: string, table: string): string {
  return `"${schema.replace(/"/g, '""')}"."${table.replace(/"/g, '""')}"`;
}

async function readOverrides(deps: TaskDeps, run: RunContext): Promise<MappingOverrides | undefined> {
  if (!run.mappingKey) return undefined;
  const text = await readObjectText(deps.s3, deps.bucket, run.mappingKey);
  if (text === null) throw new InputError(`The mapping file s3://${deps.bucket}/${run.mappingKey} does not exist.`);
  return parseMappingFile(text, `mapping file s3://${deps.bucket}/${run.mappingKey}`);
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
  const steps = run.crossDatabase ? ['stage', ...plan.steps] : plan.steps;
  return { planKey, steps, decisions: plan.decisions.length, warnings: plan.warnings.length };
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
    await createTargetTables(c, run.targetSchema);
    await recordStep(c, run.targetSchema, run.runId, 'create-schema', { status: 'done', at: new Date().toISOString() });
  });
}

export async function migrateStepTask(event: MigrateStepEvent, deps: TaskDeps): Promise<MigrateStepResult> {
  const { run, step } = event;
  const deadline = Date.now() + deps.timeBudgetMs;
  return withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    if (step === 'stage') {
      const r = await withClient(await deps.source(), (src) => runStageStep({ source: src, target: c, run: engineRun(run), plan, deadline }));
      return { step, done: r.done, cursor: r.cursor, migrated: r.migrated, rejected: 0, batches: r.batches };
    }
    const r = await runMigrateStep({ client: c, run: engineRun(run), plan, deadline, hashPasswords: deps.hashPasswords, onProgress: deps.onProgress, readSchema: readSchemaOf(run) }, step);
    return { step, done: r.done, cursor: r.cursor, migrated: r.migrated, rejected: r.rejected, batches: r.batches };
  });
}

/** Verify: all checks, the result to S3 and the run record; fails the execution when any check fails. */
export async function verifyTask(event: RunEvent, deps: TaskDeps): Promise<VerifyResult> {
  const { run } = event;
  const { result, reportKey } = await withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    const verifyAll = async () => {
      if (!run.live) {
        // The source as verified, to refuse a cutover over a source that changed since (no capture to tell which
        // rows). Same database only: a cross-database cutover cannot see (or lock) the source tables.
        const fingerprints = run.crossDatabase ? null : await sourceFingerprints(c, run.sourceSchema, plan);
        return { result: await verifyRun({ client: c, run: engineRun(run), plan, readSchema: readSchemaOf(run) }), live: null, fingerprints };
      }
      // Live: one snapshot. The changes it can see are caught up first, in the same transaction, so the
      // target is checked against the source as of that capture position; later writes stay in the log.
      return withTransaction(c, async () => {
        await c.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        const drained = await drainInTransaction({ client: c, run: engineRun(run), plan, hashPasswords: deps.hashPasswords });
        const position = await caughtUpPosition(c, engineRun(run));
        const result = await verifyRun({ client: c, run: engineRun(run), plan, readSchema: readSchemaOf(run) });
        return { result, live: { position, drained }, fingerprints: null };
      });
    };
    const verified = await verifyAll();
    let result = verified.result;
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
    if (verified.live) result = { ...result, capturePosition: verified.live.position };
    if (verified.fingerprints) result = { ...result, sourceFingerprints: verified.fingerprints };
    const reportKey = runKey(deps, run, 'verification.json');
    await putJsonObject(deps.s3, deps.bucket, reportKey, result, deps.kmsKeyId);
    await updateRun(c, run.targetSchema, run.runId, { verification: result, status: result.passed ? 'verified' : 'verification-failed' });
    await recordStep(c, run.targetSchema, run.runId, 'verify', {
      status: 'done', at: new Date().toISOString(), passed: result.passed,
      ...(verified.live ? { capturePosition: verified.live.position, caughtUpInVerify: verified.live.drained, capture: await captureStatus(c, run.runId) } : {}),
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
    const capture = run.live ? await readCapture(c, run.runId) : null;
    const lag = run.live ? await captureStatus(c, run.runId) : null;
    const live = run.live
      ? { verifiedAtPosition: verification?.capturePosition ?? null, pending: lag!.pending, oldestSeconds: lag!.oldestSeconds, captureOn: capture !== null }
      : null;
    const report = await buildReport({ deps, run, record: rec, verification, rejectsKey, rejects, live });
    const reportKey = runKey(deps, run, 'report.json');
    await putJsonObject(deps.s3, deps.bucket, reportKey, report, deps.kmsKeyId);
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
