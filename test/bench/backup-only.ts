/**
 * The backup phase alone, against the COPY|gzip -1 floor, on a seeded database: to profile and tune
 * the backup without a whole bench run.
 *
 *   npx tsx test/bench/backup-only.ts serve --scale 0.25      # seeds a cluster, prints its URL, stays up
 *   node --cpu-prof --import tsx test/bench/backup-only.ts run <url> [--floor] [--rounds N] [--in-process]
 *
 * `run` backs every source table up as the workflow does (BACKUP_MAX_CONCURRENCY tables at a time, each
 * through backupTableTask's connections), into the local S3 server the CLI uses, and prints per-table
 * and phase seconds next to the floor's.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { startBenchCluster } from './cluster';
import { copyGzipFloor, FLOOR_SESSION_OPTIONS } from './floor';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { startLocalS3 } from '../../lib/runner/local-s3';
import { serveLocalS3 } from '../../lib/runner/local-s3-server';
import { findFreePort } from '../../lib/runner/embedded-postgres';
import { createS3Client } from '../../lambdas/io/s3';
import { backupTableTask } from '../../lambdas/engine/tasks';
import { BACKUP_MAX_CONCURRENCY } from '../../lib/workflow';
import type { TaskDeps } from '../../lambdas/engine/tasks';

const SOURCE_TABLES = ['user', 'bag', 'scan', 'bill', 'bill_bag'];
const arg = (name: string, def?: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/** CPU seconds of a process: [own user+sys, reaped children's user+sys] (/proc/<pid>/stat, 100 ticks/s). */
function cpuOf(pid: number | 'self'): [number, number] {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return [(Number(f[11]) + Number(f[12])) / 100, (Number(f[13]) + Number(f[14])) / 100];
}

/**
 * CPU used between `start()` and the returned function's call, load-independent: this process (all its
 * threads: zlib runs in the libuv pool), its reaped children (the floor's gzip), PostgreSQL's backends
 * (the postmaster's children sampled every 10 ms from /proc: at most 10 ms of each backend is missed) and
 * the local S3 server (`serverPid`).
 */
async function cpuMeter(url: string, serverPid?: number): Promise<() => string> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  const backend = Number((await c.query('SELECT pg_backend_pid() AS p')).rows[0].p);
  const postmaster = Number(readFileSync(`/proc/${backend}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
  await c.end();
  const seen = new Map<number, { first: number; last: number }>();
  const sample = () => {
    for (const name of readFileSync(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8').trim().split(' ')) {
      try {
        const pid = Number(name);
        const cpu = cpuOf(pid)[0];
        const entry = seen.get(pid);
        if (entry) entry.last = cpu;
        else seen.set(pid, { first: started ? 0 : cpu, last: cpu });
      } catch {
        // exited meanwhile
      }
    }
  };
  let started = false;
  sample();
  started = true;
  const timer = setInterval(sample, 10);
  const a = { self: cpuOf('self'), s3: serverPid ? cpuOf(serverPid)[0] : 0 };
  return () => {
    clearInterval(timer);
    sample();
    const node = cpuOf('self')[0] - a.self[0];
    const kids = cpuOf('self')[1] - a.self[1];
    const pgCpu = [...seen.values()].reduce((sum, e) => sum + e.last - e.first, 0);
    const s3 = (serverPid ? cpuOf(serverPid)[0] : 0) - a.s3;
    return `cpu: node ${node.toFixed(2)} + gzip ${kids.toFixed(2)} + postgres ${pgCpu.toFixed(2)} + s3 server ${s3.toFixed(2)} = ${(node + kids + pgCpu + s3).toFixed(2)} s`;
  };
}

async function serve(): Promise<void> {
  const scale = Number(arg('scale', '0.25'));
  const cluster = await startBenchCluster(undefined);
  await cluster.createDatabase('bench');
  const client = new pg.Client({ connectionString: cluster.url('bench') });
  await client.connect();
  const seed = await seedLegacyShapeA(client, { scale });
  await client.query('CHECKPOINT');
  await client.end();
  console.log(JSON.stringify(seed.rows));
  console.log(`URL ${cluster.url('bench')}`);
  const stop = () => void cluster.stop().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  setInterval(() => undefined, 1 << 30);
}

async function run(url: string): Promise<void> {
  const u = new URL(url);
  if (process.argv.includes('--floor')) {
    const connect = async () => {
      const c = new pg.Client({ connectionString: url, options: FLOOR_SESSION_OPTIONS });
      await c.connect();
      return c;
    };
    const meter = await cpuMeter(url);
    const f = await copyGzipFloor(connect, SOURCE_TABLES);
    console.log(`${meter()} (sequential + 2 at a time)`);
    console.log(`floor per table ${JSON.stringify(Object.fromEntries(Object.entries(f.perTable).map(([k, v]) => [k, +v.toFixed(2)])))}; sequential ${f.sequential.toFixed(2)} s, 2 at a time ${f.concurrent2.toFixed(2)} s; load ${loadavg()[0]!.toFixed(2)}`);
  }
  const rounds = Number(arg('rounds', '1'));
  const directory = mkdtempSync(path.join(tmpdir(), 'tracetrack-backup-only-'));
  // --in-process: the server on this thread, as before it moved to a child process (to compare).
  const port = await findFreePort();
  const server = process.argv.includes('--in-process')
    ? await serveLocalS3({ directory, buckets: ['bench'], port }).then((s) => ({ endpoint: `http://127.0.0.1:${port}`, pid: undefined, stop: () => s.close() }))
    : await startLocalS3({ directory, buckets: ['bench'], port });
  const s3 = createS3Client({ endpoint: server.endpoint, localServer: true });
  const deps = {
    source: async () => ({ host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password), database: u.pathname.slice(1), ssl: 'disable' }),
    s3, bucket: 'bench', prefix: '', timeBudgetMs: Number(arg('budget-ms', '600000')),
  } as unknown as TaskDeps;
  try {
    for (let round = 1; round <= rounds; round += 1) {
      const runId = `backup-only-${Date.now()}`;
      const run = { runId, sourceSchema: 'public' } as never;
      const perTable: Record<string, number> = {};
      const meter = await cpuMeter(url, server.pid);
      const t0 = process.hrtime.bigint();
      const queue = [...SOURCE_TABLES];
      await Promise.all(Array.from({ length: BACKUP_MAX_CONCURRENCY }, async () => {
        for (let table = queue.shift(); table; table = queue.shift()) {
          const t = process.hrtime.bigint();
          let cursor: string | null = null;
          for (;;) {
            const r = await backupTableTask({ run, table, cursor } as never, deps);
            if (r.done) break;
            cursor = r.cursor;
          }
          perTable[table] = +secondsSince(t).toFixed(2);
        }
      }));
      console.log(`round ${round}: backup ${secondsSince(t0).toFixed(2)} s; per table ${JSON.stringify(perTable)}; load ${loadavg()[0]!.toFixed(2)}; rss ${Math.round(process.resourceUsage().maxRSS / 1024)} MB`);
      const serverRss = server.pid ? /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))?.[1] : undefined;
      console.log(`  ${meter()}${serverRss ? `; s3 server peak RSS ${Math.round(Number(serverRss) / 1024)} MB` : ''}`);
    }
  } finally {
    s3.destroy();
    await server.stop();
    rmSync(directory, { recursive: true, force: true });
  }
}

const mode = process.argv[2];
(mode === 'serve' ? serve() : mode === 'run' ? run(process.argv[3]!) : Promise.reject(new Error('serve | run <url>'))).catch((err) => {
  console.error(err);
  process.exit(1);
});
