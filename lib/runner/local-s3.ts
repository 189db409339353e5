import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { findFreePort } from './embedded-postgres';
import type { LocalS3ServerOptions } from './local-s3-server';

/**
 * A local S3-compatible server (s3rver) on loopback, storing objects under `directory`. It checks
 * request signatures against its fixed key pair: connect with `createS3Client({ endpoint, localServer: true })`.
 *
 * It runs in a child process (lib/runner/local-s3-server.ts), as S3 runs elsewhere in production: its HTTP
 * parsing, MD5s and disk writes no longer share the caller's thread with the backup's COPY parsing,
 * SHA-256 and gzip (in-process, they made a table's backup 1.3–1.7× slower; README "Backup speed").
 * The child ends with its parent (the IPC channel closes when the parent dies, SIGKILL included).
 */
export interface LocalS3 {
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  /** The server's process id. */
  readonly pid: number;
  /** Makes the server accept one more key pair besides its built-in one (s3rver checks every signature). */
  addKeyPair(accessKeyId: string, secretAccessKey: string): Promise<void>;
  stop(): Promise<void>;
}

export interface LocalS3Options {
  readonly directory: string;
  /** Buckets to create at start (names must be valid DNS names). */
  readonly buckets?: string[];
  readonly port?: number;
}

const SERVER = path.join(__dirname, `local-s3-server${path.extname(__filename)}`);

/** Node flags for the child: run from TypeScript source (tsx, as the CLI is), or plain when compiled. */
function childExecArgv(): string[] {
  return SERVER.endsWith('.ts') ? ['--import', pathToFileURL(require.resolve('tsx')).href] : [];
}

function waitForListening(child: ChildProcess, stderr: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      reject(new Error(`The local S3 server exited before it listened (${signal ?? `exit ${code}`}): ${stderr().trim().slice(-2000)}`));
    child.once('exit', onExit);
    child.once('error', reject);
    child.on('message', (m: { listening?: number; failed?: string }) => {
      if (m.listening === undefined && m.failed === undefined) return;
      child.off('exit', onExit);
      if (m.failed !== undefined) reject(new Error(`The local S3 server did not start: ${m.failed}`));
      else resolve();
    });
  });
}

function addKeyPair(child: ChildProcess, accessKeyId: string, secretAccessKey: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { keyPairAdded?: string }) => {
      if (m.keyPairAdded !== accessKeyId) return;
      child.off('message', onMessage);
      child.channel?.unref();
      resolve();
    };
    child.on('message', onMessage);
    child.channel?.ref();
    child.send({ addKeyPair: { accessKeyId, secretAccessKey } }, (err) => err && reject(err));
  });
}

export async function startLocalS3(options: LocalS3Options): Promise<LocalS3> {
  mkdirSync(options.directory, { recursive: true, mode: 0o700 });
  const port = options.port ?? (await findFreePort());
  const serverOptions: LocalS3ServerOptions = { directory: options.directory, buckets: options.buckets ?? [], port };
  const child = fork(SERVER, [JSON.stringify(serverOptions)], { execArgv: childExecArgv(), stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'json' });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr = (stderr + String(d)).slice(-8000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await waitForListening(child, () => stderr);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  // The parent may exit while the server runs (the CLI ends with it; the 'disconnect' handler stops it).
  child.unref();
  child.channel?.unref();
  (child.stderr as unknown as { unref?: () => void }).unref?.();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    directory: options.directory,
    pid: child.pid!,
    addKeyPair: (accessKeyId, secretAccessKey) => addKeyPair(child, accessKeyId, secretAccessKey),
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        // Referenced again until it has exited: else the caller's event loop could empty while the child stops,
        // and the process end on its own with status 0 before the caller sets its exit code.
        child.ref();
        child.send('stop', (err) => err && child.kill('SIGKILL'));
      }
      await exited;
    },
  };
}
