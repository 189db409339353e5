import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  RedriveExecutionCommand,
  SFNClient,
  StartExecutionCommand,
  type DescribeExecutionCommandOutput,
  type HistoryEvent,
} from '@aws-sdk/client-sfn';
import { CliUsageError, EXIT, parseCommandArgs, parsePositiveNumber, type CliContext } from './common';

/**
 * `start`, `status`, `redrive`: the deployed state machine through the Step Functions API.
 * `--wait` follows the execution (progress from its history) and exits with its outcome.
 */

export const AWS_USAGE = `tracetrack-migrate start   --state-machine-arn ARN [--input FILE] [--name NAME] [--wait] [--poll-seconds 5]
tracetrack-migrate status  --execution-arn ARN
tracetrack-migrate redrive --execution-arn ARN [--wait] [--poll-seconds 5]`;

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'TIMED_OUT', 'ABORTED']);

export interface AwsDeps {
  readonly sfn?: SFNClient;
  readonly sleep?: (ms: number) => Promise<void>;
}

const sleepMs = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function client(deps: AwsDeps): SFNClient {
  return deps.sfn ?? new SFNClient({});
}

/** One progress line for a state that finished, from its output (counts of BackupTable / MigrateStep). */
export function describeStateExit(name: string, output: string | undefined): string | null {
  let value: Record<string, unknown> = {};
  try {
    value = output ? (JSON.parse(output) as Record<string, unknown>) : {};
  } catch {
    // not JSON: name only
  }
  const result = (value.result ?? value) as Record<string, unknown>;
  if (name === 'BackupTable' && typeof result.table === 'string') {
    return `backup ${result.table}: ${Number(result.rows)} rows${result.done ? ' done' : ''}`;
  }
  if (name === 'MigrateStep' && typeof result.step === 'string') {
    return `migrate ${result.step}: +${Number(result.migrated)} migrated, +${Number(result.rejected)} rejected${result.done ? ' done' : ''}`;
  }
  if (name === 'VerifyItem' && typeof result.label === 'string') {
    return result.done ? `verify ${result.label} done` : `verify ${result.label}: ${Number(result.chunks)} chunk(s)`;
  }
  // CatchUp's output is the whole state: its result is under `catchUp`.
  const lag = (value.catchUp ?? null) as Record<string, unknown> | null;
  if (name === 'CatchUp' && lag) {
    return `catch-up: +${Number(lag.applied)} changes (${Math.round(Number(lag.rate))}/s); ${Number(lag.pending)} pending, oldest ${Number(lag.oldestSeconds).toFixed(1)} s${lag.caughtUp ? ', caught up' : ''}`;
  }
  const cut = (value.cutover ?? null) as Record<string, unknown> | null;
  if (name === 'Cutover' && cut && typeof cut.writeFreezeMs === 'number') return `Cutover done: writes frozen for ${cut.writeFreezeMs} ms`;
  if (['Preflight', 'FinalizeBackup', 'Analyse', 'CreateSchema', 'PlanVerify', 'Verify', 'Cutover', 'Report'].includes(name)) return `${name} done`;
  return null;
}

/** Reads the history after event `afterId` (ascending); returns new lines, the last id and the last task state entered. */
export async function readHistory(sfn: SFNClient, executionArn: string, afterId: number): Promise<{ events: HistoryEvent[]; lastId: number }> {
  const events: HistoryEvent[] = [];
  let nextToken: string | undefined;
  do {
    const out = await sfn.send(new GetExecutionHistoryCommand({ executionArn, nextToken, maxResults: 1000, includeExecutionData: true }));
    for (const e of out.events ?? []) if ((e.id ?? 0) > afterId) events.push(e);
    nextToken = out.nextToken;
  } while (nextToken);
  const lastId = events.reduce((m, e) => Math.max(m, e.id ?? 0), afterId);
  return { events, lastId };
}

function failedStateOf(events: HistoryEvent[]): string | undefined {
  let entered: string | undefined;
  let failed: string | undefined;
  for (const e of events) {
    if (e.type?.endsWith('StateEntered')) entered = e.stateEnteredEventDetails?.name;
    if (e.type === 'TaskFailed' || e.type === 'LambdaFunctionFailed' || e.type === 'MapRunFailed' || e.type === 'ExecutionFailed') failed ??= entered;
    if (e.type === 'TaskFailed' || e.type === 'LambdaFunctionFailed') failed = entered;
  }
  return failed;
}

function printOutcome(ctx: CliContext, d: DescribeExecutionCommandOutput, events: HistoryEvent[]): number {
  const arn = d.executionArn ?? '';
  if (d.status === 'SUCCEEDED') {
    let summary = '';
    try {
      const out = JSON.parse(d.output ?? '{}') as { runId?: string; status?: string; reportKey?: string };
      summary = out.runId ? ` Run ${out.runId}: ${out.status}; report at ${out.reportKey}.` : '';
    } catch {
      // output not JSON
    }
    ctx.stdout(`Execution ${arn} succeeded.${summary}\n`);
    return EXIT.ok;
  }
  if (d.status === 'RUNNING' || d.status === 'PENDING_REDRIVE') {
    ctx.stdout(`Execution ${arn} is ${d.status}.\n`);
    return EXIT.ok;
  }
  const state = failedStateOf(events);
  ctx.stderr(`Execution ${arn} ${d.status}${state ? ` in step ${state}` : ''}${d.error ? ` with ${d.error}` : ''}:\n${d.cause ?? '(no cause given)'}\n`);
  ctx.stderr(
    d.status === 'ABORTED'
      ? `Next: start a new execution with the same runId to resume, or: tracetrack-migrate redrive --execution-arn ${arn} --wait\n`
      : `Next: fix the cause, then: tracetrack-migrate redrive --execution-arn ${arn} --wait (finished steps and batches are skipped)\n`,
  );
  return EXIT.failed;
}

/** Polls until the execution ends, printing a line per finished state; returns the exit status. */
export async function followExecution(ctx: CliContext, sfn: SFNClient, executionArn: string, pollMs: number, deps: AwsDeps, afterId = 0): Promise<number> {
  const sleep = deps.sleep ?? sleepMs;
  let lastId = afterId;
  const all: HistoryEvent[] = [];
  for (;;) {
    const d = await sfn.send(new DescribeExecutionCommand({ executionArn }));
    const h = await readHistory(sfn, executionArn, lastId);
    lastId = h.lastId;
    all.push(...h.events);
    for (const e of h.events) {
      if (e.type?.endsWith('StateExited') && e.stateExitedEventDetails?.name) {
        const line = describeStateExit(e.stateExitedEventDetails.name, e.stateExitedEventDetails.output);
        if (line) ctx.stdout(`${line}\n`);
      }
    }
    if (d.status && TERMINAL.has(d.status)) return printOutcome(ctx, d, all);
    await sleep(pollMs);
  }
}

const START_OPTIONS = {
  'state-machine-arn': { type: 'string' },
  input: { type: 'string' },
  name: { type: 'string' },
  wait: { type: 'boolean' },
  'poll-seconds': { type: 'string' },
} as const;

function pollMs(value: string | undefined): number {
  if (value === '0') return 0;
  return (parsePositiveNumber(value, '--poll-seconds') ?? 5) * 1000;
}

export async function startCommand(args: string[], ctx: CliContext, deps: AwsDeps = {}): Promise<number> {
  const v = parseCommandArgs('start', args, START_OPTIONS);
  const arn = v['state-machine-arn'];
  if (!arn) throw new CliUsageError('start needs --state-machine-arn ARN (the stack output StateMachineArn).');
  let input = '{}';
  if (v.input) {
    try {
      input = readFileSync(path.resolve(ctx.cwd, v.input), 'utf8');
    } catch (err) {
      throw new CliUsageError(`--input ${v.input}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`);
    }
    try {
      const parsed = JSON.parse(input) as unknown;
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
    } catch (err) {
      throw new CliUsageError(`--input ${v.input} must hold a JSON object (the execution input): ${(err as Error).message}.`);
    }
  }
  const sfn = client(deps);
  const out = await sfn.send(new StartExecutionCommand({ stateMachineArn: arn, input, name: v.name }));
  ctx.stdout(`Started ${out.executionArn}\n`);
  if (!v.wait) {
    ctx.stdout(`Follow it with: tracetrack-migrate status --execution-arn ${out.executionArn}\n`);
    return EXIT.ok;
  }
  return followExecution(ctx, sfn, out.executionArn!, pollMs(v['poll-seconds']), deps);
}

export async function statusCommand(args: string[], ctx: CliContext, deps: AwsDeps = {}): Promise<number> {
  const v = parseCommandArgs('status', args, { 'execution-arn': { type: 'string' } } as const);
  const arn = v['execution-arn'];
  if (!arn) throw new CliUsageError('status needs --execution-arn ARN.');
  const sfn = client(deps);
  const d = await sfn.send(new DescribeExecutionCommand({ executionArn: arn }));
  const { events } = await readHistory(sfn, arn, 0);
  ctx.stdout(`Status: ${d.status}; started ${d.startDate?.toISOString() ?? '-'}${d.stopDate ? `, stopped ${d.stopDate.toISOString()}` : ''}${d.redriveCount ? `, redriven ${d.redriveCount}×` : ''}\n`);
  const lines = events
    .filter((e) => e.type?.endsWith('StateExited') && e.stateExitedEventDetails?.name)
    .map((e) => describeStateExit(e.stateExitedEventDetails!.name!, e.stateExitedEventDetails!.output))
    .filter((l): l is string => l !== null);
  if (lines.length) ctx.stdout(`Last steps:\n${lines.slice(-10).map((l) => `  ${l}`).join('\n')}\n`);
  return printOutcome(ctx, d, events);
}

export async function redriveCommand(args: string[], ctx: CliContext, deps: AwsDeps = {}): Promise<number> {
  const v = parseCommandArgs('redrive', args, { 'execution-arn': { type: 'string' }, wait: { type: 'boolean' }, 'poll-seconds': { type: 'string' } } as const);
  const arn = v['execution-arn'];
  if (!arn) throw new CliUsageError('redrive needs --execution-arn ARN (of a FAILED, TIMED_OUT or ABORTED execution).');
  const sfn = client(deps);
  // Events before the redrive are history: progress starts after them.
  const { lastId } = await readHistory(sfn, arn, 0);
  const out = await sfn.send(new RedriveExecutionCommand({ executionArn: arn }));
  ctx.stdout(`Redriven ${arn} at ${out.redriveDate?.toISOString() ?? 'now'}\n`);
  if (!v.wait) return EXIT.ok;
  return followExecution(ctx, sfn, arn, pollMs(v['poll-seconds']), deps, lastId);
}
