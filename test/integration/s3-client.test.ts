import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { readObjectText } from '../../lambdas/io/s3';
import { createS3Client } from '../../lambdas/io/s3';
import { registerTestS3Credentials, startTestS3, type TestS3 } from '../support/s3';

/**
 * The one S3 client factory against the local s3rver (which checks every signature): which
 * credentials it signs with, and what an access error says about them in Lambda and CLI terms.
 */

let s3: TestS3;
const saved = { ...process.env };

beforeAll(async () => {
  s3 = await startTestS3();
});

afterAll(async () => {
  await s3?.stop();
});

afterEach(() => {
  process.env = { ...saved };
});

/** The standard chain with exactly these variables (no shared files, no instance metadata). */
function useEnv(vars: Record<string, string>): NodeJS.ProcessEnv {
  for (const k of Object.keys(process.env)) if (k.startsWith('AWS_')) delete process.env[k];
  Object.assign(process.env, { AWS_SHARED_CREDENTIALS_FILE: '/nonexistent', AWS_CONFIG_FILE: '/nonexistent', AWS_EC2_METADATA_DISABLED: 'true' }, vars);
  return process.env;
}

async function readError(client: ReturnType<typeof createS3Client>): Promise<Error> {
  try {
    await readObjectText(client, s3.bucket, 'runs/x/plan.json');
  } finally {
    client.destroy();
  }
  throw new Error('expected the read to fail');
}

describe('createS3Client', () => {
  it('signs with the environment\'s credentials for an endpoint (a key s3rver knows works, another is refused)', async () => {
    const good = await registerTestS3Credentials(s3);
    const env = useEnv({ AWS_ACCESS_KEY_ID: good.accessKeyId, AWS_SECRET_ACCESS_KEY: good.secretAccessKey });
    const client = createS3Client({ endpoint: s3.endpoint, env });
    expect(await readObjectText(client, s3.bucket, 'runs/x/none.json')).toBeNull();
    client.destroy();
  });

  it('in Lambda: the error names the key of the function\'s role and says to grant the role, never the secret', async () => {
    const env = useEnv({ AWS_LAMBDA_FUNCTION_NAME: 'BackupTableFunction', AWS_ACCESS_KEY_ID: 'ASIAROLEKEY000001', AWS_SECRET_ACCESS_KEY: 'role-secret-x', AWS_SESSION_TOKEN: 'token-y' });
    const err = await readError(createS3Client({ endpoint: s3.endpoint, env })).catch((e: Error) => e);
    expect(err.name).toBe('BackupError');
    expect(err.message).toBe(
      'Reading s3://' + s3.bucket + '/runs/x/plan.json was refused by S3 (InvalidAccessKeyId) with access key ASIAROLEKEY000001 from the execution role of function BackupTableFunction. ' +
        "Grant the function's role access to the bucket (and its KMS key), then rerun.",
    );
    expect(err.message).not.toMatch(/role-secret-x|token-y/);
  });

  it('from the CLI: the key, where it came from (AWS_PROFILE) and what to set; no credentials at all says so', async () => {
    const env = useEnv({ AWS_ACCESS_KEY_ID: 'AKIACLIKEY0000001', AWS_SECRET_ACCESS_KEY: 'cli-secret-z' });
    const err = await readError(createS3Client({ endpoint: s3.endpoint, env })).catch((e: Error) => e);
    expect(err.message).toMatch(/refused by S3 \(InvalidAccessKeyId\) with access key AKIACLIKEY0000001 from AWS_ACCESS_KEY_ID \/ AWS_SECRET_ACCESS_KEY in the environment\. Check that these credentials are valid for the S3-compatible server at http:\/\/127\.0\.0\.1:\d+ and may read and write the bucket/);
    expect(err.message).not.toContain('cli-secret-z');
    expect(err.message).not.toContain("function's role");

    const none = useEnv({});
    const missing = await readError(createS3Client({ endpoint: s3.endpoint, env: none })).catch((e: Error) => e);
    expect(missing.message).toMatch(/^Reading s3:\/\/\S+ failed: no AWS credentials were found \(looked in the default profile \(~\/\.aws\/credentials, ~\/\.aws\/config\) or the instance role\)\. Check/);
    expect(missing.message).toContain('set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY');
  });

  it('the built-in local server\'s key only when asked for', async () => {
    useEnv({});
    const local = createS3Client({ endpoint: s3.endpoint, localServer: true });
    expect(await readObjectText(local, s3.bucket, 'runs/x/none.json')).toBeNull();
    local.destroy();
  });
});
