import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { MigrationStack } from '../migration-stack';
import { extractDefinition, FAKE_ACCOUNT, FAKE_REGION } from './state-machine';

/**
 * Synthesizes the migration stack (no bundling, placeholder secrets) and takes the state machine
 * definition from its template. Kept apart from the local runner: aws-cdk-lib costs some hundreds of
 * MB, so the CLI runs this file in a child process (`node --import tsx synthesize.ts` prints the
 * definition) and the migrating process never loads the CDK.
 */
let cachedDefinition: StateMachineDefinition | undefined;

/** Synthesizes the migration stack in memory (no bundling, placeholder secrets) and returns its definition. Cached. */
export function synthesizeDefinition(): StateMachineDefinition {
  if (cachedDefinition) return cachedDefinition;
  // The feature flags of cdk.json, so that the definition is rendered as `cdk synth` renders it.
  const cdkJson = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'cdk.json'), 'utf8')) as { context?: object };
  const app = new App({ context: { ...cdkJson.context, 'aws:cdk:bundling-stacks': [] } });
  const stack = new MigrationStack(app, 'LocalDefinition', {
    sourceSecretArn: `arn:aws:secretsmanager:${FAKE_REGION}:${FAKE_ACCOUNT}:secret:local-source-AbCdEf`,
  });
  const template = app.synth().getStackByName(stack.stackName).template as object;
  cachedDefinition = extractDefinition(template);
  return cachedDefinition;
}


if (process.argv[1] && path.resolve(process.argv[1]) === __filename) {
  process.stdout.write(JSON.stringify(synthesizeDefinition()));
}
