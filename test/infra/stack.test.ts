import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { App, type CfnElement, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { describe, expect, it } from 'vitest';
import { TASK_STATES, type TaskKey } from '../../lambdas/core/contract';
import { MigrationStack, TASK_FUNCTIONS, type MigrationStackProps } from '../../lib/migration-stack';
import { ExamplePipelineStack } from '../../lib/pipeline';

const SOURCE = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracetrack-source-AbCdEf';
const TARGET = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracetrack-target-GhIjKl';
const CDK_CONTEXT = (JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'cdk.json'), 'utf8')) as { context: object }).context;

function newApp(): App {
  return new App({ context: { ...CDK_CONTEXT, 'aws:cdk:bundling-stacks': [] } });
}

function build(props: Partial<MigrationStackProps> = {}) {
  const app = newApp();
  const stack = new MigrationStack(app, 'Test', { sourceSecretArn: SOURCE, targetSecretArn: TARGET, ...props });
  return { app, stack, template: Template.fromStack(stack) };
}

const logicalId = (stack: Stack, construct: { node: { defaultChild?: unknown } }) =>
  stack.getLogicalId(construct.node.defaultChild as CfnElement);

type Statement = { Effect: string; Action: string | string[]; Resource: unknown };
type Policy = { Properties: { PolicyDocument: { Statement: Statement[] }; Roles: Array<{ Ref: string }> } };

/** Logical ids of the roles whose policies allow `action` on exactly `resource`. */
function rolesAllowed(template: Template, action: string, resource: unknown): string[] {
  const roles = new Set<string>();
  for (const policy of Object.values(template.findResources('AWS::IAM::Policy')) as Policy[]) {
    for (const s of policy.Properties.PolicyDocument.Statement) {
      const actions = ([] as string[]).concat(s.Action);
      const resources = ([] as unknown[]).concat(s.Resource);
      if (s.Effect === 'Allow' && actions.includes(action) && resources.some((r) => JSON.stringify(r) === JSON.stringify(resource))) {
        for (const role of policy.Properties.Roles) roles.add(role.Ref);
      }
    }
  }
  return [...roles].sort();
}

const roleIdOf = (stack: MigrationStack, key: TaskKey) => logicalId(stack, stack.functions[key].role as never);
const tasksWith = (pred: (key: TaskKey) => boolean) => (Object.keys(TASK_FUNCTIONS) as TaskKey[]).filter(pred);

describe('MigrationStack', () => {
  const { app, stack, template } = build({ notifyEmail: 'ops@example.com' });

  it('keeps backups in a versioned, KMS-encrypted, private, TLS-only bucket that outlives the stack', () => {
    const bucketId = logicalId(stack, stack.bucket);
    const keyId = logicalId(stack, stack.key);
    template.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: Match.objectLike({
        VersioningConfiguration: { Status: 'Enabled' },
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            {
              BucketKeyEnabled: true,
              ServerSideEncryptionByDefault: { SSEAlgorithm: 'aws:kms', KMSMasterKeyID: { 'Fn::GetAtt': [keyId, 'Arn'] } },
            },
          ],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        LifecycleConfiguration: {
          Rules: [
            Match.objectLike({
              Status: 'Enabled',
              NoncurrentVersionExpiration: { NoncurrentDays: 90 },
              AbortIncompleteMultipartUpload: { DaysAfterInitiation: 7 },
            }),
          ],
        },
        LoggingConfiguration: Match.objectLike({ LogFilePrefix: 'backup-bucket/' }),
      }),
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: bucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Action: 's3:*',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            Principal: { AWS: '*' },
          }),
        ]),
      },
    });
    template.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Retain', Properties: Match.objectLike({ EnableKeyRotation: true }) });
  });

  it('has one Node.js 22 function per task, with the contract environment', () => {
    const fns = template.findResources('AWS::Lambda::Function');
    expect(Object.keys(fns)).toHaveLength(Object.keys(TASK_STATES).length);
    for (const fn of Object.values(fns)) expect(fn.Properties.Runtime).toBe('nodejs22.x');

    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: MigrateStep task',
      Timeout: 900,
      MemorySize: 1769,
      Handler: 'index.handler',
      Environment: {
        Variables: {
          SOURCE_SECRET_ARN: SOURCE,
          TARGET_SECRET_ARN: TARGET,
          BACKUP_BUCKET: { Ref: logicalId(stack, stack.bucket) },
          BACKUP_PREFIX: '',
          BACKUP_KMS_KEY_ID: { 'Fn::GetAtt': [logicalId(stack, stack.key), 'Arn'] },
          TIME_BUDGET_MS: '600000',
          NODE_EXTRA_CA_CERTS: '/var/runtime/ca-cert.pem',
          NODE_OPTIONS: '--enable-source-maps',
        },
      },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: BackupTable task',
      Timeout: 900,
      Environment: { Variables: Match.objectLike({ SOURCE_SECRET_ARN: SOURCE, TIME_BUDGET_MS: '600000', TARGET_SECRET_ARN: Match.absent() }) },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: Cutover task',
      Environment: { Variables: Match.objectLike({ TARGET_SECRET_ARN: TARGET, SOURCE_SECRET_ARN: Match.absent(), TIME_BUDGET_MS: Match.absent() }) },
    });
    // Outside a VPC unless asked.
    for (const fn of Object.values(fns)) expect(fn.Properties.VpcConfig).toBeUndefined();
  });

  it('lets a function read only the secrets its task needs', () => {
    const readers = (access: 'source' | 'target') =>
      tasksWith((k) => TASK_FUNCTIONS[k].secrets.includes(access)).map((k) => roleIdOf(stack, k)).sort();
    expect(rolesAllowed(template, 'secretsmanager:GetSecretValue', SOURCE)).toEqual(readers('source'));
    expect(rolesAllowed(template, 'secretsmanager:GetSecretValue', TARGET)).toEqual(readers('target'));
    expect(tasksWith((k) => TASK_FUNCTIONS[k].secrets.includes('source'))).toEqual(['preflight', 'backupTable', 'finalizeBackup', 'analyse', 'migrateStep', 'verify']);
    expect(tasksWith((k) => TASK_FUNCTIONS[k].secrets.includes('target'))).toEqual(['preflight', 'analyse', 'createSchema', 'migrateStep', 'planVerify', 'verifyItem', 'verify', 'catchUp', 'cutover', 'report']);
  });

  it('scopes S3 and KMS grants to the backup bucket and key, and never grants a delete', () => {
    const bucketArn = { 'Fn::GetAtt': [logicalId(stack, stack.bucket), 'Arn'] };
    for (const policy of Object.values(template.findResources('AWS::IAM::Policy')) as Policy[]) {
      for (const s of policy.Properties.PolicyDocument.Statement) {
        const actions = ([] as string[]).concat(s.Action);
        const resources = ([] as unknown[]).concat(s.Resource);
        if (actions.some((a) => a.startsWith('s3:'))) {
          expect(resources).not.toContain('*');
          for (const r of resources) expect(JSON.stringify(r)).toContain(JSON.stringify(bucketArn).slice(1, -1));
          expect(actions.filter((a) => a.startsWith('s3:Delete'))).toEqual([]);
        }
        if (actions.some((a) => a.startsWith('kms:'))) {
          expect(resources).toEqual([{ 'Fn::GetAtt': [logicalId(stack, stack.key), 'Arn'] }]);
        }
      }
    }
    const putters = tasksWith((k) => TASK_FUNCTIONS[k].bucket === 'read-put').map((k) => roleIdOf(stack, k)).sort();
    expect(rolesAllowed(template, 's3:PutObject', { 'Fn::Join': ['', [bucketArn, '/*']] })).toEqual(putters);
    expect(putters).not.toContain(roleIdOf(stack, 'createSchema'));
  });

  it('logs every execution event to a log group, and traces with X-Ray', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', {
      StateMachineType: 'STANDARD',
      TracingConfiguration: { Enabled: true },
      LoggingConfiguration: {
        Level: 'ALL',
        IncludeExecutionData: true,
        Destinations: [{ CloudWatchLogsLogGroup: { LogGroupArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^StateMachineLogs'), 'Arn'] } } }],
      },
    });
    template.hasResourceProperties('AWS::Logs::LogGroup', { LogGroupName: '/aws/vendedlogs/states/Test-migration', RetentionInDays: 365 });
  });

  it('tells an encrypted topic when an execution fails, times out or is aborted', () => {
    const topicId = logicalId(stack, stack.alarmTopic);
    template.hasResourceProperties('AWS::Events::Rule', {
      EventPattern: {
        source: ['aws.states'],
        'detail-type': ['Step Functions Execution Status Change'],
        detail: { status: ['FAILED', 'TIMED_OUT', 'ABORTED'], stateMachineArn: [{ Ref: logicalId(stack, stack.stateMachine) }] },
      },
      Targets: [Match.objectLike({ Arn: { Ref: topicId } })],
    });
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
    template.hasResourceProperties('AWS::SNS::Subscription', { Protocol: 'email', Endpoint: 'ops@example.com', TopicArn: { Ref: topicId } });
  });

  it('outputs the state machine ARN and the bucket name', () => {
    template.hasOutput('StateMachineArn', { Value: { Ref: logicalId(stack, stack.stateMachine) } });
    template.hasOutput('BucketName', { Value: { Ref: logicalId(stack, stack.bucket) } });
  });

  it('passes the AWS Solutions checks with no unacknowledged finding', () => {
    expect(new AwsSolutionsChecks(app).validateScope(stack).violations).toEqual([]);
  });
});

describe('the workflow states', () => {
  const { stack } = build();
  const fnArn = (key: TaskKey) => ({ 'Fn::GetAtt': [logicalId(stack, stack.functions[key]), 'Arn'] });
  const retries = [
    {
      ErrorEquals: ['TransientDatabaseError', 'TransientStorageError'],
      IntervalSeconds: 5,
      MaxAttempts: 5,
      BackoffRate: 2,
      MaxDelaySeconds: 120,
      JitterStrategy: 'FULL',
    },
    {
      ErrorEquals: ['Lambda.ServiceException', 'Lambda.AWSLambdaException', 'Lambda.SdkClientException', 'Lambda.TooManyRequestsException'],
      IntervalSeconds: 2,
      MaxAttempts: 5,
      BackoffRate: 2,
      MaxDelaySeconds: 60,
      JitterStrategy: 'FULL',
    },
  ];

  it('MigrateStep invokes its function with the run, the step and the cursor, and retries only transient errors', () => {
    expect(stack.resolve(stack.workflow.tasks.migrateStep.toStateJson())).toEqual({
      Type: 'Task',
      Resource: fnArn('migrateStep'),
      Parameters: { 'run.$': '$.run', 'step.$': '$.step', 'cursor.$': '$.progress.cursor' },
      ResultPath: '$.progress',
      Next: 'IsStepMigrated',
      Retry: retries,
      TimeoutSeconds: 900,
    });
  });

  it('every task is bounded by the Lambda maximum (the local runner would otherwise stop it after 60 s)', () => {
    for (const task of Object.values(stack.workflow.tasks)) {
      expect(stack.resolve(task.toStateJson())).toMatchObject({ TimeoutSeconds: 900 });
    }
  });

  it('no task catches errors: a failure fails the execution, which can be redriven', () => {
    for (const task of Object.values(stack.workflow.tasks)) {
      expect(stack.resolve(task.toStateJson())).not.toHaveProperty('Catch');
    }
  });

  it('Preflight gets the execution input and name', () => {
    expect(stack.resolve(stack.workflow.tasks.preflight.toStateJson())).toMatchObject({
      Parameters: { 'input.$': '$$.Execution.Input', 'executionName.$': '$$.Execution.Name' },
      Next: 'Backup',
    });
  });

  it('Backup maps over the tables, two at a time, discarding per-table results', () => {
    const backup = stack.resolve(stack.workflow.backupMap.toStateJson()) as Record<string, unknown>;
    expect({ ...backup, ItemProcessor: undefined }).toEqual({
      Type: 'Map',
      ItemsPath: '$.backupTables',
      ItemSelector: { 'run.$': '$.run', 'table.$': '$$.Map.Item.Value' },
      MaxConcurrency: 2,
      ResultPath: null,
      Next: 'FinalizeBackup',
      ItemProcessor: undefined,
    });
    expect(backup.ItemProcessor).toMatchObject({
      ProcessorConfig: { Mode: 'INLINE' },
      StartAt: 'StartTableBackup',
      States: {
        StartTableBackup: { Type: 'Pass', Result: { done: false, cursor: null }, ResultPath: '$.progress', Next: 'BackupTable' },
        BackupTable: { Type: 'Task', Parameters: { 'run.$': '$.run', 'table.$': '$.table', 'cursor.$': '$.progress.cursor' } },
        TableBackedUp: { Type: 'Succeed', OutputPath: '$.progress' },
      },
    });
    expect(stack.resolve(stack.workflow.isTableBackedUp.toStateJson())).toEqual({
      Type: 'Choice',
      Choices: [{ Variable: '$.progress.done', BooleanEquals: true, Next: 'TableBackedUp' }],
      Default: 'BackupTable',
    });
  });

  it('a live run catches up after Verify until the lag is under the threshold, waiting between catch-ups, then cuts over if asked', () => {
    expect(stack.resolve(stack.workflow.tasks.verify.toStateJson())).toMatchObject({ Next: 'IsLive' });
    expect(stack.resolve(stack.workflow.isLive.toStateJson())).toEqual({
      Type: 'Choice',
      Choices: [{ And: [{ Variable: '$.run.live', IsPresent: true }, { Variable: '$.run.live', BooleanEquals: true }], Next: 'CatchUp' }],
      Default: 'IsCutoverRequested',
    });
    expect(stack.resolve(stack.workflow.tasks.catchUp.toStateJson())).toMatchObject({
      Type: 'Task', Parameters: { 'run.$': '$.run' }, ResultPath: '$.catchUp', Next: 'IsCaughtUp',
    });
    expect(stack.resolve(stack.workflow.isCaughtUp.toStateJson())).toEqual({
      Type: 'Choice',
      Choices: [{ Variable: '$.catchUp.caughtUp', BooleanEquals: true, Next: 'IsCutoverRequested' }],
      Default: 'WaitForChanges',
    });
  });

  it('Migrate runs the waves of the work graph one after another, each wave\'s items at once up to $.run.concurrency (an inline Map)', () => {
    expect(stack.resolve(stack.workflow.tasks.createSchema.toStateJson())).toMatchObject({ Next: 'StartWaves' });
    expect(stack.resolve(stack.workflow.pickWave.toStateJson())).toEqual({
      Type: 'Pass',
      Parameters: { 'index.$': '$.wave.index', 'items.$': 'States.ArrayGetItem($.analysis.waves, $.wave.index)' },
      ResultPath: '$.wave',
      Next: 'Migrate',
    });
    const map = stack.resolve(stack.workflow.migrateMap.toStateJson());
    expect(map).toMatchObject({
      ItemsPath: '$.wave.items',
      ItemSelector: { 'run.$': '$.run', 'step.$': '$$.Map.Item.Value' },
      MaxConcurrencyPath: '$.run.concurrency',
      ResultPath: null,
      Next: 'NextWave',
    });
    // Inline: aws-local-stepfunctions ignores ProcessorConfig (it would run a DISTRIBUTED processor inline), so the
    // deployed Map must be the inline one the local runs test (README "Parallel work items").
    expect(map.ItemProcessor.ProcessorConfig).toEqual({ Mode: 'INLINE' });
    expect(map.MaxConcurrency).toBeUndefined();
    expect(stack.resolve(stack.workflow.nextWave.toStateJson())).toMatchObject({ Parameters: { 'index.$': 'States.MathAdd($.wave.index, 1)' }, ResultPath: '$.wave', Next: 'IsMigrated' });
    expect(stack.resolve(stack.workflow.isMigrated.toStateJson())).toEqual({
      Type: 'Choice',
      Choices: [{ Variable: '$.wave.index', NumericLessThanPath: '$.analysis.waveCount', Next: 'PickWave' }],
      Default: 'PlanVerify',
    });
  });

  it('Preflight gets the stack\'s concurrency as the default of the execution input (4 unless set)', () => {
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: Preflight task', Environment: { Variables: Match.objectLike({ DEFAULT_CONCURRENCY: '4' }) },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: MigrateStep task', Environment: { Variables: Match.objectLike({ DEFAULT_CONCURRENCY: Match.absent() }) },
    });
    Template.fromStack(build({ concurrency: 2 }).stack).hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: Preflight task', Environment: { Variables: Match.objectLike({ DEFAULT_CONCURRENCY: '2' }) },
    });
  });

  it("VerifyItems runs the planned items, up to the run's concurrency at once, each looped with its cursor, then Verify assembles", () => {
    expect(stack.resolve(stack.workflow.verifyMap.toStateJson())).toMatchObject({
      ItemsPath: '$.verifyPlan.items',
      ItemSelector: { 'run.$': '$.run', 'item.$': '$$.Map.Item.Value' },
      MaxConcurrencyPath: '$.run.concurrency',
      ResultPath: null,
      Next: 'Verify',
    });
    expect(stack.resolve(stack.workflow.tasks.planVerify.toStateJson())).toMatchObject({ ResultPath: '$.verifyPlan', Next: 'VerifyItems' });
    expect(stack.resolve(stack.workflow.tasks.verifyItem.toStateJson())).toMatchObject({
      ResultPath: '$.progress',
      Parameters: { 'run.$': '$.run', 'item.$': '$.item', 'cursor.$': '$.progress.cursor' },
      Next: 'IsItemVerified',
    });
    expect(stack.resolve(stack.workflow.tasks.verify.toStateJson())).toMatchObject({ Parameters: { 'run.$': '$.run', 'round.$': '$.verifyPlan.round' }, ResultPath: '$.verification' });
  });
});

describe('MigrationStack placement and props', () => {
  it('places the functions in the given VPC, subnets and security groups', () => {
    const { app, stack, template } = build({ vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0123456789abcdef0', 'subnet-0fedcba9876543210'], securityGroupIds: ['sg-0123456789abcdef0'] });
    const fns = Object.values(template.findResources('AWS::Lambda::Function'));
    for (const fn of fns) {
      expect(fn.Properties.VpcConfig).toEqual({ SubnetIds: ['subnet-0123456789abcdef0', 'subnet-0fedcba9876543210'], SecurityGroupIds: ['sg-0123456789abcdef0'] });
    }
    expect(new AwsSolutionsChecks(app).validateScope(stack).violations).toEqual([]);
  });

  it('creates a security group when none is given', () => {
    const { app, stack, template } = build({ vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0123456789abcdef0'] });
    template.resourceCountIs('AWS::EC2::SecurityGroup', 1);
    expect(new AwsSolutionsChecks(app).validateScope(stack).violations).toEqual([]);
    // Synthesis (with CDK's own template validation) succeeds, and the import warnings are acknowledged.
    const messages = app.synth().getStackByName(stack.stackName).messages.filter((m) => m.level !== 'info');
    expect(messages).toEqual([]);
  });

  it('reads the source secret for the target when no target is given', () => {
    const { template } = build({ targetSecretArn: undefined });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Description: 'TraceTrack migration: Report task',
      Environment: { Variables: Match.objectLike({ TARGET_SECRET_ARN: SOURCE }) },
    });
  });

  it.each<[string, Partial<MigrationStackProps>, RegExp]>([
    ['a source that is not a secret ARN', { sourceSecretArn: 'my-secret' }, /sourceSecretArn must be a Secrets Manager secret ARN/],
    ['a target that is not a secret ARN', { targetSecretArn: 'arn:aws:s3:::bucket' }, /targetSecretArn/],
    ['a VPC without subnets', { vpcId: 'vpc-0123456789abcdef0' }, /vpcId needs subnetIds/],
    ['subnets without a VPC', { subnetIds: ['subnet-0123456789abcdef0'] }, /subnetIds needs vpcId/],
    ['security groups without a VPC', { securityGroupIds: ['sg-0123456789abcdef0'] }, /securityGroupIds needs vpcId/],
    ['a malformed subnet id', { vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0123456789abcdef0', 'private-a'] }, /'private-a' is not a subnet id/],
    ['a malformed e-mail', { notifyEmail: 'ops' }, /notifyEmail/],
    ['a prefix without a trailing slash', { backupPrefix: 'migration' }, /backupPrefix/],
    ['a bad state machine name', { stateMachineName: 'has space' }, /stateMachineName/],
    ['a concurrency of 0', { concurrency: 0 }, /concurrency must be a whole number from 1 to 64/],
  ])('rejects %s', (_name, props, message) => {
    expect(() => build(props)).toThrow(message);
  });

  it('reports every problem at once', () => {
    expect(() => build({ sourceSecretArn: 'x', notifyEmail: 'y' })).toThrow(/sourceSecretArn[\s\S]*notifyEmail/);
  });

  it('scopes grants to the backup prefix when one is given', () => {
    const { stack, template } = build({ backupPrefix: 'migration/' });
    const bucketArn = { 'Fn::GetAtt': [logicalId(stack, stack.bucket), 'Arn'] };
    expect(rolesAllowed(template, 's3:PutObject', { 'Fn::Join': ['', [bucketArn, '/migration/*']] })).toHaveLength(8);
    template.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ BACKUP_PREFIX: 'migration/' }) } });
  });
});

describe('ExamplePipelineStack', () => {
  it('starts the state machine with input.json from the source artifact, and passes the checks', () => {
    const app = newApp();
    const stack = new ExamplePipelineStack(app, 'Pipeline', { stateMachineName: 'TraceTrackMigration' });
    const template = Template.fromStack(stack);
    template.hasResourceProperties('AWS::CodePipeline::Pipeline', {
      Stages: Match.arrayWith([
        Match.objectLike({
          Name: 'Migrate',
          Actions: [
            Match.objectLike({
              ActionTypeId: { Category: 'Invoke', Owner: 'AWS', Provider: 'StepFunctions', Version: '1' },
              Configuration: Match.objectLike({ InputType: 'FilePath', Input: 'MigrationInput::input.json', ExecutionNamePrefix: 'pipeline' }),
              InputArtifacts: [{ Name: 'MigrationInput' }],
            }),
          ],
        }),
      ]),
    });
    expect(new AwsSolutionsChecks(app).validateScope(stack).violations).toEqual([]);
  });

  it('starts on upload: the source bucket sends its events to EventBridge, a rule on Object Created of the input key starts the pipeline', () => {
    const app = newApp();
    const stack = new ExamplePipelineStack(app, 'Pipeline', { stateMachineName: 'TraceTrackMigration', sourceKey: 'in/migration.zip' });
    const template = Template.fromStack(stack);
    const bucket = logicalId(stack, stack.sourceBucket);
    const pipeline = logicalId(stack, stack.pipeline);
    expect(template.toJSON().Resources[bucket].Properties.NotificationConfiguration).toEqual({ EventBridgeConfiguration: { EventBridgeEnabled: true } });
    // No notification custom resource (and its function) for it.
    template.resourceCountIs('Custom::S3BucketNotifications', 0);
    template.resourceCountIs('AWS::Lambda::Function', 0);
    const rule = template.toJSON().Resources[logicalId(stack, stack.startOnUpload)];
    expect(rule.Properties.State).toBe('ENABLED');
    expect(rule.Properties.EventPattern).toEqual({
      source: ['aws.s3'],
      'detail-type': ['Object Created'],
      detail: { bucket: { name: [{ Ref: bucket }] }, object: { key: ['in/migration.zip'] } },
    });
    const pipelineArn = {
      'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':codepipeline:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }, ':', { Ref: pipeline }]],
    };
    expect(rule.Properties.Targets).toEqual([expect.objectContaining({ Arn: pipelineArn })]);
    // The rule's role may start this pipeline and nothing else.
    const roleId = rule.Properties.Targets[0].RoleArn['Fn::GetAtt'][0];
    const policies = Object.values(template.findResources('AWS::IAM::Policy')).filter((p) =>
      (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === roleId));
    expect(policies.flatMap((p) => p.Properties.PolicyDocument.Statement)).toEqual([
      { Action: 'codepipeline:StartPipelineExecution', Effect: 'Allow', Resource: pipelineArn },
    ]);
    // The source action itself does not poll.
    template.hasResourceProperties('AWS::CodePipeline::Pipeline', {
      Stages: Match.arrayWith([
        Match.objectLike({
          Name: 'Source',
          Actions: [Match.objectLike({ Configuration: Match.objectLike({ S3ObjectKey: 'in/migration.zip', PollForSourceChanges: false }) })],
        }),
      ]),
    });
    expect(new AwsSolutionsChecks(app).validateScope(stack).violations).toEqual([]);
  });
});
