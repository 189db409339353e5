import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import * as path from 'node:path';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { ENV, HANDLER_MODULES, TASK_STATES, type ExecutionInput, type ReportResult, type TaskKey } from '../../lambdas/core/contract';
import { resetRuntime } from '../../lambdas/io/runtime';
import { readRun } from '../../lambdas/engine/runs';
import { readRowEstimates } from '../../lambdas/io/catalog';
import { parseDatabaseUrl, withClient } from '../../lambdas/io/pg';
import { parseTablePartStep } from '../../lambdas/core/work-graph';
import { silentProgress, type ProgressSink } from './progress';
import { LocalExecutionFailedError, runLocally, type LocalTaskHandler } from './state-machine';

/**
 * The local runner: the deployed workflow definition (synthesized from the CDK stack) executed
 * in-process, each task state bound to the `handler` export of its lambdas/handlers module.
 * The handlers read their configuration from the environment exactly as in Lambda, so this
 * module sets those variables for the duration of the run and restores them afterwards.
 */


const HANDLERS_DIR = path.join(__dirname, '..', '..', 'lambdas', 'handlers');

/** A short budget locally: the BackupTable/MigrateStep loops return often, which gives progress. */
export const LOCAL_TIME_BUDGET_MS = 5000;

export interface LocalRunOptions {
  readonly sourceUrl: string;
  /** @default sourceUrl */
  readonly targetUrl?: string;
  readonly bucket: string;
  /** S3-compatible endpoint (the local s3rver); AWS S3 when omitted. */
  readonly s3Endpoint?: string;
  /** `s3Endpoint` is the built-in local s3rver (signed with its fixed key); otherwise the standard credential chain. @default false */
  readonly s3LocalServer?: boolean;
  /** BACKUP_KMS_KEY_ID: SSE-KMS key of every object written (else SSE-S3). */
  readonly kmsKeyId?: string;
  /** BACKUP_PREFIX. @default '' */
  readonly prefix?: string;
  readonly input: ExecutionInput;
  /** @default LOCAL_TIME_BUDGET_MS */
  readonly timeBudgetMs?: number;
  readonly executionName?: string;
  readonly progress?: ProgressSink;
}

export interface StepSummary {
  /** Migration step: `prepare`, a target table, `finalize`. */
  readonly step: string;
  migrated: number;
  rejected: number;
  batches: number;
  invocations: number;
  /** Time spent in the step's task invocations. */
  seconds: number;
}

export interface LocalRunTrace {
  readonly steps: StepSummary[];
  /** Rows backed up per source table. */
  readonly backups: Record<string, number>;
  /** The task that was running last (the failing one when the run fails). */
  lastTask?: string;
  readonly seconds: number;
  /** Live runs: the lag after the last CatchUp. */
  catchUp?: { pending: number; oldestSeconds: number; rate: number; applied: number };
  /** Cutover: how long the application's writes were blocked (ms). */
  writeFreezeMs?: number;
  /** Wall seconds from the first MigrateStep invocation's start to the last one's end (steps overlap). */
  migrateWall?: number;
}

export type LocalRunOutcome =
  | { readonly ok: true; readonly output: ReportResult; readonly trace: LocalRunTrace }
  | { readonly ok: false; readonly failure: LocalExecutionFailedError; readonly trace: LocalRunTrace };

type Handler = (event: unknown) => Promise<unknown>;

const ROOT = path.join(__dirname, '..', '..');

function tsFilesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? tsFilesUnder(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []))
    .sort();
}

/**
 * Hash of everything the synthesized definition can depend on: the stack and workflow sources
 * (all of lib/ and lambdas/, conservatively), cdk.json and the installed aws-cdk-lib version.
 */
export function definitionSourceHash(root = ROOT): string {
  const hash = createHash('sha256');
  const files = [...tsFilesUnder(path.join(root, 'lib')), ...tsFilesUnder(path.join(root, 'lambdas')), path.join(root, 'cdk.json'), path.join(root, 'node_modules', 'aws-cdk-lib', 'package.json')];
  for (const file of files) {
    hash.update(path.relative(root, file)).update('\0');
    hash.update(existsSync(file) ? readFileSync(file) : '').update('\0');
  }
  return hash.digest('hex').slice(0, 32);
}

/**
 * `synthesizeDefinition()`, cached on disk by {@link definitionSourceHash}: synthesizing the stack costs
 * seconds of CPU, and the definition changes only when the sources do. The cache is per user
 * ($XDG_CACHE_HOME or ~/.cache); TRACETRACK_DEFINITION_CACHE=off disables it.
 */
export function loadDefinition(env: NodeJS.ProcessEnv = process.env): StateMachineDefinition {
  if (env.TRACETRACK_DEFINITION_CACHE === 'off') return synthesizeInChild();
  const dir = path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'tracetrack-migrate');
  const file = path.join(dir, `definition-${definitionSourceHash()}.json`);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as StateMachineDefinition;
  } catch {
    // not cached yet (or unreadable): synthesize
  }
  const definition = synthesizeInChild();
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(definition), { mode: 0o600 });
    renameSync(tmp, file);
  } catch {
    // a read-only home: run without the cache
  }
  return definition;
}

/** Synthesizes the definition in a child process, so this process never loads aws-cdk-lib (memory). */
function synthesizeInChild(): StateMachineDefinition {
  const script = path.join(__dirname, 'synthesize.ts');
  const out = spawnSync(process.execPath, ['--import', 'tsx', script], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (out.status !== 0) {
    throw new Error(`Synthesizing the workflow definition failed (exit ${out.status}): ${out.stderr.trim().split('\n').slice(-5).join(' | ')}`);
  }
  return JSON.parse(out.stdout) as StateMachineDefinition;
}

/** Loads the `handler` of every task module present; a missing module (a task not written yet) fails when it is reached. */
export function loadTaskHandlers(dir = HANDLERS_DIR): Record<string, Handler> {
  const handlers: Record<string, Handler> = {};
  for (const [task, moduleName] of Object.entries(HANDLER_MODULES) as [TaskKey, string][]) {
    const state = TASK_STATES[task];
    const file = path.join(dir, moduleName);
    if (existsSync(`${file}.ts`) || existsSync(`${file}.js`)) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(file) as { handler?: Handler };
      if (typeof mod.handler !== 'function') throw new Error(`${file} has no 'handler' export.`);
      handlers[state] = mod.handler;
    } else {
      handlers[state] = async () => {
        throw Object.assign(new Error(`The ${state} task has no handler in this build (lambdas/handlers/${moduleName}.ts).`), { name: 'InputError' });
      };
    }
  }
  return handlers;
}

function withEnv(values: Record<string, string | undefined>): () => void {
  const saved = Object.fromEntries(Object.keys(values).map((k) => [k, process.env[k]]));
  for (const [k, v] of Object.entries(values)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  resetRuntime();
  return () => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    resetRuntime();
  };
}

/** Routes the handlers' console.log lines through the progress sink while the run lasts. */
function captureConsole(progress: ProgressSink): () => void {
  const { log, info } = console;
  console.log = (...args: unknown[]) => progress.log(args.map(String).join(' '));
  console.info = console.log;
  return () => {
    console.log = log;
    console.info = info;
  };
}

/**
 * The catalog's row estimates, for done/total, percentage and time left in the progress lines: source
 * tables after Preflight (backup lines), the plan's sources per migration step after Analyse. Best
 * effort: without them the lines show rows and rate only.
 */
class RowEstimates {
  private run: { runId: string; sourceSchema: string; targetSchema: string; crossDatabase: boolean } | null = null;

  constructor(private readonly options: LocalRunOptions, private readonly progress: ProgressSink) {}

  /** Called with every task's result: Preflight names the run, Analyse wrote the plan. */
  async observe(state: string, result: Record<string, unknown>): Promise<void> {
    if (state === TASK_STATES.preflight) await this.afterPreflight(result);
    if (state === TASK_STATES.analyse) await this.afterAnalyse(result);
  }

  private async afterPreflight(result: Record<string, unknown>): Promise<void> {
    if (!this.progress.expect) return;
    this.run = result.run as RowEstimates['run'];
    if (!this.run) return;
    const { sourceSchema } = this.run;
    const rows = await withClient(parseDatabaseUrl(this.options.sourceUrl), (c) => readRowEstimates(c, sourceSchema)).catch(() => ({}) as Record<string, number>);
    for (const [table, n] of Object.entries(rows)) this.progress.expect(`backup ${table}`, n);
  }

  private async afterAnalyse(result: Record<string, unknown>): Promise<void> {
    if (!this.progress.expect || !this.run) return;
    const { runId, targetSchema } = this.run;
    const plan = await withClient(parseDatabaseUrl(this.options.targetUrl ?? this.options.sourceUrl), async (c) => (await readRun(c, targetSchema, runId))?.plan ?? null).catch(() => null);
    if (!plan) return;
    const steps = Array.isArray(result.waves) ? (result.waves as string[][]).flat() : [];
    for (const t of plan.tables) {
      // Derived links have no estimate of their own (bags with a parent): such a step shows rows and rate only.
      if (t.derivedLinks.length || t.sources.some((s) => s.rowEstimate < 0)) continue;
      const total = t.sources.reduce((a, s) => a + s.rowEstimate, 0);
      if (!(total > 0)) continue;
      this.progress.expect(`migrate ${t.target}`, total);
      // A table loaded in key-range parts (the parts in Analyse's waves): each part about its share.
      for (const step of steps) {
        const part = parseTablePartStep(step);
        if (part?.table === t.target) this.progress.expect(`migrate ${step}`, Math.round(total / part.parts));
      }
    }
  }
}

/** What the local run shows and traces of one task's result: backup rows, migrate step totals, other tasks' durations. */
function recordTaskResult(
  run: {
    trace: { -readonly [K in keyof LocalRunTrace]: LocalRunTrace[K] };
    stepMap: Map<string, StepSummary>;
    progress: ProgressSink;
    /** Invocations and seconds of each verification item so far (items are re-entered with their cursor). */
    verifyItems: Map<string, { invocations: number; seconds: number }>;
  },
  state: string,
  result: Record<string, unknown>,
  seconds: number,
): void {
  const { trace, stepMap, progress, verifyItems } = run;
  if (state === TASK_STATES.backupTable) {
    const table = String(result.table);
    trace.backups[table] = Number(result.rows);
    const key = `backup ${table}`;
    if (result.done) progress.finish(key, Number(result.rows));
    else progress.update(key, Number(result.rows));
  } else if (state === TASK_STATES.migrateStep) {
    const step = String(result.step);
    let s = stepMap.get(step);
    if (!s) {
      s = { step, migrated: 0, rejected: 0, batches: 0, invocations: 0, seconds: 0 };
      stepMap.set(step, s);
      trace.steps.push(s);
    }
    s.migrated += Number(result.migrated);
    s.rejected += Number(result.rejected);
    s.batches += Number(result.batches);
    s.invocations++;
    s.seconds += seconds;
    const key = `migrate ${step}`;
    const extra = s.rejected ? `${s.rejected} rejected` : undefined;
    // Rows read (migrated + rejected), against the source rows the catalog estimates.
    if (result.done) progress.finish(key, s.migrated + s.rejected, extra);
    else progress.update(key, s.migrated + s.rejected, extra);
  } else if (state === TASK_STATES.verifyItem) {
    // One line per item when it is done: its time summed over its invocations (items run in parallel).
    const item = String(result.item);
    const v = verifyItems.get(item) ?? { invocations: 0, seconds: 0 };
    v.invocations++;
    v.seconds += seconds;
    verifyItems.set(item, v);
    if (result.done) progress.log(`verify ${String(result.label)}: ${v.invocations} invocation(s), ${v.seconds.toFixed(2)} s done`);
  } else if (state === TASK_STATES.catchUp) {
    const applied = (trace.catchUp?.applied ?? 0) + Number(result.applied);
    trace.catchUp = { pending: Number(result.pending), oldestSeconds: Number(result.oldestSeconds), rate: Number(result.rate), applied };
    progress.log(`CatchUp: ${String(result.applied)} changes (${Math.round(Number(result.rate))}/s); ${String(result.pending)} pending, oldest ${Number(result.oldestSeconds).toFixed(1)} s`);
  } else if (state !== TASK_STATES.preflight) {
    progress.log(`${state} done (${seconds.toFixed(1)} s)`);
  }
}

/** The handlers' environment for a local run (restored afterwards). */
function localEnvironment(options: LocalRunOptions): Record<string, string | undefined> {
  return {
    [ENV.sourceUrl]: options.sourceUrl,
    [ENV.targetUrl]: options.targetUrl ?? options.sourceUrl,
    [ENV.sourceSecretArn]: undefined,
    [ENV.targetSecretArn]: undefined,
    [ENV.bucket]: options.bucket,
    [ENV.prefix]: options.prefix ?? '',
    [ENV.s3Endpoint]: options.s3Endpoint,
    [ENV.s3LocalServer]: options.s3LocalServer ? 'true' : undefined,
    [ENV.kmsKeyId]: options.kmsKeyId,
    [ENV.timeBudgetMs]: String(options.timeBudgetMs ?? LOCAL_TIME_BUDGET_MS),
  };
}

/** Runs the whole workflow locally; resolves with the Report task's output or the failure (never throws for a failed execution). */
export async function runLocalWorkflow(options: LocalRunOptions): Promise<LocalRunOutcome> {
  const progress = options.progress ?? silentProgress;
  const started = Date.now();
  const stepMap = new Map<string, StepSummary>();
  const verifyItems = new Map<string, { invocations: number; seconds: number }>();
  const trace: { -readonly [K in keyof LocalRunTrace]: LocalRunTrace[K] } = { steps: [], backups: {}, seconds: 0 };
  const handlers = loadTaskHandlers();

  const estimates = new RowEstimates(options, progress);
  const migrateSpan: { first?: number; last?: number } = {};
  const bound: Record<string, LocalTaskHandler> = {};
  for (const [state, handler] of Object.entries(handlers)) {
    bound[state] = (async (event: Record<string, unknown>) => {
      trace.lastTask = state;
      if (state === TASK_STATES.backupTable) progress.start(`backup ${String(event.table)}`);
      if (state === TASK_STATES.migrateStep) progress.start(`migrate ${String(event.step)}`);
      const t0 = Date.now();
      const result = (await handler(event)) as Record<string, unknown>;
      const seconds = (Date.now() - t0) / 1000;
      if (state === TASK_STATES.migrateStep) {
        migrateSpan.first ??= t0;
        migrateSpan.last = Date.now();
        trace.migrateWall = (migrateSpan.last - migrateSpan.first) / 1000;
      }
      await estimates.observe(state, result);
      recordTaskResult({ trace, stepMap, progress, verifyItems }, state, result, seconds);
      return result;
    }) as LocalTaskHandler;
  }

  const definition = loadDefinition();
  const restoreEnv = withEnv(localEnvironment(options));

  const restoreConsole = captureConsole(progress);
  try {
    const result = await runLocally({
      definition,
      input: options.input,
      handlers: bound,
      executionName: options.executionName,
    });
    trace.seconds = (Date.now() - started) / 1000;
    return { ok: true, output: result.output as ReportResult, trace };
  } catch (err) {
    trace.seconds = (Date.now() - started) / 1000;
    if (err instanceof LocalExecutionFailedError) return { ok: false, failure: err, trace };
    throw err;
  } finally {
    restoreConsole();
    progress.close();
    restoreEnv();
  }
}
