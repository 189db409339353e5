import { Duration, RemovalPolicy, Stack, Validations, type CfnElement, type StackProps } from 'aws-cdk-lib';
import * as codepipeline from 'aws-cdk-lib/aws-codepipeline';
import * as actions from 'aws-cdk-lib/aws-codepipeline-actions';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

export interface MigrationPipelineStageProps {
  /** The pipeline to add the stage to. */
  readonly pipeline: codepipeline.Pipeline;
  /** The migration state machine (MigrationStack.stateMachine). */
  readonly stateMachine: sfn.IStateMachine;
  /** Artifact holding the execution input file. */
  readonly inputArtifact: codepipeline.Artifact;
  /**
   * Path of the execution input (JSON, see ExecutionInput) inside the artifact.
   * @default 'input.json'
   */
  readonly inputPath?: string;
  /**
   * Name of the new stage.
   * @default 'Migrate'
   */
  readonly stageName?: string;
  /**
   * Where the stage goes in the pipeline.
   * @default - after the last stage
   */
  readonly placement?: codepipeline.StagePlacement;
  /**
   * Prefix of the execution name (the action execution id follows it).
   * @default 'pipeline'
   */
  readonly executionNamePrefix?: string;
}

/**
 * Adds a stage that starts the migration workflow with the input file of an artifact,
 * and waits for the execution to end (the action fails when the execution fails).
 */
export class MigrationPipelineStage extends Construct {
  readonly stage: codepipeline.IStage;
  readonly action: actions.StepFunctionInvokeAction;

  constructor(scope: Construct, id: string, props: MigrationPipelineStageProps) {
    super(scope, id);
    const inputPath = props.inputPath ?? 'input.json';
    if (inputPath.startsWith('/') || inputPath.trim() === '') {
      throw new Error(`MigrationPipelineStage '${id}': inputPath must be a relative path inside the artifact, got '${inputPath}'.`);
    }
    this.action = new actions.StepFunctionInvokeAction({
      actionName: 'StartMigration',
      stateMachine: props.stateMachine,
      stateMachineInput: actions.StateMachineInput.filePath(props.inputArtifact.atPath(inputPath)),
      executionNamePrefix: props.executionNamePrefix ?? 'pipeline',
    });
    this.stage = props.pipeline.addStage({
      stageName: props.stageName ?? 'Migrate',
      placement: props.placement,
      actions: [this.action],
    });
  }
}

export interface ExamplePipelineStackProps extends StackProps {
  /** Name of the migration state machine (MigrationStackProps.stateMachineName), in this stack's account and region. */
  readonly stateMachineName: string;
  /**
   * S3 key of the zip holding `input.json` in the source bucket.
   * @default 'migration/input.zip'
   */
  readonly sourceKey?: string;
}

/**
 * An example: upload a zip with `input.json` to the source bucket, and the pipeline runs the migration with it.
 * The upload starts the pipeline through EventBridge (the bucket sends its events to EventBridge; a rule
 * on `Object Created` for the source key starts the pipeline), without polling and without CloudTrail.
 */
export class ExamplePipelineStack extends Stack {
  readonly sourceBucket: s3.Bucket;
  readonly pipeline: codepipeline.Pipeline;
  readonly startOnUpload: events.Rule;

  constructor(scope: Construct, id: string, props: ExamplePipelineStackProps) {
    super(scope, id, props);
    const key = new kms.Key(this, 'ArtifactKey', { enableKeyRotation: true });
    const accessLogs = new s3.Bucket(this, 'AccessLogs', {
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      lifecycleRules: [{ expiration: Duration.days(365) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    Validations.of(accessLogs).acknowledge({
      id: 'AwsSolutions-S1',
      reason: 'This is the server access log bucket itself; logging it into itself would loop.',
    });
    const bucket = (name: string, versioned: boolean) =>
      new s3.Bucket(this, name, {
        encryption: s3.BucketEncryption.KMS,
        encryptionKey: key,
        versioned,
        enforceSSL: true,
        blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
        serverAccessLogsBucket: accessLogs,
        serverAccessLogsPrefix: `${name}/`,
        removalPolicy: RemovalPolicy.RETAIN,
      });
    // The S3 source action needs a versioned bucket.
    this.sourceBucket = bucket('SourceBucket', true);
    // EventBridge notifications as a property of the bucket itself: no notification custom resource.
    (this.sourceBucket.node.defaultChild as s3.CfnBucket).notificationConfiguration = {
      eventBridgeConfiguration: { eventBridgeEnabled: true },
    };
    const sourceKey = props.sourceKey ?? 'migration/input.zip';
    this.pipeline = new codepipeline.Pipeline(this, 'Pipeline', {
      pipelineType: codepipeline.PipelineType.V2,
      artifactBucket: bucket('ArtifactBucket', false),
      restartExecutionOnUpdate: false,
    });
    const input = new codepipeline.Artifact('MigrationInput');
    this.pipeline.addStage({
      stageName: 'Source',
      actions: [
        new actions.S3SourceAction({
          actionName: 'MigrationInput',
          bucket: this.sourceBucket,
          bucketKey: sourceKey,
          output: input,
          // Started by the rule below (EventBridge), not by polling: S3Trigger.EVENTS would need a CloudTrail trail.
          trigger: actions.S3Trigger.NONE,
        }),
      ],
    });
    this.startOnUpload = new events.Rule(this, 'StartOnUpload', {
      description: `Starts the migration pipeline when ${sourceKey} is uploaded to the source bucket`,
      eventPattern: {
        source: ['aws.s3'],
        detailType: ['Object Created'],
        detail: { bucket: { name: [this.sourceBucket.bucketName] }, object: { key: [sourceKey] } },
      },
      targets: [new targets.CodePipeline(this.pipeline)],
    });
    // By name, not by object: the pipeline needs no cross-stack export from the migration stack.
    const stateMachine = sfn.StateMachine.fromStateMachineName(this, 'StateMachine', props.stateMachineName);
    new MigrationPipelineStage(this, 'Migrate', { pipeline: this.pipeline, stateMachine, inputArtifact: input });
    this.acknowledgeFindings(props.stateMachineName);
  }

  /** The pipeline's generated roles: artifact and source bucket grants, and starting executions of one state machine. */
  private acknowledgeFindings(stateMachineName: string): void {
    const arn = (construct: s3.Bucket) => `<${this.getLogicalId(construct.node.defaultChild as CfnElement)}.Arn>`;
    const artifacts = 'CodePipeline reads and writes pipeline artifacts, whose keys are generated, in its own KMS-encrypted bucket.';
    Validations.of(this.pipeline).acknowledge(
      { id: `AwsSolutions-IAM5[Resource::${arn(this.pipeline.artifactBucket as s3.Bucket)}/*]`, reason: artifacts },
      { id: `AwsSolutions-IAM5[Resource::${arn(this.sourceBucket)}/*]`, reason: 'The source action reads the input zip from the source bucket.' },
      { id: 'AwsSolutions-IAM5[Action::s3:GetObject*]', reason: artifacts },
      { id: 'AwsSolutions-IAM5[Action::s3:GetBucket*]', reason: artifacts },
      { id: 'AwsSolutions-IAM5[Action::s3:List*]', reason: artifacts },
      { id: 'AwsSolutions-IAM5[Action::s3:DeleteObject*]', reason: artifacts },
      { id: 'AwsSolutions-IAM5[Action::s3:Abort*]', reason: artifacts },
      { id: 'AwsSolutions-IAM5[Action::kms:GenerateDataKey*]', reason: 'Artifacts are encrypted with the pipeline key only.' },
      { id: 'AwsSolutions-IAM5[Action::kms:ReEncrypt*]', reason: 'Artifacts are encrypted with the pipeline key only.' },
      {
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${stateMachineName}:pipeline*]`,
        reason: 'The invoke action describes the executions it starts: their names are generated (prefix + action execution id).',
      },
    );
  }
}
