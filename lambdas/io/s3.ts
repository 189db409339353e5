import { S3Client } from '@aws-sdk/client-s3';

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
