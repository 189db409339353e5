import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { S3Client } from '@aws-sdk/client-s3';
import { ConnectionConfigError, InputError } from '../core/errors';
import { ENV } from '../core/contract';
import { parseDatabaseUrl, parseRdsSecret, type DatabaseConfig } from './pg';
import { createS3Client } from './s3';

/**
 * Runtime configuration of the task handlers, read from the environment.
 * In AWS the databases come from Secrets Manager; locally the runner sets URLs instead.
 * Clients are built once per process (module scope) and reused across invocations.
 */
let secretsClient: SecretsManagerClient | undefined;
let s3: S3Client | undefined;
const secretCache = new Map<string, DatabaseConfig>();

export function secretsManager(): SecretsManagerClient {
  secretsClient ??= new SecretsManagerClient({});
  return secretsClient;
}

/** Drops cached clients and secrets (tests, or after the local runner changes the environment). */
export function resetRuntime(): void {
  secretsClient = undefined;
  s3 = undefined;
  secretCache.clear();
}

async function readSecretConfig(arn: string, label: string): Promise<DatabaseConfig> {
  const cached = secretCache.get(arn);
  if (cached) return cached;
  let secretString: string | undefined;
  try {
    const out = await secretsManager().send(new GetSecretValueCommand({ SecretId: arn }));
    secretString = out.SecretString;
  } catch (err) {
    const name = (err as Error).name;
    throw new ConnectionConfigError(
      `Reading the ${label} secret failed (${name}). Check that it exists and that the function's role may read it.`,
      { cause: err },
    );
  }
  if (!secretString) throw new ConnectionConfigError(`The ${label} secret has no SecretString.`);
  const config = parseRdsSecret(secretString, label);
  secretCache.set(arn, config);
  return config;
}

export type DatabaseRole = 'source' | 'target';

export async function resolveDatabaseConfig(role: DatabaseRole, env: NodeJS.ProcessEnv = process.env): Promise<DatabaseConfig> {
  const url = env[role === 'source' ? ENV.sourceUrl : ENV.targetUrl];
  const arn = env[role === 'source' ? ENV.sourceSecretArn : ENV.targetSecretArn];
  if (url) return parseDatabaseUrl(url, `${role} database URL`);
  if (arn) return readSecretConfig(arn, role);
  // Locally the target defaults to the source database (the new tables go into their own schema).
  // In AWS every function that may touch the target is given TARGET_SECRET_ARN explicitly.
  if (role === 'target' && env[ENV.sourceUrl]) return resolveDatabaseConfig('source', env);
  if (role === 'target') {
    throw new ConnectionConfigError(`No target database configured for this function: set ${ENV.targetSecretArn} (AWS) or ${ENV.targetUrl} (local).`);
  }
  throw new ConnectionConfigError(
    `No source database configured: set ${ENV.sourceSecretArn} (AWS) or ${ENV.sourceUrl} (local).`,
  );
}

export function backupBucket(env: NodeJS.ProcessEnv = process.env): string {
  const bucket = env[ENV.bucket];
  if (!bucket) throw new InputError(`No backup bucket configured: set ${ENV.bucket}.`);
  return bucket;
}

export function backupPrefix(env: NodeJS.ProcessEnv = process.env): string {
  const p = env[ENV.prefix] ?? '';
  return p && !p.endsWith('/') ? `${p}/` : p;
}

export function kmsKeyId(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env[ENV.kmsKeyId] || undefined;
}

export function timeBudgetMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = Number(env[ENV.timeBudgetMs]);
  return Number.isFinite(v) && v > 0 ? v : 600_000;
}

/** The run's concurrency when the execution input names none (DEFAULT_CONCURRENCY, set from the stack prop). */
export function defaultConcurrency(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const v = Number(env[ENV.defaultConcurrency]);
  return Number.isInteger(v) && v > 0 ? v : undefined;
}

/**
 * The S3 client: AWS by default, the S3-compatible server of S3_ENDPOINT when set (both with the
 * standard credential chain), the built-in local server's key only when S3_LOCAL_SERVER=true.
 */
export function s3Client(env: NodeJS.ProcessEnv = process.env): S3Client {
  s3 ??= createS3Client({ endpoint: env[ENV.s3Endpoint] || undefined, localServer: env[ENV.s3LocalServer] === 'true', env });
  return s3;
}
