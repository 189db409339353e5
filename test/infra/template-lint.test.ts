import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MigrationStack } from '../../lib/migration-stack';
import { ExamplePipelineStack } from '../../lib/pipeline';
import { lintTemplate } from '../support/template-lint';

/**
 * The templates `cdk synth` writes, linted: with cfn-lint where it is installed (it comes from PyPI,
 * which CI cannot reach), and always with the schema check of test/support/template-lint.ts.
 */

const CDK_CONTEXT = (JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'cdk.json'), 'utf8')) as { context: object }).context;
const SOURCE = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracetrack-source-AbCdEf';

let outdir: string;
let templates: string[];

beforeAll(() => {
  outdir = mkdtempSync(path.join(tmpdir(), 'tracetrack-synth-'));
  // As `cdk synth` does, minus the bundles (the templates do not depend on the bundles' contents).
  const app = new App({ outdir, context: { ...CDK_CONTEXT, 'aws:cdk:bundling-stacks': [] } });
  new MigrationStack(app, 'Plain', { sourceSecretArn: SOURCE, stateMachineName: 'TraceTrackMigration' });
  new MigrationStack(app, 'InVpc', {
    sourceSecretArn: SOURCE,
    targetSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracetrack-target-GhIjKl',
    vpcId: 'vpc-0123abcd',
    subnetIds: ['subnet-0123abcd', 'subnet-4567ef01'],
    notifyEmail: 'ops@example.com',
    backupPrefix: 'migration/',
  });
  new ExamplePipelineStack(app, 'Pipeline', { stateMachineName: 'TraceTrackMigration' });
  app.synth();
  templates = readdirSync(outdir).filter((f) => f.endsWith('.template.json')).map((f) => path.join(outdir, f));
}, 120_000);

afterAll(() => {
  if (outdir) rmSync(outdir, { recursive: true, force: true });
});

const cfnLint = spawnSync('cfn-lint', ['--version'], { encoding: 'utf8' });
const hasCfnLint = cfnLint.status === 0;

describe('synthesized templates', () => {
  it('three templates were synthesized', () => {
    expect(templates.map((t) => path.basename(t)).sort()).toEqual(['InVpc.template.json', 'Pipeline.template.json', 'Plain.template.json']);
  });

  it('match the CloudFormation resource schemas: types, property names, required properties, references', () => {
    for (const file of templates) {
      expect(lintTemplate(JSON.parse(readFileSync(file, 'utf8'))), path.basename(file)).toEqual([]);
    }
  });

  it('the schema check finds what it is for', () => {
    const template = JSON.parse(readFileSync(templates.find((t) => t.endsWith('Plain.template.json'))!, 'utf8'));
    const [bucketId] = Object.entries(template.Resources as Record<string, { Type: string }>).find(([, r]) => r.Type === 'AWS::S3::Bucket')!;
    const [fnId] = Object.entries(template.Resources as Record<string, { Type: string }>).find(([, r]) => r.Type === 'AWS::Lambda::Function')!;
    template.Resources[bucketId].Properties.VersioningConfiguration = { Status: 'Enabled', Mfa: true };
    template.Resources[bucketId].Properties.Encryptoin = {};
    delete template.Resources[fnId].Properties.Role;
    template.Resources[fnId].Properties.Environment.Variables.X = { Ref: 'Missing' };
    template.Resources[fnId].Properties.Environment.Variables.Y = { 'Fn::GetAtt': [bucketId, 'NoSuchAttribute'] };
    template.Resources[fnId].DependsOn = ['Nowhere'];
    template.Resources.Odd = { Type: 'AWS::S3::Bukket', Properties: {} };
    const problems = lintTemplate(template);
    expect(problems).toEqual(expect.arrayContaining([
      expect.stringMatching(new RegExp(`${bucketId} \\(AWS::S3::Bucket\\)\\.VersioningConfiguration: no property Mfa`)),
      expect.stringMatching(/: no property Encryptoin$/),
      expect.stringMatching(new RegExp(`${fnId} \\(AWS::Lambda::Function\\): required property Role is missing`)),
      expect.stringMatching(/Ref Missing names no resource/),
      expect.stringMatching(/AWS::S3::Bucket has no attribute NoSuchAttribute/),
      expect.stringMatching(/DependsOn Nowhere names no resource/),
      'Resources.Odd: CloudFormation has no resource type AWS::S3::Bukket',
    ]));
    expect(problems).toHaveLength(7);
  });

  it.skipIf(!hasCfnLint)('cfn-lint reports no error (its only warnings are W3005, dependencies CDK states twice)', () => {
    const lint = (files: string[]) => {
      const out = spawnSync('cfn-lint', ['--format', 'json', '--', ...files], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
      // Exit status bit 1 is cfn-lint failing itself (2, 4, 8: errors, warnings, informational findings).
      expect(out.status! & 1, out.stderr).toBe(0);
      return JSON.parse(out.stdout) as { Rule: { Id: string }; Level: string; Message: string; Filename: string }[];
    };
    const findings = lint(templates);
    expect(findings.filter((f) => f.Level === 'Error').map((f) => `${path.basename(f.Filename)} ${f.Rule.Id}: ${f.Message}`)).toEqual([]);
    expect([...new Set(findings.map((f) => f.Rule.Id))].filter((id) => id !== 'W3005')).toEqual([]);
    // And it does report errors: the same template with a property its resource does not have.
    const broken = JSON.parse(readFileSync(templates[0]!, 'utf8'));
    const [bucketId] = Object.entries(broken.Resources as Record<string, { Type: string }>).find(([, r]) => r.Type === 'AWS::S3::Bucket')!;
    broken.Resources[bucketId].Properties.Encryptoin = {};
    const brokenFile = path.join(outdir, 'broken.json');
    writeFileSync(brokenFile, JSON.stringify(broken));
    expect(lint([brokenFile]).filter((f) => f.Level === 'Error').map((f) => f.Rule.Id)).toEqual(['E3002']);
  });
});
