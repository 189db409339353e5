import { chmodSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { GetBucketEncryptionCommand, GetPublicAccessBlockCommand, type S3Client } from '@aws-sdk/client-s3';
import { accessHint, createS3Client } from '../../lambdas/io/s3';
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
  /** SSE-KMS key for every object written (else SSE-S3). Only with --bucket. */
  readonly 'kms-key-id'?: string;
  /** Write to a bucket that does not block public access or has no default encryption (after a warning). */
  readonly 'allow-unencrypted-bucket'?: boolean;
}

export interface BackupStoreOptions {
  /** The command writes objects: the bucket's public access block and default encryption are checked first. */
  readonly writes: boolean;
}

export interface BackupStore {
  readonly bucket: string;
  /** Set for an S3-compatible server (local or --s3-endpoint). */
  readonly endpoint?: string;
  /** The endpoint is the built-in local server (signed with its fixed key). */
  readonly localServer: boolean;
  readonly s3: S3Client;
  /** SSE-KMS key of every object written; without one every write asks for SSE-S3. */
  readonly kmsKeyId?: string;
  /** Local directory holding the objects (local server only). */
  readonly directory?: string;
  describe(key?: string): string;
}

export function assertBackupFlags(flags: BackupStoreFlags): void {
  if (flags['backup-dir'] && flags.bucket) throw new CliUsageError('Pass either --backup-dir (local backups) or --bucket (S3), not both.');
  if (flags['s3-endpoint'] && !flags.bucket) throw new CliUsageError('--s3-endpoint needs --bucket.');
  if (flags['kms-key-id'] && !flags.bucket) throw new CliUsageError('--kms-key-id needs --bucket (local backups are a directory of mode 0700).');
  if (flags['allow-unencrypted-bucket'] && !flags.bucket) throw new CliUsageError('--allow-unencrypted-bucket needs --bucket.');
}

/** What a bucket's configuration says, or why it could not be read (an S3 error name). */
export interface BucketProtection {
  readonly publicAccessBlock: { readonly all: boolean; readonly missing: string[] } | { readonly error: string };
  readonly defaultEncryption: { readonly algorithm: string | null } | { readonly error: string };
}

const PUBLIC_ACCESS_SETTINGS = ['BlockPublicAcls', 'IgnorePublicAcls', 'BlockPublicPolicy', 'RestrictPublicBuckets'] as const;

/** Reads the bucket's public access block and default encryption; never throws for an S3 refusal. */
export async function readBucketProtection(s3: S3Client, bucket: string): Promise<BucketProtection & { hint?: string }> {
  let hint: string | undefined;
  const errorName = (err: unknown) => {
    hint ??= accessHint(err)?.credentials;
    return (err as { name?: string }).name ?? 'Error';
  };
  let publicAccessBlock: BucketProtection['publicAccessBlock'];
  try {
    const out = await s3.send(new GetPublicAccessBlockCommand({ Bucket: bucket }));
    const config = out.PublicAccessBlockConfiguration ?? {};
    const missing = PUBLIC_ACCESS_SETTINGS.filter((k) => config[k] !== true);
    publicAccessBlock = { all: missing.length === 0, missing };
  } catch (err) {
    const name = errorName(err);
    publicAccessBlock = name === 'NoSuchPublicAccessBlockConfiguration' ? { all: false, missing: [...PUBLIC_ACCESS_SETTINGS] } : { error: name };
  }
  let defaultEncryption: BucketProtection['defaultEncryption'];
  try {
    const out = await s3.send(new GetBucketEncryptionCommand({ Bucket: bucket }));
    const rule = out.ServerSideEncryptionConfiguration?.Rules?.find((r) => r.ApplyServerSideEncryptionByDefault?.SSEAlgorithm);
    defaultEncryption = { algorithm: rule?.ApplyServerSideEncryptionByDefault?.SSEAlgorithm ?? null };
  } catch (err) {
    const name = errorName(err);
    defaultEncryption = name === 'ServerSideEncryptionConfigurationNotFoundError' ? { algorithm: null } : { error: name };
  }
  return { publicAccessBlock, defaultEncryption, hint };
}

/** What is wrong with a bucket the backups (every source row, password hashes included) would go to. */
export function bucketProtectionProblems(bucket: string, p: BucketProtection): string[] {
  const problems: string[] = [];
  const pab = p.publicAccessBlock;
  if ('error' in pab) {
    problems.push(`its public access block could not be read (${pab.error}): the CLI's credentials need s3:GetBucketPublicAccessBlock on s3://${bucket}`);
  } else if (!pab.all) {
    problems.push(`it does not block public access (${pab.missing.join(', ')} not set): aws s3api put-public-access-block --bucket ${bucket} --public-access-block-configuration BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,RestrictPublicBuckets=true`);
  }
  const enc = p.defaultEncryption;
  if ('error' in enc) {
    problems.push(`its default encryption could not be read (${enc.error}): the CLI's credentials need s3:GetEncryptionConfiguration on s3://${bucket}`);
  } else if (!enc.algorithm) {
    problems.push(`it has no default encryption: aws s3api put-bucket-encryption --bucket ${bucket} --server-side-encryption-configuration '{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms"}}]}'`);
  }
  return problems;
}

/** Refuses (or, with --allow-unencrypted-bucket, warns about) a bucket that is not private and encrypted. */
async function assertBucketProtected(ctx: CliContext, s3: S3Client, bucket: string, allow: boolean): Promise<void> {
  const protection = await readBucketProtection(s3, bucket);
  const problems = bucketProtectionProblems(bucket, protection);
  if (problems.length === 0) return;
  const list = problems.map((p) => `  - ${p}`).join('\n');
  const used = protection.hint ? ` (checked with ${protection.hint})` : '';
  if (allow) {
    ctx.stderr(`Warning: s3://${bucket}${used} is written to although:\n${list}\n(--allow-unencrypted-bucket; every object still asks for server-side encryption)\n`);
    return;
  }
  throw new CliUsageError(
    `Refusing to write backups (every source row, password hashes included) to s3://${bucket}${used}:\n${list}\n` +
      'Fix the bucket, or pass --allow-unencrypted-bucket if it is protected in a way this check cannot see.',
  );
}

function displayPath(cwd: string, dir: string): string {
  const rel = path.relative(cwd, dir);
  return rel && !rel.startsWith('..') ? rel : dir;
}

/** Runs `fn` with the backup store, starting (and afterwards stopping) the local server when needed. */
export async function withBackupStore<T>(ctx: CliContext, flags: BackupStoreFlags, options: BackupStoreOptions, fn: (store: BackupStore) => Promise<T>): Promise<T> {
  assertBackupFlags(flags);
  if (flags.bucket) {
    const endpoint = flags['s3-endpoint'];
    // Any S3 the user names is signed with the standard credential chain of the CLI's environment.
    const s3 = createS3Client({ endpoint, env: ctx.env });
    const bucket = flags.bucket;
    try {
      if (options.writes) await assertBucketProtected(ctx, s3, bucket, flags['allow-unencrypted-bucket'] === true);
      return await fn({ bucket, endpoint, localServer: false, s3, kmsKeyId: flags['kms-key-id'], describe: (key) => `s3://${bucket}/${key ?? ''}` });
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
