import { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';
import { RETRYABLE_ERROR_NAMES } from '../lambdas/core/errors';
import { TASK_STATES, type TaskKey } from '../lambdas/core/contract';

/**
 * The one definition of the migration workflow. The stack deploys it; the local runner
 * (lib/runner/state-machine.ts) runs the same definition taken from the synthesized template.
 *
 * State data, top level (every payload is names, keys and cursors, never rows):
 *   after Preflight       { run, backupTables }                  (= PreflightResult)
 *   after FinalizeBackup  + backup: FinalizeBackupResult
 *   after Analyse         + analysis: AnalyseResult (its `waves`: the migration's work graph, core/work-graph.ts)
 *   during Migrate        + wave: { index, items }  — the wave the Migrate Map runs (PickWave … NextWave, IsMigrated)
 *   after PlanVerify      + verifyPlan: PlanVerifyResult         (round and item names)
 *   after Verify          + verification: VerifyResult
 *   after Cutover         + cutover: CutoverResult
 *   after Report          ReportResult                           (the execution's output)
 * Inside the Backup, Migrate and VerifyItems iterations:
 *   { run, table | step | item, progress: StepProgress }  — progress starts as { done: false, cursor: null };
 *   the task is re-entered with progress.cursor until progress.done.
 *
 * Failures are not caught: a failed task fails the execution, which can then be redriven from
 * the failed state (every task is idempotent and resumes from its own checkpoint).
 */

/** Errors of the Lambda service itself (not of our code): always worth a retry. */
export const LAMBDA_SERVICE_ERRORS: readonly string[] = [
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
];

/** Retry policy shared by every task. Anything not listed here fails the execution at once. */
export const TASK_RETRIES: readonly sfn.RetryProps[] = [
  {
    errors: [...RETRYABLE_ERROR_NAMES],
    interval: Duration.seconds(5),
    backoffRate: 2,
    maxAttempts: 5,
    maxDelay: Duration.minutes(2),
    jitterStrategy: sfn.JitterType.FULL,
  },
  {
    errors: [...LAMBDA_SERVICE_ERRORS],
    interval: Duration.seconds(2),
    backoffRate: 2,
    maxAttempts: 5,
    maxDelay: Duration.minutes(1),
    jitterStrategy: sfn.JitterType.FULL,
  },
];

/** Upper bound of every task: the Lambda maximum (resumable tasks return long before it). */
export const TASK_TIMEOUT = Duration.minutes(15);

/** Parallel table backups (each holds one source connection and one S3 upload). */
export const BACKUP_MAX_CONCURRENCY = 2;
/**
 * The run's connection limit (execution input `concurrency`): the Migrate Map runs at most this many items of
 * one wave at once (core/work-graph.ts), the VerifyItems Map at most this many verification items; each holds
 * one connection.
 */
export const CONCURRENCY_PATH = '$.run.concurrency';

/** Names of the workflow's non-task states (task states are TASK_STATES). */
export const FLOW_STATES = {
  backup: 'Backup',
  startTableBackup: 'StartTableBackup',
  isTableBackedUp: 'IsTableBackedUp',
  tableBackedUp: 'TableBackedUp',
  isDryRun: 'IsDryRun',
  dryRunDone: 'DryRunDone',
  startWaves: 'StartWaves',
  pickWave: 'PickWave',
  migrate: 'Migrate',
  nextWave: 'NextWave',
  isMigrated: 'IsMigrated',
  startStep: 'StartStep',
  isStepMigrated: 'IsStepMigrated',
  stepMigrated: 'StepMigrated',
  verifyItems: 'VerifyItems',
  startVerifyItem: 'StartVerifyItem',
  isItemVerified: 'IsItemVerified',
  itemVerified: 'ItemVerified',
  isCutoverRequested: 'IsCutoverRequested',
  isLive: 'IsLive',
  isCaughtUp: 'IsCaughtUp',
  waitForChanges: 'WaitForChanges',
} as const;

/** Live runs: pause between CatchUp invocations while the lag is above the threshold. */
export const CATCH_UP_WAIT = Duration.seconds(5);

/**
 * Seeds `progress` with a null cursor. A Pass state, because CDK drops `null` values from
 * an ItemSelector, and `$.progress.cursor` must exist for the task's payload.
 */
function startProgress(scope: Construct, name: string): sfn.Pass {
  return new sfn.Pass(scope, name, {
    result: sfn.Result.fromObject({ done: false, cursor: null }),
    resultPath: '$.progress',
  });
}

export interface MigrationWorkflowProps {
  /** The function behind each task state. */
  readonly functions: Readonly<Record<TaskKey, lambda.IFunction>>;
}

export class MigrationWorkflow extends Construct {
  /** Start of the workflow, for `DefinitionBody.fromChainable`. */
  readonly definition: sfn.IChainable;
  readonly tasks: Readonly<Record<TaskKey, tasks.LambdaInvoke>>;
  readonly backupMap: sfn.Map;
  readonly migrateMap: sfn.Map;
  readonly pickWave: sfn.Pass;
  readonly nextWave: sfn.Pass;
  readonly isMigrated: sfn.Choice;
  readonly verifyMap: sfn.Map;
  readonly isTableBackedUp: sfn.Choice;
  readonly isStepMigrated: sfn.Choice;
  readonly isLive: sfn.Choice;
  readonly isCaughtUp: sfn.Choice;

  constructor(scope: Construct, id: string, props: MigrationWorkflowProps) {
    super(scope, id);
    const t = this.createTasks(props);
    this.tasks = t;
    const backup = this.createLoop(t.backupTable, {
      choice: FLOW_STATES.isTableBackedUp, done: FLOW_STATES.tableBackedUp, map: FLOW_STATES.backup, start: FLOW_STATES.startTableBackup,
      itemsPath: '$.backupTables', item: 'table', maxConcurrency: BACKUP_MAX_CONCURRENCY,
    });
    this.isTableBackedUp = backup.choice;
    this.backupMap = backup.map;
    const migrate = this.createLoop(t.migrateStep, {
      choice: FLOW_STATES.isStepMigrated, done: FLOW_STATES.stepMigrated, map: FLOW_STATES.migrate, start: FLOW_STATES.startStep,
      itemsPath: '$.wave.items', item: 'step', maxConcurrencyPath: CONCURRENCY_PATH,
    });
    this.isStepMigrated = migrate.choice;
    this.migrateMap = migrate.map;
    const waves = this.createWaveLoop(migrate.map);
    this.pickWave = waves.pick;
    this.nextWave = waves.next;
    this.isMigrated = waves.isMigrated;

    const isCutoverRequested = new sfn.Choice(this, FLOW_STATES.isCutoverRequested)
      .when(sfn.Condition.booleanEquals('$.run.cutover', true), t.cutover.next(t.report))
      .otherwise(t.report);

    // Live runs: CatchUp → IsCaughtUp → (WaitForChanges → CatchUp)* until the lag is under the threshold,
    // then cut over if asked (the capture is removed there) or end caught up, capture on.
    const waitForChanges = new sfn.Wait(this, FLOW_STATES.waitForChanges, { time: sfn.WaitTime.duration(CATCH_UP_WAIT) });
    this.isCaughtUp = new sfn.Choice(this, FLOW_STATES.isCaughtUp)
      .when(sfn.Condition.booleanEquals('$.catchUp.caughtUp', true), isCutoverRequested)
      .otherwise(waitForChanges.next(t.catchUp));
    t.catchUp.next(this.isCaughtUp);
    this.isLive = new sfn.Choice(this, FLOW_STATES.isLive)
      .when(sfn.Condition.and(sfn.Condition.isPresent('$.run.live'), sfn.Condition.booleanEquals('$.run.live', true)), t.catchUp)
      .otherwise(isCutoverRequested);
    // Verify: PlanVerify lists the items, the VerifyItems Map runs them (each resumable), Verify assembles the verdict.
    const verifyItems = this.createLoop(t.verifyItem, {
      choice: FLOW_STATES.isItemVerified, done: FLOW_STATES.itemVerified, map: FLOW_STATES.verifyItems, start: FLOW_STATES.startVerifyItem,
      itemsPath: '$.verifyPlan.items', item: 'item', maxConcurrencyPath: CONCURRENCY_PATH,
    });
    this.verifyMap = verifyItems.map;
    this.isMigrated.otherwise(t.planVerify);
    t.planVerify.next(this.verifyMap).next(t.verify).next(this.isLive);
    const migrateAndVerify = t.createSchema.next(waves.start);
    const isDryRun = new sfn.Choice(this, FLOW_STATES.isDryRun)
      .when(sfn.Condition.booleanEquals('$.run.dryRun', true), new sfn.Succeed(this, FLOW_STATES.dryRunDone))
      .otherwise(migrateAndVerify);

    this.definition = t.preflight.next(this.backupMap).next(t.finalizeBackup).next(t.analyse).next(isDryRun);
  }

  /** One Lambda task state per task, each bounded by the Lambda maximum and retried by error name. */
  private createTasks(props: MigrationWorkflowProps): Record<TaskKey, tasks.LambdaInvoke> {
    const run = { run: sfn.JsonPath.objectAt('$.run') };
    const invoke = (key: TaskKey, payload: Record<string, unknown>, resultPath?: string) => {
      const task = new tasks.LambdaInvoke(this, TASK_STATES[key], {
        stateName: TASK_STATES[key],
        lambdaFunction: props.functions[key],
        // The task's output is exactly the handler's return value, locally and in AWS.
        payloadResponseOnly: true,
        retryOnServiceExceptions: false,
        payload: sfn.TaskInput.fromObject(payload),
        resultPath,
        // As long as a Lambda may run. Set explicitly: a Task state without TimeoutSeconds means
        // "unbounded" in AWS but 60 s in the local runner, and both must behave the same.
        taskTimeout: sfn.Timeout.duration(TASK_TIMEOUT),
      });
      for (const retry of TASK_RETRIES) task.addRetry(retry);
      return task;
    };
    return {
      preflight: invoke('preflight', {
        input: sfn.JsonPath.objectAt('$$.Execution.Input'),
        executionName: sfn.JsonPath.stringAt('$$.Execution.Name'),
      }),
      backupTable: invoke('backupTable', { ...run, table: sfn.JsonPath.stringAt('$.table'), cursor: sfn.JsonPath.stringAt('$.progress.cursor') }, '$.progress'),
      finalizeBackup: invoke('finalizeBackup', run, '$.backup'),
      analyse: invoke('analyse', run, '$.analysis'),
      createSchema: invoke('createSchema', run, sfn.JsonPath.DISCARD),
      migrateStep: invoke('migrateStep', { ...run, step: sfn.JsonPath.stringAt('$.step'), cursor: sfn.JsonPath.stringAt('$.progress.cursor') }, '$.progress'),
      planVerify: invoke('planVerify', run, '$.verifyPlan'),
      verifyItem: invoke('verifyItem', { ...run, item: sfn.JsonPath.stringAt('$.item'), cursor: sfn.JsonPath.stringAt('$.progress.cursor') }, '$.progress'),
      verify: invoke('verify', { ...run, round: sfn.JsonPath.stringAt('$.verifyPlan.round') }, '$.verification'),
      catchUp: invoke('catchUp', run, '$.catchUp'),
      cutover: invoke('cutover', run, '$.cutover'),
      report: invoke('report', run),
    };
  }

  /**
   * A Map over items (tables to back up, migration steps) whose processor loops a resumable task on itself
   * until it reports done; each pass is one Lambda invocation of up to TIME_BUDGET_MS, which keeps the
   * execution history short (see README).
   */
  private createLoop(
    task: tasks.LambdaInvoke,
    o: { choice: string; done: string; map: string; start: string; itemsPath: string; item: string; maxConcurrency?: number; maxConcurrencyPath?: string },
  ): { choice: sfn.Choice; map: sfn.Map } {
    const choice = new sfn.Choice(this, o.choice)
      .when(sfn.Condition.booleanEquals('$.progress.done', true), new sfn.Succeed(this, o.done, { outputPath: '$.progress' }))
      .otherwise(task);
    const map = new sfn.Map(this, o.map, {
      itemsPath: o.itemsPath,
      itemSelector: { run: sfn.JsonPath.objectAt('$.run'), [o.item]: sfn.JsonPath.stringAt('$$.Map.Item.Value') },
      ...(o.maxConcurrencyPath ? { maxConcurrencyPath: o.maxConcurrencyPath } : { maxConcurrency: o.maxConcurrency }),
      // Per-item results stay out of the state (256 KB payload limit); the next task reads the checkpoints.
      resultPath: sfn.JsonPath.DISCARD,
    });
    map.itemProcessor(startProgress(this, o.start).next(task).next(choice));
    return { choice, map };
  }

  /**
   * The waves of the migration graph, one Map run per wave: StartWaves (index 0) → PickWave (the wave's items,
   * States.ArrayGetItem) → Migrate → NextWave (States.MathAdd) → IsMigrated (another wave? PickWave : on).
   * The same definition runs locally (aws-local-stepfunctions implements both intrinsics and MaxConcurrencyPath).
   */
  private createWaveLoop(map: sfn.Map): { start: sfn.Pass; pick: sfn.Pass; next: sfn.Pass; isMigrated: sfn.Choice } {
    const start = new sfn.Pass(this, FLOW_STATES.startWaves, { result: sfn.Result.fromObject({ index: 0 }), resultPath: '$.wave' });
    const pick = new sfn.Pass(this, FLOW_STATES.pickWave, {
      parameters: {
        index: sfn.JsonPath.numberAt('$.wave.index'),
        items: sfn.JsonPath.arrayGetItem(sfn.JsonPath.listAt('$.analysis.waves'), sfn.JsonPath.numberAt('$.wave.index')),
      },
      resultPath: '$.wave',
    });
    const next = new sfn.Pass(this, FLOW_STATES.nextWave, {
      parameters: { index: sfn.JsonPath.mathAdd(sfn.JsonPath.numberAt('$.wave.index'), 1) },
      resultPath: '$.wave',
    });
    const isMigrated = new sfn.Choice(this, FLOW_STATES.isMigrated).when(sfn.Condition.numberLessThanJsonPath('$.wave.index', '$.analysis.waveCount'), pick);
    start.next(pick).next(map).next(next).next(isMigrated);
    return { start, pick, next, isMigrated };
  }
}
