import { chmodSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../lambdas/io/s3';
import { startLocalS3 } from '../runner/local-s3';
import { CliUsageError, withResource, type CliContext } from './common';

/**
 * Where backups, plans and reports go: by default a local S3-compatible server (s3rver) that the
 * CLI starts on a free loopback port, storing under --backup-dir; with --bucket, real S3 (or the
 * S3-compatible endpoint of --s3-endpoint).
 */
export const DEFAULT_BACKUP_DIR = path.join('.tracetrack', 's3');
export const LOCAL_BUCKET = 'tracetrack-backups';

export interface BackupStoreFlags {
  readonly 'backup-dir'?: string;
  readonly bucket?: string;
  readonly 's3-endpoint'?: string;
}

export interface BackupStore {
  readonly bucket: string;
  /** Set for an S3-compatible server (local or --s3-endpoint). */
  readonly endpoint?: string;
  /** The endpoint is the built-in local server (signed with its fixed key). */
  readonly localServer: boolean;
  readonly s3: S3Client;
  /** Local directory holding the objects (local server only). */
  readonly directory?: string;
  describe(key?: string): string;
}

export function assertBackupFlags(flags: BackupStoreFlags): void {
  if (flags['backup-dir'] && flags.bucket) throw new CliUsageError('Pass either --backup-dir (local backups) or --bucket (S3), not both.');
  if (flags['s3-endpoint'] && !flags.bucket) throw new CliUsageError('--s3-endpoint needs --bucket.');
}

function displayPath(cwd: string, dir: string): string {
  const rel = path.relative(cwd, dir);
  return rel && !rel.startsWith('..') ? rel : dir;
}

/** Runs `fn` with the backup store, starting (and afterwards stopping) the local server when needed. */
export async function withBackupStore<T>(ctx: CliContext, flags: BackupStoreFlags, fn: (store: BackupStore) => Promise<T>): Promise<T> {
  assertBackupFlags(flags);
  if (flags.bucket) {
    const endpoint = flags['s3-endpoint'];
    // Any S3 the user names is signed with the standard credential chain of the CLI's environment.
    const s3 = createS3Client({ endpoint, env: ctx.env });
    const bucket = flags.bucket;
    try {
      return await fn({ bucket, endpoint, localServer: false, s3, describe: (key) => `s3://${bucket}/${key ?? ''}` });
    } finally {
      s3.destroy();
    }
  }
  const directory = path.resolve(ctx.cwd, flags['backup-dir'] ?? DEFAULT_BACKUP_DIR);
  // The backups hold every source row (password hashes included): only the owner may read them.
  const parent = path.dirname(directory);
  if (!flags['backup-dir']) {
    mkdirSync(parent, { recursive: true, mode: 0o700 });
  }
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  chmodSync(directory, 0o700);
  return withResource(
    ctx,
    'local S3 server',
    () => startLocalS3({ directory, buckets: [LOCAL_BUCKET] }),
    (server) => server.stop(),
    async (server) => {
      const s3 = createS3Client({ endpoint: server.endpoint, localServer: true, env: ctx.env });
      try {
        return await fn({
          bucket: LOCAL_BUCKET,
          endpoint: server.endpoint,
          localServer: true,
          s3,
          directory,
          describe: (key) => `s3://${LOCAL_BUCKET}/${key ?? ''} (stored under ${displayPath(ctx.cwd, directory)})`,
        });
      } finally {
        s3.destroy();
      }
    },
  );
}
