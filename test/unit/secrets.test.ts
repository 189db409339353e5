import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mockClient } from 'aws-sdk-client-mock';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { resetRuntime, resolveDatabaseConfig } from '../../lambdas/io/runtime';
import { parseRdsSecret } from '../../lambdas/io/pg';

/**
 * Database secrets from Secrets Manager (SOURCE_SECRET_ARN / TARGET_SECRET_ARN): a bad secret is a
 * ConnectionConfigError naming what is wrong, and never echoes the secret's text.
 */

const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:tracetrack-source-AbCdEf';
const SECRET_PASSWORD = 'S3cr3t-P@ss-xyz';
const env = { SOURCE_SECRET_ARN: ARN, TARGET_SECRET_ARN: ARN } as NodeJS.ProcessEnv;
const sm = mockClient(SecretsManagerClient);

beforeEach(() => {
  sm.reset();
  resetRuntime();
});
afterEach(() => {
  resetRuntime();
});

async function failure(role: 'source' | 'target' = 'source'): Promise<Error & { retryable?: boolean }> {
  const err = await resolveDatabaseConfig(role, env).then(() => null, (e: unknown) => e as Error & { retryable?: boolean });
  expect(err, 'a bad secret must be refused').not.toBeNull();
  return err!;
}

describe('database secret from Secrets Manager', () => {
  it('a valid RDS secret resolves, with TLS verified for a non-loopback host', async () => {
    sm.on(GetSecretValueCommand, { SecretId: ARN }).resolves({
      SecretString: JSON.stringify({ engine: 'postgres', host: 'db.cluster-x.eu-west-1.rds.amazonaws.com', port: 5432, username: 'migrator', password: SECRET_PASSWORD, dbname: 'tracetrack' }),
    });
    await expect(resolveDatabaseConfig('source', env)).resolves.toEqual({
      host: 'db.cluster-x.eu-west-1.rds.amazonaws.com', port: 5432, user: 'migrator', password: SECRET_PASSWORD, database: 'tracetrack', sslmode: 'verify-full',
    });
  });

  it.each([
    ['not JSON at all', `password=${SECRET_PASSWORD}`, /not valid JSON[\s\S]*"host"/],
    ['truncated JSON', `{"host":"db.example","password":"${SECRET_PASSWORD}"`, /not valid JSON/],
    ['JSON but not an object', JSON.stringify([SECRET_PASSWORD]), /lacks "host"[\s\S]*"username"[\s\S]*"password"/],
    ['JSON null', 'null', /lacks "host"/],
    ['missing host and username', JSON.stringify({ password: SECRET_PASSWORD, port: 5432 }), /lacks "host" \(a non-empty string\), "username"/],
    ['missing password', JSON.stringify({ host: 'db.example', username: 'migrator', dbname: SECRET_PASSWORD }), /lacks "password"/],
    ['empty password', JSON.stringify({ host: 'db.example', username: 'migrator', password: '' }), /lacks "password"/],
    ['port not a number', JSON.stringify({ host: 'db.example', username: 'migrator', password: SECRET_PASSWORD, port: 'five' }), /"port" \(a number\)/],
    ['username a number', JSON.stringify({ host: 'db.example', username: 42, password: SECRET_PASSWORD }), /lacks "username"/],
  ])('%s → ConnectionConfigError naming what is missing, without the secret text', async (_label, secretString, expected) => {
    sm.on(GetSecretValueCommand).resolves({ SecretString: secretString });
    const err = await failure();
    expect(err.name).toBe('ConnectionConfigError');
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(expected);
    expect(err.message).toMatch(/secret/i);
    expect(err.message).not.toContain(SECRET_PASSWORD);
    expect(err.message).not.toContain(secretString.length > 8 ? secretString : '\u0000');
    expect(JSON.stringify(err)).not.toContain(SECRET_PASSWORD);
  });

  it('a secret without SecretString (binary secret) is refused', async () => {
    sm.on(GetSecretValueCommand).resolves({ SecretBinary: new TextEncoder().encode(SECRET_PASSWORD) });
    const err = await failure('target');
    expect(err.name).toBe('ConnectionConfigError');
    expect(err.message).toMatch(/target secret has no SecretString/);
    expect(err.message).not.toContain(SECRET_PASSWORD);
  });

  it.each([
    ['AccessDeniedException', 'User: arn:aws:sts::123456789012:assumed-role/fn is not authorized to perform: secretsmanager:GetSecretValue'],
    ['ResourceNotFoundException', "Secrets Manager can't find the specified secret."],
    ['DecryptionFailure', 'Access to KMS is not allowed'],
  ])('%s from Secrets Manager → ConnectionConfigError saying to check the secret and the role', async (name, message) => {
    sm.on(GetSecretValueCommand).rejects(Object.assign(new Error(message), { name, $metadata: { httpStatusCode: 400 } }));
    const err = await failure();
    expect(err.name).toBe('ConnectionConfigError');
    expect(err.message).toContain(name);
    expect(err.message).toMatch(/Check that it exists and that the function's role may read it/);
  });

  it('a good secret is read once per process (cached), a bad one is not cached', async () => {
    sm.on(GetSecretValueCommand).resolvesOnce({ SecretString: '{' }).resolves({
      SecretString: JSON.stringify({ host: '127.0.0.1', username: 'u', password: SECRET_PASSWORD, dbname: 'd' }),
    });
    await expect(resolveDatabaseConfig('source', env)).rejects.toMatchObject({ name: 'ConnectionConfigError' });
    const ok = await resolveDatabaseConfig('source', env);
    expect(ok.sslmode).toBe('disable');
    await resolveDatabaseConfig('source', env);
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('a URL takes precedence and no secret is read; neither configured names both variables', async () => {
    const url = await resolveDatabaseConfig('source', { SOURCE_DATABASE_URL: 'postgres://u:p@127.0.0.1:5/db', SOURCE_SECRET_ARN: ARN });
    expect(url.port).toBe(5);
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(0);
    await expect(resolveDatabaseConfig('source', {})).rejects.toMatchObject({ name: 'ConnectionConfigError', message: expect.stringMatching(/SOURCE_SECRET_ARN[\s\S]*SOURCE_DATABASE_URL/) });
    await expect(resolveDatabaseConfig('target', {})).rejects.toMatchObject({ name: 'ConnectionConfigError', message: expect.stringMatching(/TARGET_SECRET_ARN[\s\S]*TARGET_DATABASE_URL/) });
  });
});

describe('parseRdsSecret', () => {
  it('defaults: port 5432, database postgres, sslmode by host; honours an explicit sslmode', () => {
    expect(parseRdsSecret(JSON.stringify({ host: 'db.example', username: 'u', password: 'p' }), 'x')).toEqual({
      host: 'db.example', port: 5432, user: 'u', password: 'p', database: 'postgres', sslmode: 'verify-full',
    });
    expect(parseRdsSecret(JSON.stringify({ host: 'db.example', username: 'u', password: 'p', sslmode: 'require' }), 'x').sslmode).toBe('require');
    expect(parseRdsSecret(JSON.stringify({ host: 'localhost', username: 'u', password: 'p' }), 'x').sslmode).toBe('disable');
  });

  it('lists every missing field at once, and never the password', () => {
    let message = '';
    try {
      parseRdsSecret(JSON.stringify({ port: 'x', password: '' , dbname: SECRET_PASSWORD }), 'source');
    } catch (e) {
      expect((e as Error).name).toBe('ConnectionConfigError');
      message = (e as Error).message;
    }
    expect(message).toMatch(/"host"[\s\S]*"username"[\s\S]*"password"[\s\S]*"port"/);
    expect(message).not.toContain(SECRET_PASSWORD);
  });
});
