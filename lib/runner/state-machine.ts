import './polyfills';
import { ExecutionError, StateMachine, type StateMachineDefinition } from 'aws-local-stepfunctions';
import { TASK_STATES } from '../../lambdas/core/contract';

/**
 * Runs the deployed workflow definition in-process: the definition is taken from the synthesized
 * CloudFormation template, so the machine tested locally is the machine deployed.
 */

export const FAKE_ACCOUNT = '123456789012';
export const FAKE_REGION = 'us-east-1';
const PSEUDO_PARAMETERS: Record<string, string> = {
  'AWS::Partition': 'aws',
  'AWS::Region': FAKE_REGION,
  'AWS::AccountId': FAKE_ACCOUNT,
  'AWS::URLSuffix': 'amazonaws.com',
};

type Template = { Resources?: Record<string, { Type: string; Properties?: Record<string, unknown> }> };

/** Resolves the intrinsics a DefinitionString contains: Fn::Join, Fn::GetAtt (→ fake Lambda ARNs), Ref (pseudo parameters). */
function resolveIntrinsic(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    if ('Fn::Join' in obj) {
      const [separator, parts] = obj['Fn::Join'] as [string, unknown[]];
      return parts.map(resolveIntrinsic).join(separator);
    }
    if ('Fn::GetAtt' in obj) {
      const [logicalId, attribute] = obj['Fn::GetAtt'] as [string, string];
      if (attribute !== 'Arn') throw new Error(`extractDefinition: cannot resolve Fn::GetAtt ${logicalId}.${attribute}.`);
      return `arn:aws:lambda:${FAKE_REGION}:${FAKE_ACCOUNT}:function:${logicalId}`;
    }
    if ('Ref' in obj) {
      const name = obj.Ref as string;
      const pseudo = PSEUDO_PARAMETERS[name];
      if (pseudo === undefined) throw new Error(`extractDefinition: cannot resolve Ref ${name}.`);
      return pseudo;
    }
  }
  throw new Error(`extractDefinition: unsupported value in DefinitionString: ${JSON.stringify(value)}`);
}

/** The ASL definition of the template's (single) state machine, with function ARNs replaced by fake ones. */
export function extractDefinition(template: object): StateMachineDefinition {
  const machines = Object.values((template as Template).Resources ?? {}).filter(
    (r) => r.Type === 'AWS::StepFunctions::StateMachine',
  );
  if (machines.length !== 1) {
    throw new Error(`extractDefinition: expected one AWS::StepFunctions::StateMachine, found ${machines.length}.`);
  }
  const definitionString = machines[0]!.Properties?.DefinitionString;
  if (definitionString === undefined) throw new Error('extractDefinition: the state machine has no DefinitionString.');
  return JSON.parse(resolveIntrinsic(definitionString)) as StateMachineDefinition;
}

/** One task's local implementation: receives the task's payload, returns the handler's result. */
export type LocalTaskHandler = (event: never) => Promise<unknown>;

export interface RunLocallyOptions {
  /** @default synthesizeDefinition() */
  readonly definition: StateMachineDefinition;
  readonly input: unknown;
  /** Keyed by task state name (TASK_STATES values); every task state of the definition needs one. */
  readonly handlers: Readonly<Record<string, LocalTaskHandler>>;
  /** `$$.Execution.Name`. @default 'local-<timestamp>' */
  readonly executionName?: string;
  /** Wait between retries in ms (instead of the definition's backoff). @default 0 */
  readonly retryIntervalMs?: number;
  /** Called for every execution event (state entered/exited/failed/retried, map iterations), for progress. */
  readonly onEvent?: (event: LocalExecutionEvent) => void;
}

export interface LocalExecutionEvent {
  readonly type: string;
  readonly state?: string;
  readonly index?: number;
  readonly error?: string;
  readonly cause?: unknown;
}

export interface LocalRunResult {
  readonly output: unknown;
  /** States entered (AWS bills and counts these as state transitions). */
  readonly stateTransitions: number;
  /** Task invocations, retries included. */
  readonly taskInvocations: number;
  readonly retries: number;
}

/** The execution failed: `error` is the error name Step Functions would report (e.g. `MappingError`). */
export class LocalExecutionFailedError extends Error {
  override readonly name = 'LocalExecutionFailedError';
  constructor(
    readonly error: string,
    readonly causeMessage: string,
    readonly state: string | undefined,
    readonly counts: Omit<LocalRunResult, 'output'>,
    options?: { cause?: unknown },
  ) {
    super(`The workflow failed${state ? ` in ${state}` : ''} with ${error}: ${causeMessage}`, options);
  }
}

const TASK_STATE_NAMES = new Set<string>(Object.values(TASK_STATES));
const LOCAL_WAIT_MS = 1000;

/**
 * Runs the workflow with in-process handlers. Errors thrown by a handler are matched by their
 * `name` against the definition's Retry lists, as Lambda's `errorType` is in AWS.
 */
export async function runLocally(options: RunLocallyOptions): Promise<LocalRunResult> {
  const definition = options.definition;
  const taskStates = collectTaskStates(definition);
  const missing = taskStates.filter((name) => !options.handlers[name]);
  if (missing.length > 0) throw new Error(`runLocally: no handler for task state(s) ${missing.join(', ')}.`);

  const machine = new StateMachine(definition, { validationOptions: { checkArn: false } });
  const retryInterval = options.retryIntervalMs ?? 0;
  const execution = machine.run(options.input as never, {
    overrides: {
      taskResourceLocalHandlers: Object.fromEntries(
        taskStates.map((name) => [name, options.handlers[name] as (input: unknown) => Promise<never>]),
      ),
      retryIntervalOverrides: Object.fromEntries(taskStates.map((name) => [name, retryInterval])),
      // Top-level Wait states (a live run's pause between catch-ups): one second locally.
      waitTimeOverrides: Object.fromEntries(Object.entries(definition.States).filter(([, st]) => st.Type === 'Wait').map(([name]) => [name, LOCAL_WAIT_MS])),
    },
    context: { Execution: { Name: options.executionName ?? `local-${Date.now()}` } },
  });

  const counts = { stateTransitions: 0, taskInvocations: 0, retries: 0 };
  let failedState: string | undefined;
  const consumeEvents = (async () => {
    for await (const event of execution.eventLogs) {
      const e = event as unknown as { type: string; state?: { name: string; type: string }; index?: number; Error?: string; Cause?: unknown };
      if (e.type === 'StateEntered') {
        counts.stateTransitions++;
        if (e.state?.type === 'Task') counts.taskInvocations++;
      } else if (e.type === 'StateRetried') {
        counts.retries++;
        counts.taskInvocations++;
      } else if (e.type === 'StateFailed' && e.state?.type === 'Task') {
        failedState = e.state.name;
      }
      options.onEvent?.({ type: e.type, state: e.state?.name, index: e.index, error: e.Error, cause: e.Cause });
    }
  })();

  try {
    const output = await execution.result;
    await consumeEvents;
    return { output, ...counts };
  } catch (err) {
    await consumeEvents.catch(() => undefined);
    const cause = err instanceof ExecutionError ? (err.cause as Error | undefined) : (err as Error);
    throw new LocalExecutionFailedError(cause?.name ?? 'Error', cause?.message ?? String(err), failedState, counts, {
      cause,
    });
  }
}

/** Names of the Task states of a definition, Map iterations included. */
function collectTaskStates(definition: Pick<StateMachineDefinition, 'States'>): string[] {
  const names: string[] = [];
  for (const [name, state] of Object.entries(definition.States)) {
    if (state.Type === 'Task') names.push(name);
    if (state.Type === 'Map') {
      const processor = state.ItemProcessor ?? state.Iterator;
      if (processor) names.push(...collectTaskStates(processor));
    }
    if (state.Type === 'Parallel') for (const branch of state.Branches) names.push(...collectTaskStates(branch));
  }
  for (const name of names) {
    if (!TASK_STATE_NAMES.has(name)) throw new Error(`runLocally: task state '${name}' is not in TASK_STATES.`);
  }
  return names;
}
