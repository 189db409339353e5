import { PassThrough } from 'node:stream';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type PutObjectCommandInput } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { renderJson } from '../core/backup-manifest';
import { BackupError, LocalStorageError, MigrationError, TransientStorageError } from '../core/errors';
import { createLimiter } from '../core/limiter';


/**
 * The one S3 client factory (task handlers, CLI, tests).
 *
 * - No endpoint: AWS S3 with the standard credential chain (in Lambda: the function's role).
 * - An endpoint (`--s3-endpoint`, any S3-compatible server): path-style requests, still signed with
 *   the standard credential chain (environment, profile, SSO, container or instance role).
 * - The built-in local server (s3rver, started by the CLI and the tests): signed with its fixed,
 *   public key pair. Only that server gets it; it is not a secret.
 *
 * Every client records, on an S3 error that is about who is asking, which credentials were used
 * (access key id and where it came from, never the secret) and what to check, in the terms of
 * whoever runs the code (a Lambda function's role, or the CLI's environment): see {@link accessHint}.
 */
export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3ClientOptions {
  /** An S3-compatible endpoint. @default - AWS S3 */
  readonly endpoint?: string;
  /** The endpoint is the built-in local s3rver: sign with its fixed key pair. @default false */
  readonly localServer?: boolean;
  /** @default AWS_REGION, else 'us-east-1' for an endpoint, else the SDK's own resolution */
  readonly region?: string;
  /** The environment the credentials come from (for the description in errors). @default process.env */
  readonly env?: NodeJS.ProcessEnv;
  /** @default the SDK's (3) */
  readonly maxAttempts?: number;
}

/** Which credentials an S3 request was signed with, and what to check: attached to auth errors. */
export interface S3AccessHint {
  /** `access key AKIA… from <source>`, or `no credentials from <source>`. */
  readonly credentials: string;
  /** Where the credentials came from (or were looked for). */
  readonly source: string;
  readonly remedy: string;
}

const HINT = Symbol.for('tracetrack.s3AccessHint');

/** S3 error names that are about the caller's credentials or permissions. */
const ACCESS_ERRORS = new Set([
  'AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidToken', 'ExpiredToken', 'TokenRefreshRequired',
  'InvalidClientTokenId', 'CredentialsProviderError', 'AllAccessDisabled', 'AccountProblem',
]);

export function isAccessError(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } } | null;
  return !!e && (ACCESS_ERRORS.has(e.name ?? '') || e.$metadata?.httpStatusCode === 403);
}

/** The hint a client of {@link createS3Client} attached to an access error, if any. */
export function accessHint(err: unknown): S3AccessHint | undefined {
  return err && typeof err === 'object' ? (err as { [HINT]?: S3AccessHint })[HINT] : undefined;
}

/** Where the standard chain took the credentials from, as far as the environment tells. */
function describeSource(env: NodeJS.ProcessEnv): string {
  if (env.AWS_LAMBDA_FUNCTION_NAME) return `the execution role of function ${env.AWS_LAMBDA_FUNCTION_NAME}`;
  if (env.AWS_ACCESS_KEY_ID) return 'AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment';
  if (env.AWS_PROFILE) return `profile ${JSON.stringify(env.AWS_PROFILE)} (AWS_PROFILE)`;
  if (env.AWS_WEB_IDENTITY_TOKEN_FILE) return 'the web identity token of AWS_WEB_IDENTITY_TOKEN_FILE';
  if (env.AWS_CONTAINER_CREDENTIALS_RELATIVE_URI || env.AWS_CONTAINER_CREDENTIALS_FULL_URI) return 'the container credentials endpoint';
  return 'the default profile (~/.aws/credentials, ~/.aws/config) or the instance role';
}

function remedyFor(env: NodeJS.ProcessEnv, where: string, localServer: boolean): string {
  if (localServer) return 'The built-in local S3 server accepts only its own key; this is a bug, please report it.';
  if (env.AWS_LAMBDA_FUNCTION_NAME) {
    return `Grant the function's role access to the bucket (and its KMS key), then rerun.`;
  }
  return `Check that these credentials are valid for ${where} and may read and write the bucket (and use its KMS key): ` +
    'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE; then rerun the command.';
}

export function createS3Client(options: S3ClientOptions = {}): S3Client {
  const env = options.env ?? process.env;
  const { endpoint, localServer = false } = options;
  const region = options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? (endpoint ? 'us-east-1' : undefined);
  const client = new S3Client({
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    ...(region ? { region } : {}),
    ...(localServer ? { credentials: { ...LOCAL_S3_CREDENTIALS } } : {}),
    ...(options.maxAttempts ? { maxAttempts: options.maxAttempts } : {}),
  });
  const where = endpoint ? `the S3-compatible server at ${endpoint}` : 'AWS S3';
  const source = localServer ? `the built-in local S3 server's key` : describeSource(env);
  client.middlewareStack.add(
    (next) => async (args) => {
      try {
        return await next(args);
      } catch (err) {
        if (isAccessError(err) && err && typeof err === 'object' && !accessHint(err)) {
          let keyId = '';
          try {
            keyId = (await client.config.credentials()).accessKeyId;
          } catch {
            // no credentials at all: the error itself says so
          }
          const credentials = keyId ? `access key ${keyId} from ${source}` : `no credentials from ${source}`;
          Object.defineProperty(err, HINT, { value: { credentials, source, remedy: remedyFor(env, where, localServer) }, enumerable: false });
        }
        throw err;
      }
    },
    { step: 'initialize', name: 'tracetrackAccessHint' },
  );
  return client;
}

/** Multipart upload: at most `queueSize * partSize` bytes are buffered per object. */
const UPLOAD_PART_SIZE = 8 * 1024 * 1024;
const UPLOAD_QUEUE_SIZE = 2;

// ---------------------------------------------------------------- object helpers (backup, restore, reports, the CLI)

type ErrorClass = new (message: string, options?: { cause?: unknown }) => MigrationError;

const TRANSIENT_S3 = new Set([
  'SlowDown', 'ThrottlingException', 'Throttling', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError',
  'ServiceUnavailable', 'TimeoutError', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN',
]);

/** S3 error code of the local server's own disk failures (LOCAL_STORAGE_ERROR_CODE in lib/runner/local-s3-server.ts). */
const LOCAL_STORAGE_FAILURE = 'LocalStorageFailure';

export function isStorageError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && '$metadata' in err;
}

/** An S3 SDK error as one of our named errors: transient ones are retried by the workflow. */
export function toStorageError(err: unknown, doing: string, fallback: ErrorClass = BackupError): MigrationError {
  if (err instanceof MigrationError) return err;
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const name = e?.name ?? e?.code ?? 'Error';
  const status = e?.$metadata?.httpStatusCode;
  if (name === LOCAL_STORAGE_FAILURE) {
    // The local S3 server (lib/runner/local-s3.ts) could not write its own directory.
    const detail = (err as Error).message;
    return new LocalStorageError(
      `${doing} failed: the local backup directory could not be written (${detail}). Free space there (or fix its permissions), ` +
        `then rerun with the same --run-id: finished steps and batches are skipped.`,
      { cause: err },
    );
  }
  if (TRANSIENT_S3.has(name) || (e?.code && TRANSIENT_S3.has(e.code)) || (status !== undefined && status >= 500)) {
    return new TransientStorageError(`${doing} failed for a transient reason (${name}${status ? `, HTTP ${status}` : ''}). It is safe to retry.`, { cause: err });
  }
  if (isAccessError(err)) {
    const hint = accessHint(err);
    const remedy = hint?.remedy ?? `Grant the function's role access to the bucket (and its KMS key), then rerun.`;
    if (name === 'CredentialsProviderError') {
      return new fallback(`${doing} failed: no AWS credentials were found${hint ? ` (looked in ${hint.source})` : ''}. ${remedy}`, { cause: err });
    }
    return new fallback(`${doing} was refused by S3 (${name})${hint ? ` with ${hint.credentials}` : ''}. ${remedy}`, { cause: err });
  }
  if (name === 'NoSuchBucket') {
    return new fallback(`${doing} failed: the bucket does not exist (${name}). Check BACKUP_BUCKET.`, { cause: err });
  }
  return new fallback(`${doing} failed (${name}${status ? `, HTTP ${status}` : ''}).`, { cause: err });
}

/** Every object written asks for server-side encryption: SSE-KMS with the key when there is one, else SSE-S3. */
export function sseParams(kmsKeyId: string | undefined): Pick<PutObjectCommandInput, 'ServerSideEncryption' | 'SSEKMSKeyId'> {
  return kmsKeyId ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: kmsKeyId } : { ServerSideEncryption: 'AES256' };
}

/** The object's text, or null when it does not exist. */
export async function readObjectText(s3: S3Client, bucket: string, key: string, fallback: ErrorClass = BackupError): Promise<string | null> {
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return (await out.Body?.transformToString('utf8')) ?? '';
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404) return null;
    throw toStorageError(err, `Reading s3://${bucket}/${key}`, fallback);
  }
}

/** {@link readObjectText} of every key, up to `concurrency` requests at once; the texts in the keys' order. */
export async function readObjectTexts(s3: S3Client, bucket: string, keys: readonly string[], concurrency = 8): Promise<(string | null)[]> {
  const limiter = createLimiter(concurrency);
  return Promise.all(keys.map((key) => limiter.run(() => readObjectText(s3, bucket, key))));
}

export async function putJsonObject(s3: S3Client, bucket: string, key: string, value: unknown, kmsKeyId?: string): Promise<void> {
  try {
    await s3.send(new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: renderJson(value),
      ContentType: 'application/json',
      ...sseParams(kmsKeyId),
    }));
  } catch (err) {
    throw toStorageError(err, `Writing s3://${bucket}/${key}`);
  }
}

export async function putTextObject(s3: S3Client, bucket: string, key: string, text: string, contentType: string, kmsKeyId?: string): Promise<void> {
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: text, ContentType: contentType, ...sseParams(kmsKeyId) }));
  } catch (err) {
    throw toStorageError(err, `Writing s3://${bucket}/${key}`);
  }
}

export async function listObjectKeys(s3: S3Client, bucket: string, prefix: string, fallback: ErrorClass = BackupError): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    try {
      const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of out.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } catch (err) {
      throw toStorageError(err, `Listing s3://${bucket}/${prefix}`, fallback);
    }
  } while (token);
  return keys;
}

/**
 * The run (under `<prefix>runs/`) whose object matching `objectPath` is the newest, or null. `objectPath`
 * is matched against the key below `runs/` and captures the run id: `/^([^/]+)\/rejects\.jsonl\.gz$/`.
 */
export async function findLatestRunWith(s3: S3Client, bucket: string, prefix: string, objectPath: RegExp, fallback: ErrorClass = BackupError): Promise<string | null> {
  const runsPrefix = `${prefix}runs/`;
  let latest: { runId: string; at: number } | null = null;
  let token: string | undefined;
  do {
    let out;
    try {
      out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: runsPrefix, ContinuationToken: token }));
    } catch (err) {
      throw toStorageError(err, `Listing the runs under s3://${bucket}/${runsPrefix}`, fallback);
    }
    for (const object of out.Contents ?? []) {
      const match = objectPath.exec((object.Key ?? '').slice(runsPrefix.length));
      if (!match) continue;
      const runId = match[1]!;
      const at = object.LastModified?.getTime() ?? 0;
      if (!latest || at > latest.at || (at === latest.at && runId > latest.runId)) latest = { runId, at };
    }
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return latest?.runId ?? null;
}

/** Streams `source` into one S3 object (multipart), aborting the upload if the stream fails. */
export async function uploadStream(input: {
  s3: S3Client;
  bucket: string;
  key: string;
  contentType: string;
  kmsKeyId?: string;
  produce: (body: PassThrough) => Promise<void>;
}): Promise<void> {
  const body = new PassThrough();
  const upload = new Upload({
    client: input.s3,
    params: { Bucket: input.bucket, Key: input.key, Body: body, ContentType: input.contentType, ...sseParams(input.kmsKeyId) },
    partSize: UPLOAD_PART_SIZE,
    queueSize: UPLOAD_QUEUE_SIZE,
    leavePartsOnError: false,
  });
  const uploaded = upload.done();
  // A failed upload stops reading; destroying the body unblocks the producer's backpressure.
  uploaded.catch((err) => body.destroy(err as Error));
  try {
    await input.produce(body);
  } catch (err) {
    await upload.abort().catch(() => undefined);
    await uploaded.catch(() => undefined);
    throw err;
  }
  try {
    await uploaded;
  } catch (err) {
    throw toStorageError(err, `Uploading s3://${input.bucket}/${input.key}`);
  }
}

