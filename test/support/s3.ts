import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../lambdas/io/s3';
import { startLocalS3 } from '../../lib/runner/local-s3';

export interface TestS3 {
  readonly s3: S3Client;
  readonly bucket: string;
  readonly endpoint: string;
  stop(): Promise<void>;
}

/** A real local S3 (s3rver) in a temp directory with one fresh bucket; `stop` removes both. */
export async function startTestS3(): Promise<TestS3> {
  const directory = mkdtempSync(join(tmpdir(), 'tracetrack-s3-'));
  const bucket = `tt-backup-${randomBytes(4).toString('hex')}`;
  const server = await startLocalS3({ directory, buckets: [bucket] });
  const s3 = createS3Client({ endpoint: server.endpoint, localServer: true });
  return {
    s3,
    bucket,
    endpoint: server.endpoint,
    async stop() {
      s3.destroy();
      await server.stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}
