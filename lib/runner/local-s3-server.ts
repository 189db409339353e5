/**
 * The local S3-compatible server (s3rver with a safe filesystem store). startLocalS3 (lib/runner/local-s3.ts)
 * runs this file in a child process of its own; `serveLocalS3` serves in the calling process.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
// s3rver ships no types.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3rver = require('s3rver') as new (options: Record<string, unknown>) => {
  run(): Promise<{ port: number; address: string }>;
  close(): Promise<void>;
  store: unknown;
  context: { store: unknown };
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const FilesystemStore = require('s3rver/lib/stores/filesystem') as new (directory: string) => {
  getResourcePath(bucket: string, key: string | undefined, resource: string): string;
  putMetadata(bucket: string, key: string, metadata: Record<string, unknown>, md5?: string): Promise<void>;
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const S3Error = require('s3rver/lib/models/error') as new (code: string, message: string, detail?: Record<string, string>) => Error & { status: number; expose: boolean };

/**
 * The S3 error code the local server answers with when its own disk fails (HTTP 507, which the SDK does
 * not retry); `toStorageError` turns it into a LocalStorageError naming the path.
 */
export const LOCAL_STORAGE_ERROR_CODE = 'LocalStorageFailure';

/** Write failures of the server's directory that waiting will not fix. */
const LOCAL_IO_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EACCES', 'EPERM', 'EIO', 'EFBIG', 'EMFILE', 'ENFILE']);

function localFailure(err: unknown, fallbackPath: string): Error {
  const e = err as NodeJS.ErrnoException;
  if (!e?.code || !LOCAL_IO_CODES.has(e.code)) return err as Error;
  const failure = new S3Error(LOCAL_STORAGE_ERROR_CODE, `${e.code} writing ${e.path ?? fallbackPath}: ${e.message}`);
  // Koa sends the error's own status and, with expose, its message.
  failure.status = 507;
  failure.expose = true;
  return failure;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { DUMMY_ACCOUNT } = require('s3rver/lib/models/account') as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const ALLOWED_METADATA = (require('s3rver/lib/models/object') as { ALLOWED_METADATA: string[] }).ALLOWED_METADATA;

function tempName(file: string): string {
  return `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
}

async function atomicWrite(file: string, data: string): Promise<void> {
  const tmp = tempName(file);
  try {
    await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/**
 * s3rver's filesystem store with its writes made safe: upstream pipes the request body into a file
 * stream without an 'error' listener, so a full disk (ENOSPC) crashed the whole process with an
 * unhandled 'error' event. Here a write resolves when the file is written and rejects on its error,
 * and local I/O failures of every write become LOCAL_STORAGE_ERROR_CODE responses.
 */
class SafeFilesystemStore extends FilesystemStore {
  constructor(root: string) {
    super(root);
    const self = this as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    for (const method of ['putMetadata', 'initiateUpload', 'putObjectMultipart', 'copyObject', 'putSubresource', 'putBucket', 'deleteObject']) {
      const original = self[method]!.bind(this);
      self[method] = async (...args: unknown[]) => {
        try {
          return await original(...args);
        } catch (err) {
          throw localFailure(err, root);
        }
      };
    }
  }

  /**
   * Object metadata written whole or not at all (temp file + rename): upstream writes it in place, and a
   * process killed mid-write left a truncated JSON file that failed every later read of the object with
   * HTTP 500 (seen in the SIGKILL-during-backup test).
   */
  override async putMetadata(bucket: string, key: string, metadata: Record<string, unknown>, md5?: string): Promise<void> {
    const json = Object.fromEntries(Object.entries(metadata ?? {}).filter(([k]) => ALLOWED_METADATA.includes(k) || k.startsWith('x-amz-meta-')));
    if (md5) await atomicWrite(this.getResourcePath(bucket, key, 'object.md5'), md5);
    await atomicWrite(this.getResourcePath(bucket, key, 'metadata.json'), JSON.stringify(json, null, 2));
  }

  /** Streams into a temp file renamed into place when complete: a killed write never leaves a partial object. */
  private async writeStreamed(file: string, content: Readable | Buffer): Promise<{ size: number; md5: string }> {
    const tmp = tempName(file);
    try {
      await mkdir(path.dirname(file), { recursive: true });
      const md5 = createHash('md5');
      let size = 0;
      if (Buffer.isBuffer(content)) {
        md5.update(content);
        size = content.length;
        await pipeline(async function* () { yield content; }, createWriteStream(tmp));
      } else {
        const count = new Transform({
          transform(chunk: Buffer, _enc, callback) {
            md5.update(chunk);
            size += chunk.length;
            callback(null, chunk);
          },
        });
        await pipeline(content, count, createWriteStream(tmp));
      }
      await rename(tmp, file);
      return { size, md5: md5.digest('hex') };
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw localFailure(err, file);
    }
  }

  async putObject(object: { bucket: string; key: string; metadata: Record<string, unknown>; content: Readable | Buffer }): Promise<{ size: number; md5: string }> {
    const file = this.getResourcePath(object.bucket, object.key, 'object');
    const r = await this.writeStreamed(file, object.content);
    await this.putMetadata(object.bucket, object.key, object.metadata, r.md5);
    return r;
  }

  async putPart(bucket: string, uploadId: string, partNumber: number, content: Readable): Promise<{ size: number; md5: string }> {
    const file = path.join(this.getResourcePath(bucket, undefined, 'uploads'), uploadId, String(partNumber));
    const r = await this.writeStreamed(file, content);
    try {
      await atomicWrite(`${file}.md5`, r.md5);
    } catch (err) {
      throw localFailure(err, `${file}.md5`);
    }
    return r;
  }
}

/** The server options the parent sends (lib/runner/local-s3.ts). */
export interface LocalS3ServerOptions {
  readonly directory: string;
  readonly buckets: readonly string[];
  readonly port: number;
}

/** s3rver with the safe store, listening on 127.0.0.1:`port` in this process. */
export async function serveLocalS3(options: LocalS3ServerOptions): Promise<{ close(): Promise<void> }> {
  const server = new S3rver({
    port: options.port,
    address: '127.0.0.1',
    silent: true,
    directory: options.directory,
    configureBuckets: options.buckets.map((name) => ({ name })),
    resetOnClose: false,
  });
  server.store = server.context.store = new SafeFilesystemStore(options.directory);
  await server.run();
  return server;
}

/**
 * Child-process entry (forked by startLocalS3 with an IPC channel): serves until the parent sends
 * 'stop' or goes away (a parent killed with SIGKILL closes the channel: the server does not outlive it).
 */
function serveForParent(): void {
  const send = (message: unknown) => process.send?.(message);
  let closing: Promise<void> | undefined;
  let server: { close(): Promise<void> } | undefined;
  const stop = () => {
    closing ??= (server ? server.close() : Promise.resolve()).catch(() => undefined).then(() => process.exit(0));
  };
  process.on('disconnect', stop);
  // Ctrl-C reaches the whole process group: the parent decides when the server stops (its cleanup calls stop,
  // in-flight uploads finish first), as when the server ran inside it.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', () => undefined);
  process.on('message', (m: 'stop' | { addKeyPair?: { accessKeyId: string; secretAccessKey: string } }) => {
    if (m === 'stop') stop();
    else if (m.addKeyPair) {
      DUMMY_ACCOUNT.createKeyPair(m.addKeyPair.accessKeyId, m.addKeyPair.secretAccessKey);
      send({ keyPairAdded: m.addKeyPair.accessKeyId });
    }
  });
  const options = JSON.parse(process.argv[2] ?? '{}') as LocalS3ServerOptions;
  serveLocalS3(options).then(
    (s) => {
      server = s;
      send({ listening: options.port });
    },
    (err: Error) => {
      send({ failed: `${err.name}: ${err.message}` });
      process.exit(1);
    },
  );
}

if (require.main === module) serveForParent();
