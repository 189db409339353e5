import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { findFreePort, startEmbeddedCluster, type EmbeddedCluster, type EmbeddedClusterOptions } from '../../lib/runner/embedded-postgres';

/**
 * The bench's PostgreSQL: the embedded one (default, 18), or with `--postgres N` Debian's binaries of
 * major version N (/usr/lib/postgresql/N/bin), initdb'd into a temporary directory and started with the
 * same settings as the embedded one (fsync, synchronous_commit and full_page_writes off, 200 connections,
 * default shared_buffers). Stopped and removed by `stop()`.
 */
export function benchPostgresVersion(argv: readonly string[] = process.argv): string | undefined {
  const i = argv.indexOf('--postgres');
  if (i >= 0) return argv[i + 1];
  return argv.find((a) => a.startsWith('--postgres='))?.slice('--postgres='.length);
}

/**
 * initdb's flags for page checksums `on` or `off` on the cluster startBenchCluster starts for `version`:
 * initdb 18 (the embedded one) turns them on by default and knows --no-data-checksums; before 18 they are
 * off by default and initdb knows only --data-checksums.
 */
export function dataChecksumFlags(version: string | undefined, checksums: 'on' | 'off'): string[] {
  const onByDefault = version === undefined || version === 'embedded' || Number(version) >= 18;
  if ((checksums === 'on') === onByDefault) return [];
  return [onByDefault ? '--no-data-checksums' : '--data-checksums'];
}

export async function startBenchCluster(version: string | undefined, options: EmbeddedClusterOptions = {}): Promise<EmbeddedCluster> {
  if (version === undefined || version === 'embedded') return startEmbeddedCluster(options);
  if (!/^\d+$/.test(version)) throw new Error(`--postgres takes a major version (e.g. 15), not ${JSON.stringify(version)}`);
  return startDebianCluster(`/usr/lib/postgresql/${version}/bin`, options);
}

const USER = 'postgres';
const PASSWORD = 'tracetrack-local';

async function startDebianCluster(bin: string, options: EmbeddedClusterOptions): Promise<EmbeddedCluster> {
  if (!existsSync(path.join(bin, 'initdb'))) throw new Error(`No PostgreSQL binaries in ${bin} (apt-get install postgresql-<version>).`);
  const dir = mkdtempSync(path.join(tmpdir(), 'tracetrack-pgdeb-'));
  const data = path.join(dir, 'data');
  const isRoot = process.getuid?.() === 0;
  // initdb and postgres refuse to run as root: as root they run as the 'postgres' user.
  const run = (cmd: string, args: string[]) => {
    const [file, argv] = isRoot ? ['runuser', ['-u', USER, '--', cmd, ...args]] : [cmd, args];
    return execFileSync(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
  };
  chmodSync(dir, 0o755);
  const pwfile = path.join(dir, 'pw');
  writeFileSync(pwfile, `${PASSWORD}\n`, { mode: 0o600 });
  if (isRoot) {
    const uid = Number(execFileSync('id', ['-u', USER]).toString().trim());
    const gid = Number(execFileSync('id', ['-g', USER]).toString().trim());
    chownSync(dir, uid, gid);
    chownSync(pwfile, uid, gid);
  }
  run(path.join(bin, 'initdb'), ['-D', data, '-U', USER, '--pwfile', pwfile, '--auth=scram-sha-256', '--encoding=UTF8', '--locale=C', ...(options.initdbFlags ?? [])]);
  const port = options.port ?? (await findFreePort());
  const flags = [
    `-c port=${port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories=${dir}`, '-c max_connections=200',
    '-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off',
    ...chunk(options.postgresFlags ?? []),
  ].join(' ');
  run(path.join(bin, 'pg_ctl'), ['-D', data, '-o', flags, '-l', path.join(dir, 'postgres.log'), '-w', '-t', '60', 'start']);
  const url = (database = 'postgres') => `postgres://${USER}:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return {
    port,
    url,
    async createDatabase(name) {
      const c = new pg.Client({ connectionString: url() });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await c.end();
      }
    },
    async stop() {
      try {
        run(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'fast', '-w', 'stop']);
        // The server's log (auto_explain's plans with --explain-slow) to the caller, as the embedded one streams it.
        if (options.onLog && existsSync(path.join(dir, 'postgres.log'))) {
          for (const line of readFileSync(path.join(dir, 'postgres.log'), 'utf8').split('\n')) options.onLog(line);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** `['-c', 'a=b', '-c', 'x=y']` → `['-c a=b', '-c x=y']` (pg_ctl -o takes one string). */
function chunk(flags: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < flags.length; i += 1) out.push(flags[i] === '-c' ? `-c ${flags[++i]}` : flags[i]!);
  return out;
}
