import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, withTestClient } from '../support/pg';
import { loadFixture } from '../support/engine';
import { registerTestS3Credentials, startRecordingS3Front, startTestS3, type RecordedRequest, type RecordingS3Front, type TestS3 } from '../support/s3';

/**
 * `run` and `restore` with `--bucket --s3-endpoint` against an S3-compatible server that checks
 * signatures (s3rver, with a key pair of the test's) behind a front that records every request's
 * headers: credentials come from the environment, every object written asks for server-side
 * encryption, and a bucket that is not private and encrypted is refused.
 */

const ROOT = path.join(__dirname, '..', '..');

interface CliResult { code: number; stdout: string; stderr: string }

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  const clean: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^AWS_|^DATABASE_URL$/.test(k)) clean[k] = v;
  // No shared config either: the only credentials are the ones a test puts in the environment.
  Object.assign(clean, { AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_CONFIG_FILE: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true', AWS_REGION: 'us-east-1' }, env);
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bin', 'cli.ts'), ...args], { cwd: ROOT, env: clean, maxBuffer: 32 * 1024 * 1024, timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The requests that create an object: PutObject, and CreateMultipartUpload (its parts carry no SSE headers). */
function writes(requests: RecordedRequest[]): RecordedRequest[] {
  return requests.filter((r) => (r.method === 'PUT' && !r.query.has('partNumber')) || (r.method === 'POST' && r.query.has('uploads')));
}

let s3: TestS3;
let front: RecordingS3Front;
let credentials: { accessKeyId: string; secretAccessKey: string };
let db: { url: string; drop: () => Promise<void> };
let work: string;

beforeAll(async () => {
  s3 = await startTestS3();
  credentials = await registerTestS3Credentials(s3);
  front = await startRecordingS3Front(s3.endpoint, credentials.accessKeyId);
  db = await createTestDatabase('clis3');
  await loadFixture(db.url, 'a');
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-cli-s3-'));
});

afterAll(async () => {
  await front?.stop();
  await s3?.stop();
  await db?.drop();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the CLI with --bucket --s3-endpoint', () => {
  const envCredentials = () => ({ AWS_ACCESS_KEY_ID: credentials.accessKeyId, AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey });

  it('run and restore sign with the environment\'s credentials; every object written asks for SSE-S3, or SSE-KMS with --kms-key-id', async () => {
    front.bucketProtected = true;
    const mapping = path.join(work, 'mapping.json');
    writeFileSync(mapping, JSON.stringify({ skipTables: [] }));
    front.requests.length = 0;
    const run = await cli(['run', '--source', db.url, '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'auth-1', '--mapping', mapping], envCredentials());
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const sse = writes(front.requests);
    expect(sse.length).toBeGreaterThan(15);
    expect(sse.map((r) => r.path)).toContain(`/${s3.bucket}/runs/auth-1/mapping.json`);
    expect(sse.filter((r) => r.headers['x-amz-server-side-encryption'] !== 'AES256').map((r) => r.path)).toEqual([]);
    // Every request was signed with the environment's key (s3rver checked each signature).
    expect(front.requests.filter((r) => !String(r.headers.authorization).includes(`Credential=${credentials.accessKeyId}/`))).toEqual([]);

    front.requests.length = 0;
    const kms = 'arn:aws:kms:us-east-1:123456789012:key/0b5e1d7c-test';
    const second = await cli(['run', '--source', db.url, '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'auth-2', '--kms-key-id', kms], envCredentials());
    expect(second.code).toBe(0);
    const kmsWrites = writes(front.requests);
    expect(kmsWrites.length).toBeGreaterThan(15);
    expect(kmsWrites.filter((r) => r.headers['x-amz-server-side-encryption'] !== 'aws:kms' || r.headers['x-amz-server-side-encryption-aws-kms-key-id'] !== kms)).toEqual([]);

    front.requests.length = 0;
    const restore = await cli(['restore', '--target', db.url, '--schema', 'restored_auth', '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'auth-1', '--table', 'bag'], envCredentials());
    expect(restore.stderr).toBe('');
    expect(restore.code).toBe(0);
    expect(writes(front.requests)).toEqual([]);
    await withTestClient(db.url, async (c) => {
      const n = await c.query('SELECT (SELECT count(*) FROM restored_auth.bag)::int AS restored, (SELECT count(*) FROM public.bag)::int AS source');
      expect(n.rows[0]).toEqual({ restored: 17, source: 17 });
    });
  });

  it('wrong credentials: the error names the access key used and where it came from, in CLI terms, never the secret', async () => {
    const secret = 'wrong-secret-never-printed';
    // A database of its own: the failed run keeps its target's lease until it is resumed.
    const own = await createTestDatabase('clis3w');
    let result: CliResult;
    try {
      await loadFixture(own.url, 'a');
      result = await cli(
        ['run', '--source', own.url, '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'auth-3', '--allow-unencrypted-bucket'],
        { AWS_ACCESS_KEY_ID: 'AKIAWRONGKEY0000', AWS_SECRET_ACCESS_KEY: secret },
      );
    } finally {
      await own.drop();
    }
    expect(result.code).toBe(1);
    // The bucket check could not read the bucket's configuration either, and says so before the run.
    expect(result.stderr).toMatch(/^Warning: s3:\/\/\S+ \(checked with access key AKIAWRONGKEY0000 from AWS_ACCESS_KEY_ID/);
    const out = result.stdout + result.stderr;
    expect(out).toMatch(/refused by S3 \(InvalidAccessKeyId\) with access key AKIAWRONGKEY0000 from AWS_ACCESS_KEY_ID \/ AWS_SECRET_ACCESS_KEY in the environment/);
    expect(out).toContain(`valid for the S3-compatible server at ${front.endpoint}`);
    expect(out).not.toContain("function's role");
    expect(out).not.toContain(secret);
  });

  it('refuses a bucket that does not block public access and has no default encryption, unless --allow-unencrypted-bucket', async () => {
    front.bucketProtected = false;
    try {
      front.requests.length = 0;
      const refused = await cli(['run', '--source', db.url, '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'open-1'], envCredentials());
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain(`Refusing to write backups (every source row, password hashes included) to s3://${s3.bucket}`);
      expect(refused.stderr).toContain('it does not block public access (BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets not set)');
      expect(refused.stderr).toContain('it has no default encryption');
      expect(refused.stderr).toContain('--allow-unencrypted-bucket');
      expect(writes(front.requests)).toEqual([]);

      front.requests.length = 0;
      const allowed = await cli(['run', '--source', db.url, '--bucket', s3.bucket, '--s3-endpoint', front.endpoint, '--run-id', 'open-2', '--allow-unencrypted-bucket'], envCredentials());
      expect(allowed.code).toBe(0);
      expect(allowed.stderr).toMatch(/^Warning: s3:\/\/.* is written to although:/);
      const sse = writes(front.requests);
      expect(sse.length).toBeGreaterThan(15);
      expect(sse.filter((r) => r.headers['x-amz-server-side-encryption'] !== 'AES256')).toEqual([]);
    } finally {
      front.bucketProtected = true;
    }
  });
});
