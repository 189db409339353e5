import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { TASK_STATES, type ReportResult } from '../../lambdas/handlers/contract';
import { readObjectText } from '../../lambdas/io/backup';
import { TASK_FUNCTIONS } from '../../lib/migration-stack';
import { BUNDLED_SECRET_ARNS, synthesizeBundles, type SynthesizedBundles } from '../../lib/runner/bundles';
import { functionAccessKeyId, runBundledWorkflow, startBundleProcess, writeWorker } from '../../lib/runner/bundled-run';
import { rdsSecretOf, startLocalSecretsManager } from '../support/secrets-manager';
import { createTestDatabase, withTestClient } from '../support/pg';
import { loadFixture } from '../support/engine';
import { startTestS3, type TestS3 } from '../support/s3';

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

  it('runs the synthesized definition through the bundles: a run, a rerun with cutover, against PostgreSQL and the local S3', async () => {
    const db = await createTestDatabase('bundled');
    const s3 = await startTestS3();
    // Both secrets name the test database (source and target in one database, the usual case).
    const secrets = await startLocalSecretsManager({ [BUNDLED_SECRET_ARNS.source]: rdsSecretOf(db.url), [BUNDLED_SECRET_ARNS.target]: rdsSecretOf(db.url) });
    try {
      await loadFixture(db.url, 'a');
      const run = (runId: string, extra: Record<string, unknown> = {}) =>
        runBundledWorkflow(
          {
            definition: bundles.definition,
            functions: bundles.functions,
            sourceUrl: db.url,
            bucket: s3.bucket,
            s3Endpoint: s3.endpoint,
            secretsManagerEndpoint: secrets.endpoint,
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

      const second = await run('bundled-2', { cutover: true });
      const out2 = second.output as ReportResult;
      expect(out2.status).toBe('completed');
      expect(out2.tables).toEqual(out1.tables);
      await expectReportPassed(s3, out2.reportKey);

      const ran = new Set(Object.entries({ ...first.functions }).filter(([, s]) => s.invocations > 0).map(([k]) => k));
      for (const [k, s] of Object.entries(second.functions)) if (s.invocations > 0) ran.add(k);
      expect([...ran].sort()).toEqual(Object.values(TASK_STATES).sort());

      // Each function read its database settings from Secrets Manager, only secrets its template grants.
      const readBy: Record<string, string[]> = {};
      for (const [key, spec] of Object.entries(TASK_FUNCTIONS)) {
        const fn = bundles.functions[TASK_STATES[key as keyof typeof TASK_STATES]]!;
        const read = [...new Set(secrets.reads.filter((r) => r.accessKeyId === functionAccessKeyId(fn)).map((r) => r.secretId))].sort();
        const granted = spec.secrets.map((s) => BUNDLED_SECRET_ARNS[s]);
        expect(read.length, fn.state).toBeGreaterThan(0);
        expect(read.filter((arn) => !granted.includes(arn)), fn.state).toEqual([]);
        readBy[fn.state] = read.map((arn) => (arn === BUNDLED_SECRET_ARNS.source ? 'source' : 'target'));
      }
      expect(readBy[TASK_STATES.preflight]).toEqual(['source', 'target']);
      expect(readBy[TASK_STATES.backupTable]).toEqual(['source']);
      expect(readBy[TASK_STATES.cutover]).toEqual(['target']);

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

function isBuiltin(name: string): boolean {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('node:module') as typeof import('node:module')).isBuiltin(name);
}
