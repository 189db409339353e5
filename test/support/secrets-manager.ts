import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for Secrets Manager's GetSecretValue (its JSON protocol over HTTP), for the bundled
 * end-to-end test: nothing real can run Secrets Manager locally. Clients reach it through the
 * SDK's standard AWS_ENDPOINT_URL_SECRETS_MANAGER. It records which access key asked for which
 * secret, so a test can tell which function read what.
 */
export interface LocalSecretsManager {
  readonly endpoint: string;
  readonly reads: { readonly accessKeyId: string; readonly secretId: string }[];
  stop(): Promise<void>;
}

export async function startLocalSecretsManager(secrets: Readonly<Record<string, string>>): Promise<LocalSecretsManager> {
  const reads: LocalSecretsManager['reads'] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const fail = (status: number, type: string, message: string) => {
        res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-errortype': type });
        res.end(JSON.stringify({ __type: type, message }));
      };
      if (req.headers['x-amz-target'] !== 'secretsmanager.GetSecretValue') return fail(400, 'InvalidRequestException', 'only GetSecretValue');
      const accessKeyId = /Credential=([^/]+)\//.exec(String(req.headers.authorization ?? ''))?.[1] ?? '';
      const { SecretId: secretId } = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as { SecretId?: string };
      reads.push({ accessKeyId, secretId: String(secretId) });
      const value = secretId === undefined ? undefined : secrets[secretId];
      if (value === undefined) return fail(400, 'ResourceNotFoundException', "Secrets Manager can't find the specified secret.");
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      res.end(JSON.stringify({ ARN: secretId, Name: secretId!.split(':').pop(), SecretString: value, VersionId: 'v1', VersionStages: ['AWSCURRENT'], CreatedDate: 1_700_000_000 }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    reads,
    stop: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}

/** The RDS secret JSON of a postgres:// URL. */
export function rdsSecretOf(url: string): string {
  const u = new URL(url);
  return JSON.stringify({
    engine: 'postgres',
    host: u.hostname,
    port: Number(u.port || 5432),
    username: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    dbname: u.pathname.slice(1),
  });
}
