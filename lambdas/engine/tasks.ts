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
  RunContext,
  RunEvent,
  VerifyResult,
} from '../handlers/contract';
import { putJsonObject, putTextObject, readObjectText } from '../io/backup';
import { readTableNames } from '../io/catalog';
import { describeDatabase, toMigrationError, withClient, type DatabaseConfig } from '../io/pg';
import { analyseSource, assertPlan } from './analyse';
import { createTargetTables, runMigrateStep, type EngineRun, type PasswordHasher, type Progress } from './migrate';
import { exportRejects, buildReport, readRejectGroups } from './report';
import { renderReportHtml } from '../core/report-html';
import {
  acquireLease,
  assertRunId,
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
import { verifyRun } from './verify';
import { runRetryStep, startRetryRound } from './retry-rejects';
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
export function resolveExecutionInput(input: unknown, fallbackRunId: () => string): Omit<RunContext, 'runTime' | 'crossDatabase'> & { readonly retryRejects?: true } {
  const raw = (input ?? {}) as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof input !== 'object' || input === null || Array.isArray(input)) problems.push('the input must be a JSON object');
  const known = ['runId', 'sourceSchema', 'targetSchema', 'tables', 'skipTables', 'batchSize', 'cutover', 'dryRun', 'mappingKey', 'appSchema', 'legacyJsonBackup', 'recomputeSummaries', 'retryRejects'];
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
    retryRejects: bool('retryRejects'),
    mappingKey,
    prefix: `runs/${runId}/`,
  };
  if (ctx.retryRejects && (raw.runId === undefined || raw.runId === null)) problems.push('"retryRejects" needs the "runId" of the run whose rejected rows are retried');
  if (ctx.retryRejects && ctx.dryRun) problems.push('"retryRejects" and "dryRun" exclude each other');
  if (ctx.sourceSchema === ctx.targetSchema) problems.push(`"targetSchema" must differ from "sourceSchema" (both are "${ctx.sourceSchema}")`);
  const { retryRejects, ...resolved } = ctx;
  if (problems.length) {
    throw new InputError(`The execution input has ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\nFix the input and start a new execution.`);
  }
  return { ...resolved, ...(retryRejects ? { retryRejects: true } : {}) };
}

export function engineRun(run: RunContext): EngineRun {
  return { runId: run.runId, sourceSchema: run.sourceSchema, targetSchema: run.targetSchema, runTime: run.runTime, batchSize: run.batchSize };
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
  const ro = await client.query(`SELECT current_setting('transaction_read_only') = 'on' AS read_only, pg_is_in_recovery() AS replica, current_user AS role`);
  if (ro.rows[0].read_only) {
    const { role, replica } = ro.rows[0];
    throw new PermissionError(
      replica
        ? `The target database is a read replica (hot standby): nothing can be written there. Pass --target (or TARGET_SECRET_ARN) with the primary; the replica can stay the --source. Then rerun.`
        : `Role "${role}" runs read-only transactions (default_transaction_read_only is on for it), but a migration writes its target schema "${schema}". ` +
          `Use a role that may write (ALTER ROLE ${escapeIdentifier(role)} SET default_transaction_read_only = off), or keep this role for --source only and pass --target with a writable role; then rerun.`,
    );
  }
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
  if (base.cutover && !base.dryRun) await assertCutoverOwnership(deps, base, target);
  if (base.retryRejects && crossDatabase) {
    throw new InputError(`--retry-rejects works on runs in place (source and target in one database); run ${base.runId} migrates into another database. Rerun that migration with a new run id instead.`);
  }
  const { retryRejects, ...runBase } = base;
  let retry: RunContext['retry'];
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
        `SELECT run_id, cutover->>'at' AS at FROM ${schemaTable(base.targetSchema, '_migration_run')} WHERE cutover->>'status' = 'cut-over' LIMIT 1`,
      );
      if (cut.rows[0]) {
        throw new CutoverError(`Run ${cut.rows[0].run_id} was cut over at ${cut.rows[0].at}: the new tables now live in the application schema. Roll it back first (tracetrack-migrate rollback --run-id ${cut.rows[0].run_id}) or use another target schema.`);
      }
      await acquireLease(c, base.targetSchema, base.runId, deps.holder ?? 'local');
      const rec = await recordRun(c, base.targetSchema, { runId: base.runId, sourceSchema: base.sourceSchema, runTime });
      await markRunRunning(c, base.targetSchema, base.runId);
      if (retryRejects) retry = await startRetryRound(c, base.targetSchema, base.runId);
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
    const options = { client: c, run: engineRun(run), plan, deadline, hashPasswords: deps.hashPasswords, onProgress: deps.onProgress, readSchema: readSchemaOf(run) };
    const r = run.retry ? await runRetryStep(options, step, run.retry) : await runMigrateStep(options, step);
    return { step, done: r.done, cursor: r.cursor, migrated: r.migrated, rejected: r.rejected, batches: r.batches };
  });
}

/** Verify: all checks, the result to S3 and the run record; fails the execution when any check fails. */
export async function verifyTask(event: RunEvent, deps: TaskDeps): Promise<VerifyResult> {
  const { run } = event;
  const { result, reportKey } = await withTarget(deps, run, async (c) => {
    const plan = await loadPlan(c, run);
    let result = await verifyRun({ client: c, run: engineRun(run), plan, readSchema: readSchemaOf(run) });
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
    const reportKey = runKey(deps, run, 'verification.json');
    await putJsonObject(deps.s3, deps.bucket, reportKey, result, deps.kmsKeyId);
    await updateRun(c, run.targetSchema, run.runId, { verification: result, status: result.passed ? 'verified' : 'verification-failed' });
    await recordStep(c, run.targetSchema, run.runId, 'verify', { status: 'done', at: new Date().toISOString(), passed: result.passed });
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
    const report = await buildReport({ deps, run, record: rec, verification, rejectsKey, rejects, rejectGroups });
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
  const outcome = await withTarget(deps, run, (c) => cutoverRun({ client: c, targetSchema: run.targetSchema, appSchema: run.appSchema, runId: run.runId }));
  deps.log?.(`Cutover: ${outcome.status}; legacy tables in "${outcome.legacySchema}"`);
  return { status: outcome.status === 'cut-over' ? 'cut-over' : 'already-cut-over', legacySchema: outcome.legacySchema };
}
