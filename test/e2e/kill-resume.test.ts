import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminQuery, createTestDatabase, withTestClient } from '../support/pg';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { parsePasswordsStep } from '../../lambdas/core/work-graph';

/**
 * The local runner (the CLI, a child process) killed with SIGKILL in the middle of a migration
 * batch, of a backup upload and of verification, then rerun with the same --run-id: each run must
 * end exactly like a clean run (same target content, rejects not doubled, checkpoint batches
 * contiguous, backup parts not duplicated and identical to the clean run's).
 *
 * Every database is a `CREATE DATABASE … TEMPLATE` copy of one seeded shape-A database, so the
 * killed runs and the clean reference run start from byte-identical sources (the demo seed's
 * password hashes have random salts; everything else it generates is deterministic).
 */

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'cli.ts');
/**
 * 0.05 = 500 users, 50,000 bags, 150,000 scans, 2,500 bills, 50,000 bill_bag rows: with batches of
 * 20,000 and a 1 s time budget the scan step takes several batches and the backup and verification long
 * enough to be caught in the middle. At 0.03 the backup of a quiet machine sometimes finished between two polls
 * of the mid-backup kill (the torn-record test then failed with "finished before the moment to kill it came").
 */
const SCALE = Number(process.env.KILL_RESUME_SCALE ?? '0.05');
const BUCKET = 'tracetrack-backups';
const TARGET_TABLES = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log'];
const SOURCE_TABLES = ['user', 'bag', 'scan', 'bill', 'bill_bag'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function cliEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DATABASE_URL;
  delete env.AWS_DATABASE_URL;
  return env;
}

function runArgs(url: string, dir: string, runId: string): string[] {
  return ['run', '--source', url, '--backup-dir', dir, '--run-id', runId, '--batch-size', '20000', '--time-budget-ms', '1000'];
}

interface Spawned {
  readonly child: ChildProcess;
  readonly out: () => string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The CLI in its own process group (detached), so the whole group can be killed. */
function spawnCli(args: string[]): Spawned {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    env: cliEnv(),
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  child.stderr!.on('data', (d) => (out += String(d)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, out: () => out, exited };
}

/** Runs the CLI to its end. */
function runCli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: cliEnv(), maxBuffer: 32 * 1024 * 1024, timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** SIGKILLs the CLI's whole process group and waits until it is gone. */
async function killGroup(s: Spawned): Promise<void> {
  const pid = s.child.pid!;
  process.kill(-pid, 'SIGKILL');
  const { signal } = await s.exited;
  expect(signal).toBe('SIGKILL');
  for (let i = 0; i < 100 && (alive(pid) || alive(-pid)); i++) await sleep(20);
  expect(alive(pid), 'the killed CLI process is gone').toBe(false);
  expect(alive(-pid), 'nothing of its process group is left').toBe(false);
}

/**
 * Polls `ready` (its own short-lived connection each time) until it returns a description of the
 * moment, then kills the CLI. Fails if the CLI exits first or nothing happens within `timeoutMs`.
 */
async function killWhen(s: Spawned, ready: () => Promise<string | null>, timeoutMs = 120_000): Promise<string> {
  let exited = false;
  void s.exited.then(() => (exited = true));
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw new Error(`the CLI finished before the moment to kill it came (too fast: raise KILL_RESUME_SCALE):\n${s.out()}`);
    if (Date.now() > until) throw new Error(`no moment to kill the CLI within ${timeoutMs} ms:\n${s.out()}`);
    const moment = await ready().catch(() => null);
    if (moment !== null) {
      await killGroup(s);
      if (process.env.KILL_RESUME_DEBUG) console.log(`killed: ${moment}\n${s.out()}`);
      return moment;
    }
    await sleep(15);
  }
}

/** Migration connections of the database busy in a transaction (a batch, a verification query). */
async function busyMigrationConnections(c: import('pg').Client, appName = 'tracetrack-migrate'): Promise<number> {
  const r = await c.query(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()
        AND state IN ('active', 'idle in transaction') AND xact_start IS NOT NULL`,
    [appName],
  );
  return r.rows[0].n;
}

async function internalTables(c: import('pg').Client): Promise<boolean> {
  const r = await c.query(`SELECT to_regclass('tracetrack._migration_run') IS NOT NULL AND to_regclass('tracetrack._migration_checkpoint') IS NOT NULL AS ok`);
  return r.rows[0].ok === true;
}

/**
 * Starts a run and SIGKILLs it while the backup is under way: at least `minFinished` tables
 * finished (their table.json stored), not all of them, a backup COPY running.
 */
async function killMidBackup(url: string, dir: string, runId: string, minFinished = 0): Promise<{ root: string; moment: string; finished: string[] }> {
  const root = backupRoot(dir, runId);
  const finishedTables = () => SOURCE_TABLES.filter((t) => existsSync(path.join(root, t, 'table.json._S3rver_object')));
  const first = spawnCli(runArgs(url, dir, runId));
  const moment = await killWhen(first, async () => {
    const finished = finishedTables();
    const parts = SOURCE_TABLES.flatMap((t) => objectNames(path.join(root, t)).filter((n) => /^part-\d+\.json$/.test(n)));
    if (parts.length < 1 || finished.length < minFinished || finished.length === SOURCE_TABLES.length) return null;
    const at = `${parts.length} part(s) stored, tables finished: ${finished.join(', ') || 'none'}`;
    // With tables to have finished, any moment before the last one finishes will do (the whole backup of the
    // test data takes under half a second: a connection probe per poll would miss it); otherwise kill a backup
    // in progress.
    if (minFinished > 0) return at;
    return withTestClient(url, async (c) => ((await busyMigrationConnections(c, 'tracetrack-migrate:backup')) === 0 ? null : at));
  });
  return { root, moment, finished: finishedTables() };
}

// ---------------------------------------------------------------- what "identical to a clean run" means

async function runTimeOf(url: string, runId: string): Promise<string> {
  return withTestClient(url, async (c) => {
    const r = await c.query(`SELECT to_char(run_time, 'YYYY-MM-DD"T"HH24:MI:SS.US') AS t, status FROM tracetrack._migration_run WHERE run_id = $1`, [runId]);
    expect(r.rows[0]?.status, `run ${runId} is completed`).toBe('completed');
    return r.rows[0].t as string;
  });
}

/** Content of every target table; password hashes left out, the run's migration time normalised. */
async function dump(url: string, runId: string): Promise<Record<string, string>> {
  const runTime = await runTimeOf(url, runId);
  return withTestClient(url, async (c) => {
    const out: Record<string, string> = {};
    for (const t of TARGET_TABLES) {
      const meta = await c.query(
        `SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'tracetrack' AND table_name = $1 AND column_name <> 'password_hash' ORDER BY ordinal_position`,
        [t],
      );
      expect(meta.rows.length, `target table ${t} exists`).toBeGreaterThan(0);
      const cols = meta.rows.map((r) =>
        String(r.data_type).startsWith('timestamp')
          ? `CASE WHEN "${r.column_name}" = '${runTime}'::timestamp THEN 'RUN-TIME' ELSE "${r.column_name}"::text END AS "${r.column_name}"`
          : `"${r.column_name}"`,
      );
      const r = await c.query(`SELECT md5(string_agg(x::text, '|' ORDER BY x.id)) AS h, count(*)::int AS n FROM (SELECT ${cols.join(', ')} FROM tracetrack."${t}") x`);
      out[t] = `${r.rows[0].n}:${r.rows[0].h}`;
    }
    return out;
  });
}

/** The run's rejects: count, content (without run id and time), and how many (source_table, source_key) repeat. */
async function rejects(url: string, runId: string): Promise<{ n: number; h: string; repeated: number }> {
  return withTestClient(url, async (c) => {
    const r = await c.query(
      `SELECT count(*)::int AS n,
              md5(COALESCE(string_agg(target_table || '/' || source_table || '/' || source_key || '/' || reason, '|' ORDER BY source_table, source_key, target_table, reason), '')) AS h
         FROM tracetrack._migration_reject WHERE run_id = $1`,
      [runId],
    );
    const d = await c.query(
      `SELECT count(*)::int AS n FROM (SELECT 1 FROM tracetrack._migration_reject WHERE run_id = $1 GROUP BY source_table, source_key HAVING count(*) > 1) x`,
      [runId],
    );
    return { n: r.rows[0].n, h: r.rows[0].h, repeated: d.rows[0].n };
  });
}

/** Checkpoint batch numbers per (step, source). */
async function checkpointBatches(url: string, runId: string): Promise<Record<string, number[]>> {
  return withTestClient(url, async (c) => {
    const r = await c.query(
      `SELECT step, source_table, array_agg(batch_no ORDER BY batch_no) AS b FROM tracetrack._migration_checkpoint
        WHERE run_id = $1 AND batch_no <> -1 GROUP BY step, source_table ORDER BY 1, 2`,
      [runId],
    );
    return Object.fromEntries(r.rows.map((row) => [`${row.step}/${row.source_table}`, (row.b as number[]).map(Number)]));
  });
}

/**
 * The checkpoint batches with the hashing steps' taken together (`passwords/<table>`: 1..their total). Which hashing
 * step hashes a password depends on timing (one beside other steps stops when they are done: core/work-graph.ts), so
 * a clean run had passwords:1/3 [1] and passwords:2/3 [1] where a resumed one had passwords:1/3 [1, 2]; each batch
 * takes the next PASSWORD_BATCH pending keys, so their total is the same in every run.
 */
function hashingStepsTogether(batches: Record<string, number[]>): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const [key, list] of Object.entries(batches)) {
    const slash = key.lastIndexOf('/');
    if (!parsePasswordsStep(key.slice(0, slash))) {
      out[key] = list;
      continue;
    }
    const together = `passwords/${key.slice(slash + 1)}`;
    const before = out[together]?.length ?? 0;
    out[together] = [...(out[together] ?? []), ...list.map((_, i) => before + i + 1)];
  }
  return out;
}

/** The backup as stored by s3rver under --backup-dir: `<dir>/<bucket>/<key>._S3rver_object`. */
function backupRoot(dir: string, runId: string): string {
  return path.join(dir, BUCKET, 'runs', runId, 'backup');
}

function objectNames(dirOfKeys: string): string[] {
  if (!existsSync(dirOfKeys)) return [];
  return readdirSync(dirOfKeys).filter((f) => f.endsWith('._S3rver_object')).map((f) => f.slice(0, -'._S3rver_object'.length)).sort();
}

interface ManifestShape {
  runId: string;
  tables: { name: string; rows: number; sha256: string; parts: { key: string; rows: number; sha256: string; keyRange: unknown }[] }[];
}

/** The manifest and the objects of each table, with run-specific parts (the run id in keys) taken out. */
function backupOf(dir: string, runId: string) {
  const root = backupRoot(dir, runId);
  const file = path.join(root, 'manifest.json._S3rver_object');
  expect(existsSync(file), `the manifest of run ${runId} is stored under --backup-dir`).toBe(true);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as ManifestShape;
  expect(manifest.runId).toBe(runId);
  const prefix = `runs/${runId}/backup/`;
  const tables: Record<string, unknown> = {};
  for (const t of manifest.tables) {
    const keys = t.parts.map((p) => p.key);
    expect(new Set(keys).size, `table ${t.name}: no part listed twice in the manifest`).toBe(keys.length);
    for (const k of keys) expect(k.startsWith(prefix)).toBe(true);
    expect(t.parts.reduce((a, p) => a + p.rows, 0)).toBe(t.rows);
    tables[t.name] = {
      rows: t.rows,
      sha256: t.sha256,
      parts: t.parts.map((p) => ({ key: p.key.slice(prefix.length), rows: p.rows, sha256: p.sha256, keyRange: p.keyRange })),
      objects: objectNames(path.join(root, t.name)),
    };
  }
  return { tables, rootObjects: objectNames(root) };
}

// ---------------------------------------------------------------- databases

let work: string;
let templateName: string;
const dropLater: (() => Promise<void>)[] = [];
let clean: { dump: Record<string, string>; rejects: { n: number; h: string; repeated: number }; batches: Record<string, number[]>; backup: ReturnType<typeof backupOf> };

/** A byte-identical copy of the seeded source. */
async function copyOfSource(label: string): Promise<string> {
  const db = await createTestDatabase(`kr_${label}`);
  await adminQuery(`DROP DATABASE "${db.name}"`);
  await adminQuery(`CREATE DATABASE "${db.name}" TEMPLATE "${templateName}"`);
  dropLater.push(db.drop);
  return db.url;
}

/** After the resumed run: everything equals the clean run. */
async function expectLikeCleanRun(url: string, dir: string, runId: string): Promise<void> {
  expect(await dump(url, runId)).toEqual(clean.dump);
  const r = await rejects(url, runId);
  expect(r.repeated, 'no (source_table, source_key) rejected twice').toBe(0);
  expect(r).toEqual(clean.rejects);
  const batches = await checkpointBatches(url, runId);
  for (const [key, list] of Object.entries(batches)) expect(list, `checkpoint batches of ${key}`).toEqual(list.map((_, i) => i + 1));
  expect(hashingStepsTogether(clean.batches)['passwords/user']?.length, 'the clean run hashed legacy passwords').toBeGreaterThan(0);
  expect(hashingStepsTogether(batches)).toEqual(hashingStepsTogether(clean.batches));
  expect(backupOf(dir, runId)).toEqual(clean.backup);
}

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-kill-'));
  const tpl = await createTestDatabase('kr_tpl');
  templateName = tpl.name;
  dropLater.push(tpl.drop);
  await withTestClient(tpl.url, async (c) => {
    await seedLegacyShapeA(c, { scale: SCALE });
  });
  // The clean reference run, on its own copy.
  const url = await copyOfSource('clean');
  const dir = path.join(work, 'clean-s3');
  const r = await runCli(runArgs(url, dir, 'kr-clean'));
  expect(r.code, r.out).toBe(0);
  if (process.env.KILL_RESUME_DEBUG) console.log(r.out);
  clean = { dump: await dump(url, 'kr-clean'), rejects: await rejects(url, 'kr-clean'), batches: await checkpointBatches(url, 'kr-clean'), backup: backupOf(dir, 'kr-clean') };
  expect(clean.rejects.n).toBeGreaterThan(0);
  expect(clean.rejects.repeated).toBe(0);
  expect(clean.dump.scan!.startsWith('0:')).toBe(false);
  expect(clean.batches['scan/scan']!.length, 'the scan step takes several batches').toBeGreaterThan(3);
  expect(Object.keys(clean.backup.tables).sort()).toEqual([...SOURCE_TABLES].sort());
}, 240_000);

afterAll(async () => {
  for (const drop of dropLater.reverse()) await drop().catch(() => undefined);
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the local runner killed with SIGKILL, then resumed with the same --run-id (CLI, e2e)', () => {
  it('killed in the middle of a migration batch of the scan step: the rerun ends identical to a clean run', async () => {
    const url = await copyOfSource('batch');
    const dir = path.join(work, 'batch-s3');
    const runId = 'kr-batch';
    const first = spawnCli(runArgs(url, dir, runId));
    const moment = await killWhen(first, () =>
      withTestClient(url, async (c) => {
        if (!(await internalTables(c))) return null;
        const r = await c.query(
          `SELECT count(*) FILTER (WHERE batch_no > 0)::int AS batches, count(*) FILTER (WHERE batch_no = -1)::int AS complete
             FROM tracetrack._migration_checkpoint WHERE run_id = $1 AND step = 'scan'`,
          [runId],
        );
        const { batches, complete } = r.rows[0];
        if (batches < 1 || complete > 0) return null;
        if ((await busyMigrationConnections(c)) === 0) return null;
        return `scan: ${batches} batches committed, a transaction open`;
      }),
    );
    // The kill left the step half done.
    const before = await checkpointBatches(url, runId);
    expect(before['scan/scan']!.length, moment).toBeGreaterThan(0);
    expect(before['scan/scan']!.length).toBeLessThan(clean.batches['scan/scan']!.length);
    const r = await runCli(runArgs(url, dir, runId));
    expect(r.code, r.out).toBe(0);
    await expectLikeCleanRun(url, dir, runId);
  }, 180_000);

  it('killed in the middle of the backup (parts being uploaded): the rerun ends identical to a clean run, no part twice', async () => {
    const url = await copyOfSource('backup');
    const dir = path.join(work, 'backup-s3');
    const runId = 'kr-backup';
    const { root, moment } = await killMidBackup(url, dir, runId);
    expect(existsSync(path.join(root, 'manifest.json._S3rver_object')), moment).toBe(false);
    const r = await runCli(runArgs(url, dir, runId));
    expect(r.code, r.out).toBe(0);
    await expectLikeCleanRun(url, dir, runId);
    // The backup restores to the source, table by table.
    const restored = await runCli(['restore', '--target', url, '--schema', 'restored', '--backup-dir', dir, '--run-id', runId]);
    expect(restored.code, restored.out).toBe(0);
    await withTestClient(url, async (c) => {
      for (const t of SOURCE_TABLES) {
        const q = (a: string, b: string) => `SELECT count(*)::int AS n FROM (SELECT * FROM ${a}."${t}" EXCEPT ALL SELECT * FROM ${b}."${t}") d`;
        expect((await c.query(q('public', 'restored'))).rows[0].n, `public.${t} minus restored`).toBe(0);
        expect((await c.query(q('restored', 'public'))).rows[0].n, `restored.${t} minus public`).toBe(0);
      }
    });
  }, 180_000);

  // The local store (s3rver 3.7.1, lib/stores/filesystem.js putObject) writes an object in place, then its
  // metadata: a CLI killed inside that window leaves a truncated (often empty) record that GET serves as complete.
  // backupTable treats a record that does not parse as missing and writes it again. The test above hits this window
  // by chance; this one recreates the state the kill leaves deterministically.
  it('killed while the local S3 server was writing a table record: the rerun still ends identical to a clean run', async () => {
    const url = await copyOfSource('torn');
    const dir = path.join(work, 'torn-s3');
    const runId = 'kr-torn';
    const { root, moment, finished } = await killMidBackup(url, dir, runId, 1);
    expect(finished.length, moment).toBeGreaterThan(0);
    // What s3rver's putObject leaves when the process dies right after opening the object file: an empty object
    // file, no metadata, no md5.
    const base = path.join(root, finished[0]!, 'table.json');
    writeFileSync(`${base}._S3rver_object`, '');
    rmSync(`${base}._S3rver_metadata.json`, { force: true });
    rmSync(`${base}._S3rver_object.md5`, { force: true });
    const r = await runCli(runArgs(url, dir, runId));
    expect(r.code, r.out).toBe(0);
    await expectLikeCleanRun(url, dir, runId);
  }, 180_000);

  it('killed in the middle of verification: the rerun ends identical to a clean run', async () => {
    const url = await copyOfSource('verify');
    const dir = path.join(work, 'verify-s3');
    const runId = 'kr-verify';
    const first = spawnCli(runArgs(url, dir, runId));
    const moment = await killWhen(first, () =>
      withTestClient(url, async (c) => {
        if (!(await internalTables(c))) return null;
        const r = await c.query(`SELECT steps ? 'migrate:finalize' AS migrated, steps ? 'verify' AS verified FROM tracetrack._migration_run WHERE run_id = $1`, [runId]);
        if (!r.rows[0]?.migrated || r.rows[0].verified) return null;
        if ((await busyMigrationConnections(c)) === 0) return null;
        return 'all steps migrated, verification running';
      }),
    );
    await withTestClient(url, async (c) => {
      const r = await c.query(`SELECT status, steps ? 'verify' AS verified, verification FROM tracetrack._migration_run WHERE run_id = $1`, [runId]);
      expect({ verified: r.rows[0].verified, verification: r.rows[0].verification }, moment).toEqual({ verified: false, verification: null });
    });
    const r = await runCli(runArgs(url, dir, runId));
    expect(r.code, r.out).toBe(0);
    await expectLikeCleanRun(url, dir, runId);
  }, 180_000);
});
