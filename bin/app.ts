import { App, Annotations, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { MigrationStack } from '../lib/migration-stack';
import { ExamplePipelineStack } from '../lib/pipeline';

/**
 * CDK app: context → stack props. Synthesizes offline, without credentials.
 *
 *   npx cdk synth -c sourceSecretArn=arn:aws:secretsmanager:...:secret:tracetrack-db-AbCdEf \
 *     [-c targetSecretArn=...] [-c vpcId=vpc-... -c subnetIds=subnet-a,subnet-b -c securityGroupIds=sg-...] \
 *     [-c notifyEmail=ops@example.com] [-c pipeline=true]
 */
const PLACEHOLDER_SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:tracetrack-placeholder-AbCdEf';

const app = new App();
const context = (key: string): string | undefined => {
  const value: unknown = app.node.tryGetContext(key);
  if (value === undefined || value === null || value === '') return undefined;
  return String(value);
};
const list = (key: string): string[] | undefined =>
  context(key)
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);

const account = process.env.CDK_DEPLOY_ACCOUNT ?? process.env.CDK_DEFAULT_ACCOUNT;
const region = process.env.CDK_DEPLOY_REGION ?? process.env.CDK_DEFAULT_REGION;
const env = account && region ? { account, region } : undefined;

const sourceSecretArn = context('sourceSecretArn');
const stateMachineName = context('stateMachineName') ?? 'TraceTrackMigration';
const stack = new MigrationStack(app, context('stackName') ?? 'TraceTrackMigration', {
  env,
  description: 'TraceTrack database migration: Step Functions workflow, task functions, backup bucket',
  sourceSecretArn: sourceSecretArn ?? PLACEHOLDER_SECRET_ARN,
  targetSecretArn: context('targetSecretArn'),
  vpcId: context('vpcId'),
  subnetIds: list('subnetIds'),
  securityGroupIds: list('securityGroupIds'),
  notifyEmail: context('notifyEmail'),
  backupPrefix: context('backupPrefix'),
  stateMachineName,
});
if (sourceSecretArn === undefined) {
  Annotations.of(stack).addWarningV2(
    'tracetrack:placeholderSourceSecret',
    'No -c sourceSecretArn=<ARN of the source database secret> given: synthesized with a placeholder ARN. Do not deploy this template.',
  );
}

if (context('pipeline') === 'true') {
  new ExamplePipelineStack(app, 'TraceTrackMigrationPipeline', { env, stateMachineName });
}

Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
