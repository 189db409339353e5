import { mkdirSync } from 'node:fs';
// s3rver ships no types.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require('s3rver') as new (options: Record<string, unknown>) => {
  run(): Promise<{ port: number; address: string }>;
  close(): Promise<void>;
};
import { findFreePort } from './embedded-postgres';

/**
 * A local S3-compatible server (s3rver) on loopback, storing objects under `directory`. It checks
 * request signatures against its fixed key pair: connect with `createS3Client({ endpoint, localServer: true })`.
 */
export interface LocalS3 {
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  stop(): Promise<void>;
}

export interface LocalS3Options {
  readonly directory: string;
  /** Buckets to create at start (names must be valid DNS names). */
  readonly buckets?: string[];
  readonly port?: number;
}

export async function startLocalS3(options: LocalS3Options): Promise<LocalS3> {
  mkdirSync(options.directory, { recursive: true, mode: 0o700 });
  const port = options.port ?? (await findFreePort());
  const server = new S3rver({
    port,
    address: '127.0.0.1',
    silent: true,
    directory: options.directory,
    configureBuckets: (options.buckets ?? []).map((name) => ({ name })),
    resetOnClose: false,
  });
  await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    directory: options.directory,
    stop: () => server.close(),
  };
}
