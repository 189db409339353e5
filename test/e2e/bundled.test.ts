import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { TASK_STATES, type ReportResult } from '../../lambdas/core/contract';
import { readObjectText } from '../../lambdas/io/s3';
import { BUNDLED_SECRET_ARNS, synthesizeBundles, type BundledFunction, type SynthesizedBundles } from '../../lib/runner/bundles';
import { FUNCTION_SECRET_ACCESS_KEY, functionAccessKeyId, runBundledWorkflow, startBundleProcess, writeWorker } from '../../lib/runner/bundled-run';
import { FAKE_ACCOUNT, FAKE_REGION } from '../../lib/runner/state-machine';
import { isAllowed, roleStatements, s3Actions } from '../support/iam';
import { rdsSecretOf, startLocalSecretsManager } from '../support/secrets-manager';
import { createTestDatabase, withTestClient } from '../support/pg';
import { loadFixture } from '../support/engine';
import { registerTestS3Credentials, startRecordingS3Front, startTestS3, type TestS3 } from '../support/s3';

/**
 * What `cdk deploy` ships, run: the stack synthesized with bundling (the esbuild bundles of the cloud
 * assembly), each task state bound to its function's bundle in a bare Node process with the
 * function's Environment from the template, against the embedded PostgreSQL and the local S3.
 * A module missing from a bundle, or a bundle that needs the runtime's AWS SDK, fails here.
 */

const OPTIONAL_MODULES = ['@aws-sdk/signature-v4-crt', '@aws-sdk/signature-v4a', 'pg-native'];

let bundles: SynthesizedBundles;
let outdir: string;

beforeAll(() => {
  // Outside the repository: no node_modules above the bundles to resolve a missing module from.
  outdir = mkdtempSync(path.join(tmpdir(), 'tracetrack-bundles-'));
  bundles = synthesizeBundles(outdir);
}, 300_000);

afterAll(() => {
  if (outdir) rmSync(outdir, { recursive: true, force: true });
});

describe('the function bundles', () => {
  it('every task has a bundle that loads in a bare Node process with nothing on NODE_PATH', async () => {
    expect(Object.keys(bundles.functions).sort()).toEqual(Object.values(TASK_STATES).sort());
    const worker = writeWorker(outdir);
    for (const fn of Object.values(bundles.functions)) {
      // Nothing to fall back on: no node_modules in or above the bundle's directory.
      for (let dir = fn.assetDir; ; dir = path.dirname(dir)) {
        expect(existsSync(path.join(dir, 'node_modules')), `${dir}/node_modules`).toBe(false);
        if (path.dirname(dir) === dir) break;
      }
      expect(readdirSync(fn.assetDir).sort()).toEqual(['index.js', 'index.js.map']);
      expect(fn.runtime).toBe('nodejs22.x');
      const code = readFileSync(path.join(fn.assetDir, 'index.js'), 'utf8');
      // Left to the runtime: only optional modules required lazily (pg's native binding, the SDK's
      // CRT and SigV4a signers, inside try/catch); none is ever loaded by this code.
      const required = [...new Set([...code.matchAll(/require\(\s*["']([^"'./][^"']*)["']\s*\)/g)].map((m) => m[1]!))]
        .filter((name) => !name.startsWith('node:') && !isBuiltin(name))
        .sort();
      expect(required.filter((name) => !OPTIONAL_MODULES.includes(name)), fn.state).toEqual([]);
      const { worker: w, initMs } = await startBundleProcess(worker, fn, {});
      w.child.kill();
      expect(initMs).toBeGreaterThan(0);
    }
  });

  it('runs the synthesized definition through the bundles: a run, a live rerun with cutover, against PostgreSQL and the local S3', async () => {
    const db = await createTestDatabase('bundled');
    const s3 = await startTestS3();
    // Both secrets name the test database (source and target in one database, the usual case).
    const secrets = await startLocalSecretsManager({ [BUNDLED_SECRET_ARNS.source]: rdsSecretOf(db.url), [BUNDLED_SECRET_ARNS.target]: rdsSecretOf(db.url) });
    // Every function signs S3 requests with a key of its own (s3rver checks them), recorded by the front.
    for (const fn of Object.values(bundles.functions)) await registerTestS3Credentials(s3, { accessKeyId: functionAccessKeyId(fn), secretAccessKey: FUNCTION_SECRET_ACCESS_KEY });
    const front = await startRecordingS3Front(s3.endpoint, '');
    try {
      await loadFixture(db.url, 'a');
      const run = (runId: string, extra: Record<string, unknown> = {}) =>
        runBundledWorkflow(
          {
            definition: bundles.definition,
            functions: bundles.functions,
            sourceUrl: db.url,
            bucket: s3.bucket,
            s3Endpoint: front.endpoint,
            secretsManagerEndpoint: secrets.endpoint,
            functionCredentials: true,
            input: { runId, batchSize: 5, ...extra },
            executionName: runId,
            // Short budgets, so that the BackupTable and MigrateStep loops of the definition come back.
            timeBudgetMs: 1,
          },
          bundles.template as never,
          outdir,
        );
      const first = await run('bundled-1');
      const out1 = first.output as ReportResult;
      expect(out1.status).toBe('completed');
      expect(out1.tables.bag).toEqual({ migrated: 15, rejected: 2, derived: 0 });
      expect(out1.tables.link).toEqual({ migrated: 0, rejected: 1, derived: 9 });
      await expectReportPassed(s3, out1.reportKey);
      // The loops ran: more invocations than tasks, each function in processes of its own.
      expect(first.functions[TASK_STATES.backupTable]!.invocations).toBeGreaterThanOrEqual(5);
      expect(first.functions[TASK_STATES.migrateStep]!.invocations).toBeGreaterThan(10);

      // Live, so that every task runs through its bundle (CatchUp only runs for a live run).
      const second = await run('bundled-2', { cutover: true, live: true });
      const out2 = second.output as ReportResult;
      expect(out2.status).toBe('completed');
      expect(out2.tables).toEqual(out1.tables);
      await expectReportPassed(s3, out2.reportKey);

      const ran = new Set(Object.entries({ ...first.functions }).filter(([, s]) => s.invocations > 0).map(([k]) => k));
      for (const [k, s] of Object.entries(second.functions)) if (s.invocations > 0) ran.add(k);
      expect([...ran].sort()).toEqual(Object.values(TASK_STATES).sort());

      // Every AWS call a function made is allowed by the IAM policies the template gives its role.
      const template = bundles.template as never as { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
      const keyArn = `arn:aws:kms:${FAKE_REGION}:${FAKE_ACCOUNT}:key/`;
      const resolveArn = (id: string, attribute: string | null) => {
        const type = template.Resources[id]?.Type;
        if (type === 'AWS::S3::Bucket' && attribute === 'Arn') return `arn:aws:s3:::${s3.bucket}`;
        if (type === 'AWS::KMS::Key' && attribute === 'Arn') return `${keyArn}${id}`;
        return `unresolved:${id}.${attribute}`;
      };
      const byKey = new Map(Object.values(bundles.functions).map((fn) => [functionAccessKeyId(fn), fn]));
      const calls: { fn: BundledFunction; action: string; resource: string }[] = [];
      for (const r of secrets.reads) calls.push({ fn: byKey.get(r.accessKeyId)!, action: 'secretsmanager:GetSecretValue', resource: r.secretId });
      for (const r of front.requests) {
        const fn = byKey.get(/Credential=([^/]+)\//.exec(String(r.headers.authorization))?.[1] ?? '');
        expect(fn, `${r.method} ${r.path}: signed by no function`).toBeDefined();
        for (const a of s3Actions(r)) calls.push({ fn: fn!, ...a });
        const sse = r.headers['x-amz-server-side-encryption-aws-kms-key-id'];
        if (sse !== undefined) calls.push({ fn: fn!, action: 'kms:GenerateDataKey', resource: String(sse) });
        else if (r.method === 'GET' && r.path.split('/').length > 2) calls.push({ fn: fn!, action: 'kms:Decrypt', resource: String(resolveArn(keyId(template), 'Arn')) });
      }
      const denied = calls.filter((c) => !isAllowed(roleStatements(template, roleOf(template, c.fn)), c.action, c.resource, resolveArn));
      expect(denied.map((c) => `${c.fn.state}: ${c.action} ${c.resource}`)).toEqual([]);
      // Every write asked for SSE-KMS with the stack's key.
      const writes = front.requests.filter((r) => (r.method === 'PUT' && !r.query.has('partNumber')) || (r.method === 'POST' && r.query.has('uploads')));
      expect(writes.length).toBeGreaterThan(20);
      expect(writes.filter((r) => r.headers['x-amz-server-side-encryption'] !== 'aws:kms' || r.headers['x-amz-server-side-encryption-aws-kms-key-id'] !== resolveArn(keyId(template), 'Arn'))).toEqual([]);
      // Each function read only the secrets its template grants; between them, both.
      const readBy = (state: string) =>
        [...new Set(secrets.reads.filter((r) => byKey.get(r.accessKeyId)?.state === state).map((r) => (r.secretId === BUNDLED_SECRET_ARNS.source ? 'source' : 'target')))].sort();
      expect(readBy(TASK_STATES.preflight)).toEqual(['source', 'target']);
      expect(readBy(TASK_STATES.backupTable)).toEqual(['source']);
      expect(readBy(TASK_STATES.cutover)).toEqual(['target']);
      console.log(`bundled run: ${calls.length} AWS calls by ${byKey.size} functions, each allowed by its role's policies`);

      await withTestClient(db.url, async (c) => {
        const where = (await c.query(
          `SELECT table_schema, table_name FROM information_schema.columns WHERE table_name = 'bag' AND column_name IN ('qr_id', 'qr_code') ORDER BY 1`,
        )).rows;
        expect(where).toEqual([
          { table_schema: 'legacy_bundled-2', table_name: 'bag' },
          { table_schema: 'public', table_name: 'bag' },
        ]);
        const bags = await c.query(`SELECT count(*)::int AS n FROM public.bag`);
        expect(bags.rows[0].n).toBe(15);
      });
    } finally {
      await front.stop();
      await secrets.stop();
      await s3.stop();
      await db.drop();
    }
  });
});

async function expectReportPassed(s3: TestS3, key: string): Promise<void> {
  const report = JSON.parse((await readObjectText(s3.s3, s3.bucket, key))!) as { status: string; checks: { name: string; passed: boolean }[] };
  expect(report.status).toBe('completed');
  expect(report.checks.length).toBeGreaterThan(10);
  expect(report.checks.filter((c) => !c.passed)).toEqual([]);
}

type Tpl = { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };

/** The logical id of the role a function runs with (`Role: Fn::GetAtt [role, Arn]`). */
function roleOf(template: Tpl, fn: BundledFunction): string {
  return ((template.Resources[fn.logicalId]!.Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'])[0];
}

/** The backup key: the KMS key the functions' BACKUP_KMS_KEY_ID names. */
function keyId(template: Tpl): string {
  const fn = Object.values(template.Resources).find((r) => r.Type === 'AWS::Lambda::Function')!;
  return ((fn.Properties.Environment as { Variables: Record<string, { 'Fn::GetAtt': [string, string] }> }).Variables.BACKUP_KMS_KEY_ID!)['Fn::GetAtt'][0];
}

function isBuiltin(name: string): boolean {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:module') as typeof import('node:module')).isBuiltin(name);
}
