import {
  DescribeExecutionCommand,
  GetExecutionHistoryCommand,
  RedriveExecutionCommand,
  SFNClient,
  StartExecutionCommand,
  type HistoryEvent,
} from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { describeStateExit, redriveCommand, startCommand, statusCommand } from '../../lib/cli/aws';
import { CleanupStack, CliUsageError, type CliContext } from '../../lib/cli/common';

/** start / status / redrive against a mocked Step Functions API (no AWS here). */

const sfnMock = mockClient(SFNClient);
const SM = 'arn:aws:states:eu-west-1:123456789012:stateMachine:TraceTrackMigration';
const EXEC = 'arn:aws:states:eu-west-1:123456789012:execution:TraceTrackMigration:run-1';

function context() {
  const out = { stdout: '', stderr: '' };
  const ctx: CliContext = {
    stdout: (t) => void (out.stdout += t),
    stderr: (t) => void (out.stderr += t),
    env: {},
    tty: false,
    cwd: mkdtempSync(path.join(tmpdir(), 'tt-cli-aws-')),
    cleanups: new CleanupStack(),
  };
  return { ctx, out };
}

const noSleep = { sleep: async () => undefined };

const exited = (id: number, name: string, output: unknown): HistoryEvent => ({
  id, type: 'TaskStateExited', timestamp: new Date(), stateExitedEventDetails: { name, output: JSON.stringify(output) },
});
const entered = (id: number, name: string): HistoryEvent => ({ id, type: 'TaskStateEntered', timestamp: new Date(), stateEnteredEventDetails: { name } });
const event = (id: number, type: HistoryEvent['type'], extra: Partial<HistoryEvent> = {}): HistoryEvent => ({ id, type, timestamp: new Date(), ...extra });

beforeEach(() => sfnMock.reset());

describe('tracetrack-migrate start', () => {
  it('starts an execution with the input file and returns at once without --wait', async () => {
    const { ctx, out } = context();
    writeFileSync(path.join(ctx.cwd, 'input.json'), JSON.stringify({ runId: 'run-1', cutover: true }));
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: EXEC, startDate: new Date() });
    const code = await startCommand(['--state-machine-arn', SM, '--input', 'input.json'], ctx);
    expect(code).toBe(0);
    const call = sfnMock.commandCalls(StartExecutionCommand)[0]!;
    expect(call.args[0].input).toMatchObject({ stateMachineArn: SM });
    expect(JSON.parse(call.args[0].input.input!)).toEqual({ runId: 'run-1', cutover: true });
    expect(out.stdout).toContain(EXEC);
    expect(out.stdout).toContain('status --execution-arn');
  });

  it('--wait follows the history, prints progress, and exits 0 when the execution succeeds', async () => {
    const { ctx, out } = context();
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: EXEC });
    sfnMock
      .on(DescribeExecutionCommand)
      .resolvesOnce({ executionArn: EXEC, status: 'RUNNING' })
      .resolves({ executionArn: EXEC, status: 'SUCCEEDED', output: JSON.stringify({ runId: 'run-1', status: 'completed', reportKey: 'runs/run-1/report.json' }) });
    sfnMock
      .on(GetExecutionHistoryCommand)
      .resolvesOnce({ events: [entered(1, 'BackupTable'), exited(2, 'BackupTable', { table: 'bag', rows: 5000, done: true, cursor: null })] })
      .resolves({
        events: [
          entered(1, 'BackupTable'), exited(2, 'BackupTable', { table: 'bag', rows: 5000, done: true, cursor: null }),
          entered(3, 'MigrateStep'), exited(4, 'MigrateStep', { step: 'bag', migrated: 4988, rejected: 12, batches: 1, done: true, cursor: null }),
        ],
      });
    const code = await startCommand(['--state-machine-arn', SM, '--wait', '--poll-seconds', '0'], ctx, noSleep);
    expect(code).toBe(0);
    expect(out.stdout).toContain('backup bag: 5000 rows done');
    expect(out.stdout).toContain('migrate bag: +4988 migrated, +12 rejected done');
    // Each event is printed once although the history is read twice.
    expect(out.stdout.match(/backup bag/g)).toHaveLength(1);
    expect(out.stdout).toMatch(/succeeded\. Run run-1: completed; report at runs\/run-1\/report\.json/);
  });

  it('--wait exits 1 with the failing step, error, cause and the redrive command', async () => {
    const { ctx, out } = context();
    sfnMock.on(StartExecutionCommand).resolves({ executionArn: EXEC });
    sfnMock.on(DescribeExecutionCommand).resolves({ executionArn: EXEC, status: 'FAILED', error: 'PlanError', cause: 'table "mystery" has rows and maps to nothing' });
    sfnMock.on(GetExecutionHistoryCommand).resolves({
      events: [entered(1, 'Preflight'), exited(2, 'Preflight', {}), entered(3, 'Analyse'), event(4, 'TaskFailed', { taskFailedEventDetails: { resourceType: 'lambda', resource: 'invoke', error: 'PlanError' } }), event(5, 'ExecutionFailed')],
    });
    const code = await startCommand(['--state-machine-arn', SM, '--wait', '--poll-seconds', '0'], ctx, noSleep);
    expect(code).toBe(1);
    expect(out.stderr).toContain('FAILED in step Analyse with PlanError');
    expect(out.stderr).toContain('mystery');
    expect(out.stderr).toContain(`redrive --execution-arn ${EXEC}`);
  });

  it('refuses a missing ARN or an input file that is not a JSON object (usage errors)', async () => {
    const { ctx } = context();
    await expect(startCommand([], ctx)).rejects.toBeInstanceOf(CliUsageError);
    writeFileSync(path.join(ctx.cwd, 'bad.json'), '[1, 2]');
    await expect(startCommand(['--state-machine-arn', SM, '--input', 'bad.json'], ctx)).rejects.toThrow(/JSON object/);
    expect(sfnMock.commandCalls(StartExecutionCommand)).toHaveLength(0);
  });
});

describe('tracetrack-migrate status', () => {
  it('prints the status and the last steps; exit 0 while running', async () => {
    const { ctx, out } = context();
    sfnMock.on(DescribeExecutionCommand).resolves({ executionArn: EXEC, status: 'RUNNING', startDate: new Date('2026-01-01T00:00:00Z') });
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [entered(1, 'MigrateStep'), exited(2, 'MigrateStep', { step: 'user', migrated: 10, rejected: 1, done: false, cursor: 'x' })] });
    expect(await statusCommand(['--execution-arn', EXEC], ctx)).toBe(0);
    expect(out.stdout).toContain('Status: RUNNING; started 2026-01-01T00:00:00.000Z');
    expect(out.stdout).toContain('migrate user: +10 migrated, +1 rejected');
  });

  it('follows the history across pages', async () => {
    const { ctx, out } = context();
    sfnMock.on(DescribeExecutionCommand).resolves({ executionArn: EXEC, status: 'TIMED_OUT' });
    sfnMock
      .on(GetExecutionHistoryCommand, { executionArn: EXEC, nextToken: undefined })
      .resolves({ events: [exited(1, 'Preflight', {})], nextToken: 'p2' })
      .on(GetExecutionHistoryCommand, { executionArn: EXEC, nextToken: 'p2' })
      .resolves({ events: [exited(2, 'FinalizeBackup', {})] });
    expect(await statusCommand(['--execution-arn', EXEC], ctx)).toBe(1);
    expect(out.stdout).toContain('FinalizeBackup done');
    expect(out.stderr).toContain('TIMED_OUT');
  });
});

describe('tracetrack-migrate redrive', () => {
  it('redrives and, with --wait, prints only what happened after the redrive', async () => {
    const { ctx, out } = context();
    const before = [entered(1, 'MigrateStep'), exited(2, 'MigrateStep', { step: 'user', migrated: 5, rejected: 0, done: true, cursor: null }), event(3, 'ExecutionFailed')];
    sfnMock
      .on(GetExecutionHistoryCommand)
      .resolvesOnce({ events: before })
      .resolves({ events: [...before, event(4, 'ExecutionRedriven'), exited(5, 'MigrateStep', { step: 'bag', migrated: 7, rejected: 0, done: true, cursor: null })] });
    sfnMock.on(RedriveExecutionCommand).resolves({ redriveDate: new Date('2026-01-02T00:00:00Z') });
    sfnMock.on(DescribeExecutionCommand).resolves({ executionArn: EXEC, status: 'SUCCEEDED', output: '{}' });
    expect(await redriveCommand(['--execution-arn', EXEC, '--wait', '--poll-seconds', '0'], ctx, noSleep)).toBe(0);
    expect(sfnMock.commandCalls(RedriveExecutionCommand)[0]!.args[0].input).toEqual({ executionArn: EXEC });
    expect(out.stdout).toContain('Redriven');
    expect(out.stdout).toContain('migrate bag: +7');
    expect(out.stdout).not.toContain('migrate user');
  });

  it('without --wait only redrives', async () => {
    const { ctx } = context();
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [] });
    sfnMock.on(RedriveExecutionCommand).resolves({ redriveDate: new Date() });
    expect(await redriveCommand(['--execution-arn', EXEC], ctx)).toBe(0);
    expect(sfnMock.commandCalls(DescribeExecutionCommand)).toHaveLength(0);
  });
});

describe('describeStateExit', () => {
  it.each([
    ['BackupTable', { table: 'scan', rows: 3, done: false }, 'backup scan: 3 rows'],
    ['MigrateStep', { step: 'link', migrated: 2, rejected: 1, done: true }, 'migrate link: +2 migrated, +1 rejected done'],
    ['PlanVerify', { round: 'v1', items: ['v1/1'] }, 'PlanVerify done'],
    ['VerifyItem', { item: 'v1/1', label: 'scan (keys start–499999)', chunks: 1, done: false }, 'verify scan (keys start–499999): 1 chunk(s)'],
    ['VerifyItem', { item: 'v1/1', label: 'orphans scan', chunks: 1, done: true }, 'verify orphans scan done'],
    ['Verify', {}, 'Verify done'],
    ['CheckBackupDone', {}, null],
  ])('%s %j → %s', (name, output, line) => {
    expect(describeStateExit(name, JSON.stringify(output))).toBe(line);
  });
});
