import { readFileSync, writeFileSync } from 'node:fs';
import type { Readiness } from '../../lambdas/core/verify';
import * as path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { parseMappingFile } from '../../lambdas/core/mapping-file';
import type { ExecutionInput, ReportResult } from '../../lambdas/handlers/contract';
import { newRunId, assertRunId } from '../../lambdas/engine/runs';
import { readObjectText } from '../../lambdas/io/backup';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { seedLegacyShapeA } from '../runner/demo-seed';
import { startEmbeddedCluster } from '../runner/embedded-postgres';
import { runLocalWorkflow, type LocalRunTrace } from '../runner/local-run';
import { createProgress } from '../runner/progress';
import type { LocalExecutionFailedError } from '../runner/state-machine';
import { withBackupStore, type BackupStore } from './backup-store';
import {
  CliUsageError,
  EXIT,
  padTable,
  parseCommandArgs,
  parsePositiveInt,
  parsePositiveNumber,
  resolveSourceUrl,
  scrubText,
  urlSecrets,
  withResource,
  type CliContext,
} from './common';

/** `tracetrack-migrate run`: the whole workflow, locally, with the deployed state machine definition. */

export const RUN_USAGE = `tracetrack-migrate run [--source URL] [--target URL] [--source-schema public] [--target-schema tracetrack]
                       [--backup-dir DIR | --bucket NAME [--s3-endpoint URL]] [--batch-size N]
                       [--mapping FILE] [--skip-table NAME]... [--run-id ID] [--report FILE] [--live] [--cutover] [--legacy-json-backup] [--recompute-summaries] [--demo [--scale N]]`;

/** A few thousand bags: the demo finishes in seconds. */
export const DEFAULT_DEMO_SCALE = 0.005;
const DEMO_DATABASE = 'tracetrack_demo';

const OPTIONS = {
  source: { type: 'string' },
  target: { type: 'string' },
  'source-schema': { type: 'string' },
  'target-schema': { type: 'string' },
  'backup-dir': { type: 'string' },
  bucket: { type: 'string' },
  's3-endpoint': { type: 'string' },
  'batch-size': { type: 'string' },
  mapping: { type: 'string' },
  'skip-table': { type: 'string', multiple: true },
  'run-id': { type: 'string' },
  report: { type: 'string' },
  cutover: { type: 'boolean' },
  live: { type: 'boolean' },
  'legacy-json-backup': { type: 'boolean' },
  'recompute-summaries': { type: 'boolean' },
  demo: { type: 'boolean' },
  scale: { type: 'string' },
  'time-budget-ms': { type: 'string' },
} as const;

export interface RunFlags {
  readonly sourceUrl?: string;
  readonly targetUrl?: string;
  readonly demo: boolean;
  readonly scale: number;
  readonly input: ExecutionInput & { readonly runId: string };
  readonly mappingFile?: string;
  readonly reportFile?: string;
  readonly timeBudgetMs?: number;
  readonly store: { 'backup-dir'?: string; bucket?: string; 's3-endpoint'?: string };
}

/** Parses and checks the arguments of `run`; every refusal is a usage error (exit 2). */
export function resolveRunFlags(args: string[], env: NodeJS.ProcessEnv): RunFlags {
  const v = parseCommandArgs('run', args, OPTIONS);
  const demo = v.demo === true;
  if (v.scale !== undefined && !demo) throw new CliUsageError('--scale only applies with --demo.');
  if (demo && (v.source || v.target)) {
    throw new CliUsageError('--demo seeds and migrates its own embedded database; it does not take --source or --target.');
  }
  const sourceUrl = demo ? undefined : resolveSourceUrl(v.source, env);
  if (!demo && !sourceUrl) {
    throw new CliUsageError('No source database: pass --source postgres://USER:PASSWORD@HOST:PORT/DB (or set $AWS_DATABASE_URL / $DATABASE_URL), or --demo to try it on a generated database.');
  }
  if (sourceUrl) parseDatabaseUrl(sourceUrl, 'source database URL');
  if (v.target) parseDatabaseUrl(v.target, 'target database URL');
  const runId = v['run-id'] ?? newRunId();
  try {
    assertRunId(runId);
  } catch (err) {
    throw new CliUsageError(`--run-id: ${(err as Error).message}`);
  }
  const input: ExecutionInput & { runId: string } = {
    runId,
    ...(v['source-schema'] ? { sourceSchema: v['source-schema'] } : {}),
    ...(v['target-schema'] ? { targetSchema: v['target-schema'] } : {}),
    ...(v['skip-table']?.length ? { skipTables: v['skip-table'] } : {}),
    ...(v['batch-size'] ? { batchSize: parsePositiveInt(v['batch-size'], '--batch-size') } : {}),
    ...(v.cutover ? { cutover: true } : {}),
    ...(v.live ? { live: true } : {}),
    ...(v['legacy-json-backup'] ? { legacyJsonBackup: true } : {}),
    ...(v['recompute-summaries'] ? { recomputeSummaries: true } : {}),
  };
  return {
    sourceUrl,
    targetUrl: v.target,
    demo,
    scale: parsePositiveNumber(v.scale, '--scale') ?? DEFAULT_DEMO_SCALE,
    input,
    mappingFile: v.mapping,
    reportFile: v.report,
    timeBudgetMs: parsePositiveInt(v['time-budget-ms'], '--time-budget-ms'),
    store: { 'backup-dir': v['backup-dir'], bucket: v.bucket, 's3-endpoint': v['s3-endpoint'] },
  };
}

/** Reads and checks the mapping file before anything starts; all its problems are reported at once. */
function readMappingFile(file: string, cwd: string): string {
  let text: string;
  try {
    text = readFileSync(path.resolve(cwd, file), 'utf8');
  } catch (err) {
    throw new CliUsageError(`--mapping ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`);
  }
  try {
    parseMappingFile(text, `mapping file ${file}`);
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
  return text;
}

export async function runCommand(args: string[], ctx: CliContext): Promise<number> {
  const flags = resolveRunFlags(args, ctx.env);
  const mappingText = flags.mappingFile ? readMappingFile(flags.mappingFile, ctx.cwd) : undefined;
  if (!flags.demo) return runAgainst(ctx, flags, flags.sourceUrl!, flags.targetUrl ?? flags.sourceUrl!, mappingText);

  const started = Date.now();
  return withResource(
    ctx,
    'embedded PostgreSQL',
    async () => {
      ctx.stdout('Demo: starting an embedded PostgreSQL…\n');
      return startEmbeddedCluster();
    },
    async (cluster) => {
      ctx.stdout('Demo: stopping the embedded PostgreSQL.\n');
      await cluster.stop();
    },
    async (cluster) => {
      await cluster.createDatabase(DEMO_DATABASE);
      const url = cluster.url(DEMO_DATABASE);
      const seed = await withClient(parseDatabaseUrl(url), (c) => seedLegacyShapeA(c, { scale: flags.scale }));
      const r = seed.rows;
      ctx.stdout(
        `Demo: seeded a shape-A legacy database (scale ${flags.scale}) in ${(seed.elapsedMs / 1000).toFixed(1)} s: ` +
          `${r.user} users, ${r.bag} bags, ${r.scan} scans, ${r.bill} bills, ${r.bill_bag} bill_bag rows, with dirty rows ` +
          `(${seed.dirty.duplicateQr} duplicate QR groups, ${seed.dirty.negativeWeight} negative weights, ${seed.dirty.orphanParent} orphan parents, ` +
          `${seed.dirty.duplicateEmail} duplicate emails, ${seed.dirty.plaintextPassword} plaintext passwords).\n`,
      );
      const code = await runAgainst(ctx, flags, url, url, mappingText);
      ctx.stdout(`Demo: finished in ${((Date.now() - started) / 1000).toFixed(1)} s.\n`);
      return code;
    },
  );
}

async function runAgainst(ctx: CliContext, flags: RunFlags, sourceUrl: string, targetUrl: string, mappingText: string | undefined): Promise<number> {
  const secrets = urlSecrets(sourceUrl, targetUrl);
  const { runId } = flags.input;
  return withBackupStore(ctx, flags.store, async (store) => {
    let input: ExecutionInput = flags.input;
    if (mappingText !== undefined) {
      const mappingKey = `runs/${runId}/mapping.json`;
      await store.s3.send(new PutObjectCommand({ Bucket: store.bucket, Key: mappingKey, Body: mappingText, ContentType: 'application/json' }));
      input = { ...input, mappingKey };
    }
    ctx.stdout(
      `Run ${runId}: ${redactUrl(sourceUrl)} (schema ${input.sourceSchema ?? 'public'}) → ` +
        `${targetUrl === sourceUrl ? 'same database' : redactUrl(targetUrl)} (schema ${input.targetSchema ?? 'tracetrack'}); ` +
        `backups to ${store.describe(`runs/${runId}/`)}\n`,
    );
    const progress = createProgress({ write: (t) => ctx.stdout(scrubText(t, secrets)), tty: ctx.tty });
    const outcome = await runLocalWorkflow({
      sourceUrl,
      targetUrl,
      bucket: store.bucket,
      s3Endpoint: store.endpoint,
      input,
      timeBudgetMs: flags.timeBudgetMs,
      executionName: runId,
      progress,
    });
    if (!outcome.ok) return reportFailure(ctx, flags, store, outcome.failure, outcome.trace, secrets);
    return reportSuccess(ctx, flags, store, outcome.output, outcome.trace);
  });
}

async function reportSuccess(ctx: CliContext, flags: RunFlags, store: BackupStore, output: ReportResult, trace: LocalRunTrace): Promise<number> {
  const reportText = await readObjectText(store.s3, store.bucket, output.reportKey);
  const report = reportText ? (JSON.parse(reportText) as { status?: string; sources?: Record<string, { rows: number | null }>; readiness?: Readiness | null }) : null;
  ctx.stdout(`\n${renderSummary(output, trace)}\n\n`);
  if (report?.readiness) ctx.stdout(`${renderReadiness(report.readiness)}\n`);
  ctx.stdout(`Run ${output.runId}: ${output.status} in ${trace.seconds.toFixed(1)} s.\n`);
  // getrusage(RUSAGE_SELF): this process alone (not the PostgreSQL or synth child processes).
  ctx.stdout(`Peak memory of this process: ${Math.round(process.resourceUsage().maxRSS / 1024)} MB\n`);
  ctx.stdout(`Backup: ${store.describe(`runs/${output.runId}/backup/`)}\n`);
  ctx.stdout(`Report: ${store.describe(output.reportKey)}\n`);
  if (flags.reportFile) {
    const file = path.resolve(ctx.cwd, flags.reportFile);
    writeFileSync(file, reportText ?? JSON.stringify({ runId: output.runId, status: output.status, tables: output.tables }, null, 2), { mode: 0o600 });
    ctx.stdout(`Report written to ${flags.reportFile}\n`);
  }
  if (trace.writeFreezeMs !== undefined) ctx.stdout(`Write freeze of the cutover: ${trace.writeFreezeMs} ms\n`);
  if (flags.input.cutover) ctx.stdout(`Cut over: the new tables are in the application schema; undo with: tracetrack-migrate rollback --run-id ${output.runId}\n`);
  if (flags.input.live && !flags.input.cutover) {
    const lag = trace.catchUp;
    ctx.stdout(
      `Live: caught up${lag ? ` (${lag.pending} changes pending, oldest ${lag.oldestSeconds.toFixed(1)} s, ${Math.round(lag.rate)} changes/s)` : ''}; change capture stays on.\n` +
        `Catch up again: tracetrack-migrate catch-up --run-id ${output.runId}   Cut over (writes frozen for seconds): tracetrack-migrate cutover --run-id ${output.runId}   Give up: tracetrack-migrate abandon --run-id ${output.runId}\n`,
    );
  }
  return output.status === 'completed' || report?.status === 'completed' ? EXIT.ok : EXIT.failed;
}

/** The application readiness report (shown before any cutover): who cannot log in, what lost a link. Never a hash. */
export function renderReadiness(r: Readiness): string {
  const users = (list: { id: number; username: string }[]) =>
    list.length ? `: ${list.slice(0, 10).map((u) => `${u.id} ${JSON.stringify(u.username)}`).join(', ')}${list.length > 10 ? ', …' : ''}` : '';
  const ids = (list: number[]) => (list.length ? `: ${list.slice(0, 10).join(', ')}${list.length > 10 ? ', …' : ''}` : '');
  return [
    'Application readiness:',
    `  users needing a password reset   ${r.counts.usersNeedingPasswordReset}${users(r.usersNeedingPasswordReset)}`,
    `  users not verified (no login)    ${r.counts.usersNotVerified}${users(r.usersNotVerified)}`,
    `  dispatchers without an area     ${r.counts.dispatchersWithoutArea}${users(r.dispatchersWithoutArea)}`,
    `  bags whose parent link was rejected ${r.counts.bagsWithRejectedParentLink}${ids(r.bagsWithRejectedParentLink)}`,
    `  bills with rejected bags         ${r.counts.billsWithRejectedBags}${ids(r.billsWithRejectedBags)}`,
  ].join('\n');
}

/** What to do after a failure, by the error's name (the state machine's vocabulary). */
export function nextStep(error: string, runId: string): string {
  const resume = `rerun with --run-id ${runId} to resume (finished steps and batches are skipped)`;
  switch (error) {
    case 'PlanError':
      return `Fix the source, or skip the table with --skip-table NAME, or map it with --mapping FILE; then ${resume}.`;
    case 'MappingError':
      return `Fix the mapping file; then ${resume}.`;
    case 'PermissionError':
      return `Grant the missing privilege to the migration role; then ${resume}.`;
    case 'ConnectionConfigError':
      return `Check the database URL (host, port, user, password, database); then ${resume}.`;
    case 'LeaseHeldError':
      return `Another run holds the target's lease: wait for it to finish, or ${resume} if it is that run.`;
    case 'CutoverError':
      return `See the message above (e.g. roll back the earlier run with: tracetrack-migrate rollback --run-id <id>).`;
    case 'VerificationFailedError':
      return `Nothing was cut over. Investigate the differences listed above; then ${resume}.`;
    case 'InputError':
      return `Fix the arguments; then ${resume}.`;
    default:
      return `Fix the cause above; then ${resume}.`;
  }
}

function reportFailure(
  ctx: CliContext,
  flags: RunFlags,
  store: BackupStore,
  failure: LocalExecutionFailedError,
  trace: LocalRunTrace,
  secrets: string[],
): number {
  const { runId } = flags.input;
  const state = failure.state ?? trace.lastTask ?? 'unknown step';
  const message = scrubText(failure.causeMessage, secrets);
  ctx.stderr(`\nRun ${runId} failed in step ${state} with ${failure.error}:\n${message}\n`);
  ctx.stderr(`Next: ${nextStep(failure.error, runId)}\n`);
  ctx.stderr(`Backups and plan so far: ${store.describe(`runs/${runId}/`)}\n`);
  if (flags.reportFile) {
    const failed = { runId, status: 'failed', failedStep: state, error: failure.error, message, steps: trace.steps, backups: trace.backups };
    writeFileSync(path.resolve(ctx.cwd, flags.reportFile), `${JSON.stringify(failed, null, 2)}\n`, { mode: 0o600 });
  }
  return EXIT.failed;
}

/** The summary table: one line per target table with its source rows, migrated, derived, rejected and seconds. */
export function renderSummary(output: ReportResult, trace: LocalRunTrace): string {
  const seconds = new Map(trace.steps.map((s) => [s.step, s.seconds]));
  const rows: string[][] = [['table', 'source rows', 'migrated', 'derived', 'rejected', 'seconds']];
  let total = { source: 0, migrated: 0, derived: 0, rejected: 0 };
  // Tables in the order the workflow migrated them.
  const order = trace.steps.map((s) => s.step);
  const tables = Object.entries(output.tables).sort(([a], [b]) => rank(order, a) - rank(order, b));
  for (const [table, c] of tables) {
    const derived = c.derived ?? 0;
    const source = c.migrated + c.rejected + derived;
    total = { source: total.source + source, migrated: total.migrated + c.migrated, derived: total.derived + derived, rejected: total.rejected + c.rejected };
    const s = seconds.get(table);
    rows.push([table, String(source), String(c.migrated), String(derived), String(c.rejected), s === undefined ? '-' : s.toFixed(2)]);
  }
  const other = ['prepare', 'finalize'].map((k) => seconds.get(k) ?? 0).reduce((a, b) => a + b, 0);
  rows.push(['total', String(total.source), String(total.migrated), String(total.derived), String(total.rejected), (trace.steps.reduce((a, s) => a + s.seconds, 0)).toFixed(2)]);
  return `${padTable(rows, (i) => i > 0)}\n(seconds: time in the table's MigrateStep invocations of this run; prepare + finalize: ${other.toFixed(2)} s)`;
}

function rank(order: string[], table: string): number {
  const i = order.indexOf(table);
  return i < 0 ? order.length : i;
}
