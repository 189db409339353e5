import { accessSync, constants as fsConstants, mkdirSync, writeFileSync } from 'node:fs';
import type { Readiness } from '../../lambdas/core/verify';
import * as path from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { ExecutionInput, ReportResult } from '../../lambdas/core/contract';
import { assertRunId } from '../../lambdas/core/backup-keys';
import { stepTable } from '../../lambdas/core/work-graph';
import { markRunFailed, newRunId } from '../../lambdas/engine/runs';
import { readObjectText, sseParams, toStorageError } from '../../lambdas/io/s3';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { seedLegacyShapeA } from '../runner/demo-seed';
import { startEmbeddedCluster } from '../runner/embedded-postgres';
import { runLocalWorkflow, type LocalRunTrace } from '../runner/local-run';
import { createProgress } from '../runner/progress';
import type { LocalExecutionFailedError } from '../runner/state-machine';
import { withBackupStore, type BackupStore, type BackupStoreFlags } from './backup-store';
import { writeRejectsFromObject } from './rejects';
import { describeIoCode, LocalFileError } from './local-file-error';
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
  readMappingFile,
} from './common';

/** `tracetrack-migrate run`: the whole workflow, locally, with the deployed state machine definition. */

export const RUN_USAGE = `tracetrack-migrate run [--source URL] [--target URL] [--source-schema public] [--target-schema tracetrack]
                       [--backup-dir DIR | --bucket NAME [--s3-endpoint URL] [--kms-key-id KEY] [--allow-unencrypted-bucket]] [--batch-size N]
                       [--concurrency N] [--mapping FILE] [--skip-table NAME]... [--run-id ID] [--retry-rejects] [--report FILE] [--live] [--cutover] [--legacy-json-backup]
                       [--recompute-summaries] [--demo [--scale N] [--keep]]`;

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
  'kms-key-id': { type: 'string' },
  'allow-unencrypted-bucket': { type: 'boolean' },
  'batch-size': { type: 'string' },
  concurrency: { type: 'string' },
  mapping: { type: 'string' },
  'skip-table': { type: 'string', multiple: true },
  'run-id': { type: 'string' },
  'retry-rejects': { type: 'boolean' },
  report: { type: 'string' },
  cutover: { type: 'boolean' },
  live: { type: 'boolean' },
  'legacy-json-backup': { type: 'boolean' },
  'recompute-summaries': { type: 'boolean' },
  demo: { type: 'boolean' },
  scale: { type: 'string' },
  keep: { type: 'boolean' },
  'time-budget-ms': { type: 'string' },
} as const;

export interface RunFlags {
  readonly sourceUrl?: string;
  readonly targetUrl?: string;
  readonly demo: boolean;
  readonly scale: number;
  /** --demo --keep: the embedded database stays up (its URL printed) until Ctrl-C. */
  readonly keep: boolean;
  readonly input: ExecutionInput & { readonly runId: string };
  readonly mappingFile?: string;
  readonly reportFile?: string;
  readonly timeBudgetMs?: number;
  readonly store: BackupStoreFlags;
}

/** Parses and checks the arguments of `run`; every refusal is a usage error (exit 2). */
export function resolveRunFlags(args: string[], env: NodeJS.ProcessEnv): RunFlags {
  const v = parseCommandArgs('run', args, OPTIONS);
  const demo = v.demo === true;
  if (v.scale !== undefined && !demo) throw new CliUsageError('--scale only applies with --demo.');
  if (v.keep && !demo) throw new CliUsageError('--keep only applies with --demo (it keeps the embedded database running).');
  if (demo && (v.source || v.target)) {
    throw new CliUsageError('--demo seeds and migrates its own embedded database; it does not take --source or --target.');
  }
  const sourceUrl = demo ? undefined : resolveSourceUrl(v.source, env);
  if (!demo && !sourceUrl) {
    throw new CliUsageError('No source database: pass --source postgres://USER:PASSWORD@HOST:PORT/DB (or set $AWS_DATABASE_URL / $DATABASE_URL), or --demo to try it on a generated database.');
  }
  if (sourceUrl) parseDatabaseUrl(sourceUrl, 'source database URL');
  if (v.target) parseDatabaseUrl(v.target, 'target database URL');
  if (v['retry-rejects'] && !v['run-id']) throw new CliUsageError('--retry-rejects needs --run-id ID: the run whose rejected rows are retried (tracetrack-migrate rejects names it).');
  if (v['retry-rejects'] && demo) throw new CliUsageError('--retry-rejects needs the database of an earlier run; --demo starts a new one each time.');
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
    ...(v.concurrency ? { concurrency: parsePositiveInt(v.concurrency, '--concurrency') } : {}),
    ...(v.cutover ? { cutover: true } : {}),
    ...(v.live ? { live: true } : {}),
    ...(v['legacy-json-backup'] ? { legacyJsonBackup: true } : {}),
    ...(v['recompute-summaries'] ? { recomputeSummaries: true } : {}),
    ...(v['retry-rejects'] ? { retryRejects: true } : {}),
  };
  return {
    sourceUrl,
    targetUrl: v.target,
    demo,
    keep: v.keep === true,
    scale: parsePositiveNumber(v.scale, '--scale') ?? DEFAULT_DEMO_SCALE,
    input,
    mappingFile: v.mapping,
    reportFile: v.report,
    timeBudgetMs: parsePositiveInt(v['time-budget-ms'], '--time-budget-ms'),
    store: {
      'backup-dir': v['backup-dir'], bucket: v.bucket, 's3-endpoint': v['s3-endpoint'],
      'kms-key-id': v['kms-key-id'], 'allow-unencrypted-bucket': v['allow-unencrypted-bucket'],
    },
  };
}


export async function runCommand(args: string[], ctx: CliContext): Promise<number> {
  const flags = resolveRunFlags(args, ctx.env);
  if (flags.reportFile) assertWritableDirectory(path.dirname(path.resolve(ctx.cwd, flags.reportFile)), '--report');
  const mappingText = flags.mappingFile ? readMappingFile(flags.mappingFile, ctx.cwd).text : undefined;
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
      if (flags.keep && ctx.untilInterrupted) {
        // A local throwaway database: its URL (password included) is what the newcomer needs to look inside.
        ctx.stdout(
          `Demo: the embedded PostgreSQL keeps running. Connect with:\n  psql '${url}'\n` +
            `  (the migrated tables are in schema "${flags.input.targetSchema ?? 'tracetrack'}", the legacy ones in "public"; ` +
            `tracetrack-migrate rejects --target '${url}' lists the rejected rows)\nPress Ctrl-C to stop it.\n`,
        );
        await ctx.untilInterrupted();
      }
      return code;
    },
  );
}

async function runAgainst(ctx: CliContext, flags: RunFlags, sourceUrl: string, targetUrl: string, mappingText: string | undefined): Promise<number> {
  const secrets = urlSecrets(sourceUrl, targetUrl);
  const { runId } = flags.input;
  return withBackupStore(ctx, flags.store, { writes: true }, async (store) => {
    let input: ExecutionInput = flags.input;
    if (mappingText !== undefined) {
      const mappingKey = `runs/${runId}/mapping.json`;
      try {
        await store.s3.send(new PutObjectCommand({ Bucket: store.bucket, Key: mappingKey, Body: mappingText, ContentType: 'application/json', ...sseParams(store.kmsKeyId) }));
      } catch (err) {
        throw toStorageError(err, `Uploading the mapping file to ${store.describe(mappingKey)}`);
      }
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
      s3LocalServer: store.localServer,
      kmsKeyId: store.kmsKeyId,
      input,
      timeBudgetMs: flags.timeBudgetMs,
      executionName: runId,
      progress,
    });
    if (!outcome.ok) {
      await recordFailure(targetUrl, input.targetSchema ?? 'tracetrack', runId, outcome.failure, outcome.trace, secrets);
      return reportFailure(ctx, flags, store, outcome.failure, outcome.trace, secrets);
    }
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
  const htmlKey = output.reportKey.replace(/\.json$/, '.html');
  ctx.stdout(`Report (HTML): ${store.describe(htmlKey)}\n`);
  if (flags.reportFile) {
    const file = path.resolve(ctx.cwd, flags.reportFile);
    writeLocalFile(file, reportText ?? JSON.stringify({ runId: output.runId, status: output.status, tables: output.tables }, null, 2));
    ctx.stdout(`Report written to ${flags.reportFile}\n`);
    const html = await readObjectText(store.s3, store.bucket, htmlKey);
    if (html !== null) {
      const htmlFile = htmlFileFor(file);
      writeLocalFile(htmlFile, html);
      ctx.stdout(`Report (HTML) written to ${path.relative(ctx.cwd, htmlFile) || htmlFile}\n`);
    }
  }
  if (flags.demo) await writeDemoFiles(ctx, store, output.runId, htmlKey);
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

/** Refuses, before anything starts, a --report whose directory cannot take the file. */
function assertWritableDirectory(dir: string, flag: string): void {
  try {
    accessSync(dir, fsConstants.W_OK);
  } catch (err) {
    throw new CliUsageError(`${flag}: cannot write into ${dir}: ${describeIoCode((err as NodeJS.ErrnoException).code, (err as Error).message)}.`);
  }
}

/** `--report out.json` → `out.html` beside it; any other name gets `.html` appended. */
export function htmlFileFor(reportFile: string): string {
  return reportFile.endsWith('.json') ? `${reportFile.slice(0, -'.json'.length)}.html` : `${reportFile}.html`;
}

/** The demo's report and rejects as ordinary files a newcomer can open: `<backup dir>/../reports/<run>/`. */
async function writeDemoFiles(ctx: CliContext, store: BackupStore, runId: string, htmlKey: string): Promise<void> {
  const base = store.directory ? path.dirname(store.directory) : path.resolve(ctx.cwd, '.tracetrack');
  const dir = path.join(base, 'reports', runId);
  // The rejected rows are source data (secret columns stripped): owner only, like the backups.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const html = await readObjectText(store.s3, store.bucket, htmlKey);
  const htmlFile = path.join(dir, 'report.html');
  if (html !== null) writeLocalFile(htmlFile, html);
  const rejectsFile = path.join(dir, 'rejects.csv');
  const chunks: string[] = [];
  const n = await writeRejectsFromObject(store.s3, store.bucket, runId, {}, 'csv', (t) => chunks.push(t));
  writeLocalFile(rejectsFile, chunks.join(''));
  ctx.stdout(`\nOpen the report in a browser: ${htmlFile}\n`);
  ctx.stdout(`Rejected rows (${n}, CSV, no secret columns): ${rejectsFile}\n`);
}

/** Writes a file for the operator (mode 0600); a local I/O failure names the path. */
function writeLocalFile(file: string, text: string): void {
  try {
    writeFileSync(file, text, { mode: 0o600 });
  } catch (err) {
    throw new LocalFileError(file, 'write', err);
  }
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
export function nextStep(error: string, runId: string, message = ''): string {
  const resume = `rerun with --run-id ${runId} to resume (finished steps and batches are skipped)`;
  switch (error) {
    case 'PlanError':
      return `Fix the source, or skip the table with --skip-table NAME, or map it with --mapping FILE; then ${resume}.`;
    case 'MappingError':
      return `Fix the mapping file; then ${resume}.`;
    case 'PermissionError':
      return `Run the GRANT / ALTER the message above names (or use a role that has it); then ${resume}.`;
    case 'ConnectionConfigError':
      return `Check the database URL (host, port, user, password, database); then ${resume}.`;
    case 'LeaseHeldError': {
      // The run to resume or abandon is the one holding the lease (named first in the message), not this one.
      const holder = /^Run (\S+) holds/.exec(message)?.[1];
      return holder
        ? `Run ${holder} holds the target's lease: wait for it if it is still going; otherwise resume it with --run-id ${holder}, or release it with tracetrack-migrate abandon --target <URL> --run-id ${holder} and start this run again.`
        : `Another run holds the target's lease: wait for it to finish, or resume that run with its --run-id.`;
    }
    case 'CutoverError':
      return `See the message above (e.g. roll back the earlier run with: tracetrack-migrate rollback --run-id <id>).`;
    case 'VerificationFailedError':
      return `Nothing was cut over. Investigate the differences listed above; then ${resume}.`;
    case 'InputError':
      return `Fix the arguments; then ${resume}.`;
    case 'LocalStorageError':
      return `Free space in (or fix the permissions of) the directory named above — the run's backup and objects so far are there, so keep the same --backup-dir; then ${resume}.`;
    default:
      return `Fix the cause above; then ${resume}.`;
  }
}

/**
 * The run is recorded as failed: it keeps everything it did (resume it with its --run-id), but its
 * lease no longer blocks the next run the failure message suggests. Best effort: the database may be
 * what failed.
 */
async function recordFailure(targetUrl: string, targetSchema: string, runId: string, failure: LocalExecutionFailedError, trace: LocalRunTrace, secrets: string[]): Promise<void> {
  const step = failure.state ?? trace.lastTask ?? 'unknown';
  await withClient(parseDatabaseUrl(targetUrl), (c) =>
    markRunFailed(c, targetSchema, runId, { step, error: failure.error, message: scrubText(failure.causeMessage, secrets).slice(0, 2000) }),
  ).catch(() => undefined);
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
  ctx.stderr(`Next: ${nextStep(failure.error, runId, message)}\n`);
  ctx.stderr(`Backups and plan so far: ${store.describe(`runs/${runId}/`)}\n`);
  if (flags.reportFile) {
    const failed = { runId, status: 'failed', failedStep: state, error: failure.error, message, steps: trace.steps, backups: trace.backups };
    writeFileSync(path.resolve(ctx.cwd, flags.reportFile), `${JSON.stringify(failed, null, 2)}\n`, { mode: 0o600 });
  }
  return EXIT.failed;
}

/** The summary table: one line per target table with its source rows, migrated, derived, rejected and seconds. */
export function renderSummary(output: ReportResult, trace: LocalRunTrace): string {
  // A table loaded in key-range parts (scan:1/2, scan:2/2): the time of all its parts' invocations.
  const tableOf = (step: string) => stepTable(step) ?? step;
  const seconds = new Map<string, number>();
  for (const s of trace.steps) seconds.set(tableOf(s.step), (seconds.get(tableOf(s.step)) ?? 0) + s.seconds);
  const rows: string[][] = [['table', 'source rows', 'migrated', 'derived', 'rejected', 'seconds']];
  let total = { source: 0, migrated: 0, derived: 0, rejected: 0 };
  // Tables in the order the workflow migrated them.
  const order = trace.steps.map((s) => tableOf(s.step));
  const tables = Object.entries(output.tables).sort(([a], [b]) => rank(order, a) - rank(order, b));
  for (const [table, c] of tables) {
    const derived = c.derived ?? 0;
    const source = c.migrated + c.rejected + derived;
    total = { source: total.source + source, migrated: total.migrated + c.migrated, derived: total.derived + derived, rejected: total.rejected + c.rejected };
    const s = seconds.get(table);
    rows.push([table, String(source), String(c.migrated), String(derived), String(c.rejected), s === undefined ? '-' : s.toFixed(2)]);
  }
  const other = trace.steps.filter((s) => !(tableOf(s.step) in output.tables)).reduce((a, s) => a + s.seconds, 0);
  rows.push(['total', String(total.source), String(total.migrated), String(total.derived), String(total.rejected), (trace.steps.reduce((a, s) => a + s.seconds, 0)).toFixed(2)]);
  const wall = trace.migrateWall === undefined ? '' : `; the migration took ${trace.migrateWall.toFixed(2)} s of wall time, its steps side by side`;
  return `${padTable(rows, (i) => i > 0)}\n(seconds: time in the table's MigrateStep invocations of this run; prepare, password hashing, finalize: ${other.toFixed(2)} s${wall})`;
}

function rank(order: string[], table: string): number {
  const i = order.indexOf(table);
  return i < 0 ? order.length : i;
}
