import { mkdtempSync, rmSync } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3Client } from '../../lambdas/io/s3';
import { startLocalS3 } from '../../lib/runner/local-s3';

export interface TestS3 {
  readonly s3: S3Client;
  readonly bucket: string;
  readonly endpoint: string;
  /** See LocalS3.addKeyPair. */
  addKeyPair(accessKeyId: string, secretAccessKey: string): Promise<void>;
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
    addKeyPair: (id, secret) => server.addKeyPair(id, secret),
    async stop() {
      s3.destroy();
      await server.stop();
      rmSync(directory, { recursive: true, force: true });
    },
  };
}

/**
 * A key pair the local s3rver accepts besides its built-in one (s3rver checks every request's
 * signature against its account registry): lets a test sign with credentials from the environment
 * and see a wrong key refused (InvalidAccessKeyId), as an authenticating S3-compatible server does.
 */
export async function registerTestS3Credentials(
  s3: TestS3,
  credentials = { accessKeyId: `AKIATEST${randomBytes(6).toString('hex').toUpperCase()}`, secretAccessKey: randomBytes(20).toString('base64') },
): Promise<{ accessKeyId: string; secretAccessKey: string }> {
  await s3.addKeyPair(credentials.accessKeyId, credentials.secretAccessKey);
  return credentials;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly headers: http.IncomingHttpHeaders;
}

export interface RecordingS3Front {
  readonly endpoint: string;
  readonly requests: RecordedRequest[];
  /** The bucket configuration it answers (s3rver implements neither call): protected = public access blocked + SSE-S3 by default. */
  bucketProtected: boolean;
  stop(): Promise<void>;
}

const S3_XMLNS = 'http://s3.amazonaws.com/doc/2006-03-01/';

/**
 * An HTTP front of the local s3rver that records every request's headers (s3rver ignores the SSE
 * headers, so this is where a test sees them) and forwards it unchanged. It answers the two bucket
 * configuration reads s3rver does not implement (GetPublicAccessBlock, GetBucketEncryption) from
 * `bucketProtected`, refusing a request whose access key `acceptKeyId` does not name.
 */
export async function startRecordingS3Front(target: string, acceptKeyId: string): Promise<RecordingS3Front> {
  const upstream = new URL(target);
  const requests: RecordedRequest[] = [];
  const front: { bucketProtected: boolean } = { bucketProtected: true };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://front');
    requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers });
    const config = url.searchParams.has('publicAccessBlock') ? 'pab' : url.searchParams.has('encryption') ? 'enc' : null;
    if (config && req.method === 'GET') {
      const keyId = /Credential=([^/]+)\//.exec(String(req.headers.authorization ?? ''))?.[1];
      const reply = (status: number, body: string) => {
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>${body}`);
      };
      const error = (status: number, code: string) => reply(status, `<Error><Code>${code}</Code><Message>${code}</Message></Error>`);
      req.resume();
      if (keyId !== acceptKeyId) return error(403, 'InvalidAccessKeyId');
      if (!front.bucketProtected) return error(404, config === 'pab' ? 'NoSuchPublicAccessBlockConfiguration' : 'ServerSideEncryptionConfigurationNotFoundError');
      return config === 'pab'
        ? reply(200, `<PublicAccessBlockConfiguration xmlns="${S3_XMLNS}"><BlockPublicAcls>true</BlockPublicAcls><IgnorePublicAcls>true</IgnorePublicAcls><BlockPublicPolicy>true</BlockPublicPolicy><RestrictPublicBuckets>true</RestrictPublicBuckets></PublicAccessBlockConfiguration>`)
        : reply(200, `<ServerSideEncryptionConfiguration xmlns="${S3_XMLNS}"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>`);
    }
    const forward = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    forward.on('error', () => res.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(front, {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    stop: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  });
}

/** One local S3 for a test file: started before its tests, stopped after them. Read `.current` inside a test. */
export function useTestS3(): { readonly current: TestS3 } {
  const holder: { current: TestS3 } = { current: undefined as unknown as TestS3 };
  beforeAll(async () => {
    holder.current = await startTestS3();
  });
  afterAll(async () => {
    await holder.current?.stop();
  });
  return holder;
}
