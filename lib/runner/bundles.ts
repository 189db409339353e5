import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { TASK_STATES } from '../../lambdas/core/contract';
import { MigrationStack } from '../migration-stack';
import { extractDefinition, FAKE_ACCOUNT, FAKE_REGION } from './state-machine';

/**
 * `cdk synth` of the migration stack *with* bundling: the esbuild bundles in the cloud assembly are
 * the code `cdk deploy` uploads. Used by the bundled end-to-end test and by `npm run measure:bundles`;
 * the bundled runner (bundled-run.ts) executes the definition with each task bound to its bundle.
 */

/** One task's deployed function, as the template describes it. */
export interface BundledFunction {
  readonly logicalId: string;
  /** Task state name (TASK_STATES value). */
  readonly state: string;
  /** Absolute directory of the function's code asset (what is zipped and uploaded). */
  readonly assetDir: string;
  /** `index.handler` */
  readonly handler: string;
  readonly runtime: string;
  readonly memoryMiB: number;
  /** `Environment.Variables` of the template, unresolved (Ref / Fn::GetAtt as CloudFormation has them). */
  readonly environment: Readonly<Record<string, unknown>>;
}

export interface SynthesizedBundles {
  readonly outdir: string;
  readonly template: Record<string, unknown>;
  readonly definition: StateMachineDefinition;
  /** Keyed by task state name. */
  readonly functions: Readonly<Record<string, BundledFunction>>;
}

type Resource = { Type: string; Properties?: Record<string, unknown>; Metadata?: Record<string, unknown> };

/** The Lambda logical id each task state invokes (`Resource` is the function ARN; see state-machine.ts). */
function taskFunctionIds(states: Record<string, unknown>, out: Record<string, string> = {}): Record<string, string> {
  for (const [name, raw] of Object.entries(states)) {
    const state = raw as { Type: string; Resource?: string; ItemProcessor?: { States: Record<string, unknown> }; Iterator?: { States: Record<string, unknown> }; Branches?: { States: Record<string, unknown> }[] };
    if (state.Type === 'Task') {
      const id = /:function:([A-Za-z0-9]+)$/.exec(state.Resource ?? '')?.[1];
      if (!id) throw new Error(`synthesizeBundles: task ${name} does not invoke a function of the stack (Resource ${state.Resource}).`);
      out[name] = id;
    }
    const processor = state.ItemProcessor ?? state.Iterator;
    if (processor) taskFunctionIds(processor.States, out);
    for (const branch of state.Branches ?? []) taskFunctionIds(branch.States, out);
  }
  return out;
}

/** The secrets the bundled stack is synthesized with: two, so that a test can tell which function reads which. */
export const BUNDLED_SECRET_ARNS = {
  source: `arn:aws:secretsmanager:${FAKE_REGION}:${FAKE_ACCOUNT}:secret:bundled-source-AbCdEf`,
  target: `arn:aws:secretsmanager:${FAKE_REGION}:${FAKE_ACCOUNT}:secret:bundled-target-GhIjKl`,
} as const;

/** Synthesizes the stack into `outdir` with bundling, as `cdk synth` does (the feature flags of cdk.json). */
export function synthesizeBundles(outdir: string): SynthesizedBundles {
  const cdkJson = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'cdk.json'), 'utf8')) as { context?: object };
  const app = new App({ outdir, context: { ...cdkJson.context, 'aws:cdk:enable-asset-metadata': true } });
  const stack = new MigrationStack(app, 'BundledMigration', {
    sourceSecretArn: BUNDLED_SECRET_ARNS.source,
    targetSecretArn: BUNDLED_SECRET_ARNS.target,
  });
  const template = app.synth().getStackByName(stack.stackName).template as Record<string, unknown>;
  const resources = template.Resources as Record<string, Resource>;
  const definition = extractDefinition(template);
  const functions: Record<string, BundledFunction> = {};
  for (const [state, logicalId] of Object.entries(taskFunctionIds(definition.States as Record<string, unknown>))) {
    const fn = resources[logicalId];
    if (fn?.Type !== 'AWS::Lambda::Function') throw new Error(`synthesizeBundles: ${logicalId} (task ${state}) is not a Lambda function.`);
    const assetPath = fn.Metadata?.['aws:asset:path'];
    if (typeof assetPath !== 'string') throw new Error(`synthesizeBundles: ${logicalId} has no code asset in the assembly.`);
    const props = fn.Properties ?? {};
    functions[state] = {
      logicalId,
      state,
      assetDir: path.resolve(outdir, assetPath),
      handler: String(props.Handler),
      runtime: String(props.Runtime),
      memoryMiB: Number(props.MemorySize),
      environment: ((props.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables ?? {}),
    };
  }
  const missing = Object.values(TASK_STATES).filter((s) => !functions[s]);
  if (missing.length) throw new Error(`synthesizeBundles: no function for task state(s) ${missing.join(', ')}.`);
  return { outdir, template, definition, functions };
}
