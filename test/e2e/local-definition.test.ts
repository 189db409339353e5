import { describe, expect, it } from 'vitest';
import { MappingError, TransientDatabaseError } from '../../lambdas/core/errors';
import type { ExecutionInput, RunContext } from '../../lambdas/core/contract';
import { TASK_STATES } from '../../lambdas/core/contract';
import { LocalExecutionFailedError, runLocally } from '../../lib/runner/state-machine';
import { synthesizeDefinition } from '../../lib/runner/synthesize';

/**
 * The definition taken from the synthesized template, run with fake in-process handlers (no database):
 * what is tested here is the workflow's shape, not the engine.
 */

type Call = { state: string; event: Record<string, unknown> };

function runContext(input: ExecutionInput): RunContext {
  return {
    runId: input.runId ?? 'r1',
    sourceSchema: 'public',
    targetSchema: 'tracetrack',
    appSchema: 'public',
    crossDatabase: false,
    tables: null,
    skipTables: [],
    batchSize: 1000,
    concurrency: input.concurrency ?? 4,
    cutover: input.cutover ?? false,
    dryRun: input.dryRun ?? false,
    mappingKey: null,
    runTime: '2024-01-01T00:00:00.000Z',
    prefix: 'runs/r1/',
  };
}

/** Fake handlers: backups take `backupPasses[table]` passes, steps take `stepPasses[step]` passes. */
function fakeHandlers(opts: {
  backupPasses?: Record<string, number>;
  stepPasses?: Record<string, number>;
  itemPasses?: Record<string, number>;
  override?: Partial<Record<string, (event: Record<string, unknown>, calls: Call[]) => unknown>>;
}) {
  const calls: Call[] = [];
  const passes = (cursor: unknown) => (cursor === null ? 1 : Number(cursor) + 1);
  const behaviour: Record<string, (event: Record<string, unknown>) => unknown> = {
    [TASK_STATES.preflight]: (e) => ({ run: runContext(e.input as ExecutionInput), backupTables: ['user', 'bag', 'scan'] }),
    [TASK_STATES.backupTable]: (e) => {
      const n = passes(e.cursor);
      const done = n >= (opts.backupPasses?.[e.table as string] ?? 1);
      return { table: e.table, rows: 10 * n, done, cursor: done ? null : String(n) };
    },
    [TASK_STATES.finalizeBackup]: () => ({ manifestKey: 'runs/r1/backup/manifest.json', tables: 3, rows: 30 }),
    [TASK_STATES.analyse]: () => ({
      planKey: 'runs/r1/plan.json', steps: ['prepare', 'user', 'bag', 'finalize'], waves: [['prepare'], ['user'], ['bag'], ['finalize']], waveCount: 4, decisions: 5, warnings: 0,
    }),
    [TASK_STATES.createSchema]: () => ({ created: true }),
    [TASK_STATES.migrateStep]: (e) => {
      const n = passes(e.cursor);
      const done = n >= (opts.stepPasses?.[e.step as string] ?? 1);
      return { step: e.step, migrated: n, rejected: 0, batches: n, done, cursor: done ? null : String(n) };
    },
    [TASK_STATES.planVerify]: () => ({ round: 'v1', items: ['v1/1', 'v1/2'] }),
    [TASK_STATES.verifyItem]: (e) => {
      const n = passes(e.cursor);
      const done = n >= (opts.itemPasses?.[e.item as string] ?? 1);
      return { item: e.item, label: String(e.item), chunks: n, done, cursor: done ? null : String(n) };
    },
    [TASK_STATES.verify]: () => ({ passed: true, reportKey: 'runs/r1/verify.json', failedChecks: [] }),
    [TASK_STATES.cutover]: () => ({ status: 'cut-over', legacySchema: 'legacy_r1' }),
    [TASK_STATES.report]: (e) => ({ runId: (e.run as RunContext).runId, status: 'migrated', reportKey: 'runs/r1/report.json', tables: {} }),
  };
  const handlers = Object.fromEntries(
    Object.values(TASK_STATES).map((state) => [
      state,
      async (event: Record<string, unknown>) => {
        calls.push({ state, event });
        const override = opts.override?.[state];
        return override ? override(event, calls) : behaviour[state]!(event);
      },
    ]),
  );
  return { handlers, calls };
}

const order = (calls: Call[]) => calls.map((c) => c.state);

describe('the workflow definition, run locally', () => {
  it('is the definition of the synthesized stack, with TASK_STATES as task names', () => {
    const definition = synthesizeDefinition() as unknown as { StartAt: string; States: Record<string, { Type: string }> };
    expect(definition.StartAt).toBe(TASK_STATES.preflight);
    expect(definition.States[TASK_STATES.preflight]?.Type).toBe('Task');
    expect(synthesizeDefinition()).toBe(synthesizeDefinition());
  });

  it('has only inline Maps: aws-local-stepfunctions would run a DISTRIBUTED processor inline, testing another machine than the deployed one', () => {
    const maps: { name: string; mode: unknown }[] = [];
    const walk = (states: Record<string, Record<string, unknown>>) => {
      for (const [name, st] of Object.entries(states)) {
        if (st.Type !== 'Map') continue;
        const processor = st.ItemProcessor as { ProcessorConfig?: { Mode?: string }; States: Record<string, Record<string, unknown>> };
        maps.push({ name, mode: processor.ProcessorConfig?.Mode ?? 'INLINE' });
        walk(processor.States);
      }
    };
    walk((synthesizeDefinition() as unknown as { States: Record<string, Record<string, unknown>> }).States);
    expect(maps).toEqual([{ name: 'Backup', mode: 'INLINE' }, { name: 'Migrate', mode: 'INLINE' }, { name: 'VerifyItems', mode: 'INLINE' }]);
  });

  it('runs the tasks in order, loops backup and migrate until done, and outputs the report', async () => {
    const { handlers, calls } = fakeHandlers({ backupPasses: { bag: 3 }, stepPasses: { user: 2 }, itemPasses: { 'v1/2': 3 } });
    const result = await runLocally({ definition: synthesizeDefinition(), input: { runId: 'r1' }, handlers, executionName: 'exec-1' });

    expect(result.output).toEqual({ runId: 'r1', status: 'migrated', reportKey: 'runs/r1/report.json', tables: {} });
    expect(calls[0]).toEqual({ state: 'Preflight', event: { input: { runId: 'r1' }, executionName: 'exec-1' } });
    const backups = calls.filter((c) => c.state === 'BackupTable').map((c) => `${c.event.table as string}:${String(c.event.cursor)}`);
    expect(backups.sort()).toEqual(['bag:1', 'bag:2', 'bag:null', 'scan:null', 'user:null']);
    // Backups run in parallel (MaxConcurrency 2), so only the order around them is fixed.
    expect(order(calls).filter((s) => s !== 'BackupTable' && s !== 'VerifyItem')).toEqual([
      'Preflight',
      'FinalizeBackup',
      'Analyse',
      'CreateSchema',
      'MigrateStep',
      'MigrateStep',
      'MigrateStep',
      'MigrateStep',
      'MigrateStep',
      'PlanVerify',
      'Verify',
      'Report',
    ]);
    // Verification items run after PlanVerify and before Verify (in parallel), each resumed with its cursor.
    const states = order(calls);
    const items = calls.filter((c) => c.state === 'VerifyItem');
    expect(states.indexOf('VerifyItem')).toBeGreaterThan(states.indexOf('PlanVerify'));
    expect(states.lastIndexOf('VerifyItem')).toBeLessThan(states.indexOf('Verify'));
    expect(items.map((c) => `${c.event.item as string}:${String(c.event.cursor)}`).sort()).toEqual(['v1/1:null', 'v1/2:1', 'v1/2:2', 'v1/2:null']);
    expect(Object.keys(items[0]!.event).sort()).toEqual(['cursor', 'item', 'run']);
    // One item per wave here: the steps run in the order of the waves Analyse gave, each resumed with its cursor.
    expect(calls.filter((c) => c.state === 'MigrateStep').map((c) => `${c.event.step as string}:${String(c.event.cursor)}`)).toEqual([
      'prepare:null',
      'user:null',
      'user:1',
      'bag:null',
      'finalize:null',
    ]);
    // Payloads carry the run context and names only.
    const migrate = calls.find((c) => c.state === 'MigrateStep')!;
    expect(Object.keys(migrate.event).sort()).toEqual(['cursor', 'run', 'step']);
    expect(calls.find((c) => c.state === 'Verify')!.event).toMatchObject({ round: 'v1' });
    expect(Object.keys(calls.find((c) => c.state === 'Verify')!.event).sort()).toEqual(['round', 'run']);
    expect(result.taskInvocations).toBe(calls.length);
    expect(result.retries).toBe(0);
    // Per task pass: the task and its Choice; plus the top-level states and the terminal Succeed of each iteration.
    expect(result.stateTransitions).toBeGreaterThan(calls.length);
  });

  it.each([1, 2, 4])('runs the items of a wave at once, at most run.concurrency (%i), and a wave only after the one before', async (concurrency) => {
    const waves = [['prepare'], ['user'], ['bag', 'bill'], ['link', 'scan', 'bill_bag', 'passwords'], ['finalize']];
    let active = 0;
    let peak = 0;
    const events: string[] = [];
    const { handlers } = fakeHandlers({
      override: {
        [TASK_STATES.preflight]: (e) => ({ run: { ...runContext(e.input as ExecutionInput), concurrency }, backupTables: ['user'] }),
        [TASK_STATES.analyse]: () => ({ planKey: 'p', steps: waves.flat(), waves, waveCount: waves.length, decisions: 0, warnings: 0 }),
        [TASK_STATES.migrateStep]: async (e) => {
          active++;
          peak = Math.max(peak, active);
          events.push(`start ${e.step as string}`);
          await new Promise((r) => setTimeout(r, 20));
          events.push(`end ${e.step as string}`);
          active--;
          return { step: e.step, migrated: 0, rejected: 0, batches: 1, done: true, cursor: null };
        },
      },
    });
    await runLocally({ definition: synthesizeDefinition(), input: { runId: 'r1' }, handlers });
    expect(peak).toBe(Math.min(concurrency, 4));
    // Every item of a wave ends before any item of the next starts.
    waves.forEach((wave, i) => {
      const lastEnd = Math.max(...wave.map((s) => events.indexOf(`end ${s}`)));
      for (const later of waves.slice(i + 1).flat()) expect(events.indexOf(`start ${later}`)).toBeGreaterThan(lastEnd);
    });
    expect(events.filter((e) => e.startsWith('start')).sort()).toEqual(waves.flat().map((s) => `start ${s}`).sort());
  });

  it('stops after Analyse on a dry run', async () => {
    const { handlers, calls } = fakeHandlers({});
    const result = await runLocally({ definition: synthesizeDefinition(), input: { dryRun: true }, handlers });
    expect([...new Set(order(calls))]).toEqual(['Preflight', 'BackupTable', 'FinalizeBackup', 'Analyse']);
    expect(result.output).toMatchObject({ analysis: { planKey: 'runs/r1/plan.json' }, backup: { tables: 3 } });
  });

  it('cuts over only when asked', async () => {
    const without = fakeHandlers({});
    await runLocally({ definition: synthesizeDefinition(), input: {}, handlers: without.handlers });
    expect(order(without.calls)).not.toContain('Cutover');

    const withCutover = fakeHandlers({});
    await runLocally({ definition: synthesizeDefinition(), input: { cutover: true }, handlers: withCutover.handlers });
    expect(order(withCutover.calls).slice(-3)).toEqual(['Verify', 'Cutover', 'Report']);
  });

  it('retries a TransientDatabaseError and then succeeds', async () => {
    let failures = 2;
    const { handlers, calls } = fakeHandlers({
      override: {
        [TASK_STATES.migrateStep]: (e) => {
          if (e.step === 'user' && failures-- > 0) throw new TransientDatabaseError('connection reset');
          return { step: e.step, migrated: 1, rejected: 0, batches: 1, done: true, cursor: null };
        },
      },
    });
    const result = await runLocally({ definition: synthesizeDefinition(), input: {}, handlers });
    expect(result.retries).toBe(2);
    expect(calls.filter((c) => c.state === 'MigrateStep' && c.event.step === 'user')).toHaveLength(3);
    expect(order(calls).at(-1)).toBe('Report');
  });

  it('fails the execution with the name of a non-retryable error, without retrying it', async () => {
    const { handlers, calls } = fakeHandlers({
      override: {
        [TASK_STATES.analyse]: () => {
          throw new MappingError('mapping.json: table "bagz" does not exist');
        },
      },
    });
    const failure = await runLocally({ definition: synthesizeDefinition(), input: {}, handlers }).catch((err: unknown) => err);
    expect(failure).toBeInstanceOf(LocalExecutionFailedError);
    expect(failure).toMatchObject({ error: 'MappingError', state: 'Analyse', causeMessage: 'mapping.json: table "bagz" does not exist' });
    expect(order(calls).filter((s) => s === 'Analyse')).toHaveLength(1);
    expect(order(calls)).not.toContain('CreateSchema');
  });

  it('fails the execution when a task inside a Map fails', async () => {
    const { handlers } = fakeHandlers({
      override: {
        [TASK_STATES.backupTable]: (e) => {
          if (e.table === 'scan') throw new TransientDatabaseError('still down');
          return { table: e.table, rows: 1, done: true, cursor: null };
        },
      },
    });
    const failure = await runLocally({ definition: synthesizeDefinition(), input: {}, handlers }).catch((err: unknown) => err);
    // Five attempts after the first, then the execution fails (and can be redriven from Backup).
    expect(failure).toMatchObject({ error: 'TransientDatabaseError', state: 'BackupTable', counts: { retries: 5 } });
  });
});
