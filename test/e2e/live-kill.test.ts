import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { renderFailures } from '../../lambdas/core/verify';
import { rollbackRun } from '../../lambdas/engine/cutover';
import { verifyRun } from '../../lambdas/engine/verify';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { runEngine } from '../support/engine';
import { adminQuery, createTestDatabase, urlForDatabase, withTestClient } from '../support/pg';
import { targetDump } from '../support/tasks';

/**
 * A live run on the CLI (`run --live`, `catch-up`, `cutover`), the CLI killed with SIGKILL in the middle of a
 * catch-up and in the middle of a cutover (under its write lock), each resumed by running the command again:
 * the new tables must equal a clean run on a copy of the final legacy state.
 */

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'cli.ts');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function env(): NodeJS.ProcessEnv {
  const e = { ...process.env };
  delete e.DATABASE_URL;
  delete e.AWS_DATABASE_URL;
  return e;
}

function runCli(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: env(), maxBuffer: 32 * 1024 * 1024, timeout: 150_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, out: stdout + stderr });
    });
  });
}

function spawnCli(args: string[]): { child: ChildProcess; exited: Promise<unknown>; out: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, env: env(), detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += String(d)));
  child.stderr!.on('data', (d) => (out += String(d)));
  return { child, exited: new Promise((r) => child.on('exit', r)), out: () => out };
}

/** Polls `ready` until true, then SIGKILLs the CLI's process group; fails if the CLI ends first. */
async function killWhen(s: ReturnType<typeof spawnCli>, ready: () => Promise<boolean>): Promise<void> {
  let exited = false;
  void s.exited.then(() => (exited = true));
  const until = Date.now() + 120_000;
  while (!(await ready().catch(() => false))) {
    if (exited) throw new Error(`the CLI finished before the moment to kill it:\n${s.out()}`);
    if (Date.now() > until) throw new Error(`no moment to kill the CLI:\n${s.out()}`);
    await sleep(10);
  }
  process.kill(-s.child.pid!, 'SIGKILL');
  await s.exited;
}

/** A backlog: a reweigh of a third of the bags, sign-ups with plaintext passwords (hashed by catch-up: slow), deletes. */
async function backlog(url: string, round: number, client?: pg.Client): Promise<void> {
  const run = (fn: (c: pg.Client) => Promise<void>) => (client ? fn(client) : withTestClient(url, fn));
  await run(async (c) => {
    await c.query(`UPDATE bag SET weight = weight + 1 WHERE id % 3 = $1`, [round % 3]);
    await c.query(`INSERT INTO "user" (id, name, email, password, role, area, created_at)
                   SELECT m + g, 'live_' || $1 || '_' || g, 'live_' || $1 || '_' || g || '@x.example', 'pw-' || g, 'dispatcher', 'north', '2026-02-01'
                     FROM (SELECT max(id) AS m FROM "user") x, generate_series(1, 40) g`, [round]);
    await c.query(`DELETE FROM scan WHERE id % 97 = $1`, [round]);
    await c.query(`UPDATE bag SET parent_bag_id = 1 WHERE id IN (SELECT id FROM bag WHERE parent_bag_id IS NOT NULL ORDER BY id OFFSET $1 LIMIT 5)`, [round * 7]);
  });
}

describe('a live run on the CLI, killed during catch-up and during cutover', () => {
  it('resumes each by running the command again and ends equal to a clean run of the final legacy state', async () => {
    const db = await createTestDatabase('lkill');
    const dir = mkdtempSync(path.join(tmpdir(), 'live-kill-'));
    try {
      await withTestClient(db.url, (c) => seedLegacyShapeA(c, { scale: 0.005 }));
      const run = await runCli(['run', '--source', db.url, '--backup-dir', dir, '--run-id', 'lk-1', '--live', '--batch-size', '2000']);
      expect(run.out).toMatch(/Live: caught up/);
      expect(run.code, run.out).toBe(0);

      // Killed after its first chunk committed, before the last.
      await backlog(db.url, 1);
      const applied = async () =>
        withTestClient(db.url, async (c) => Number((await c.query(`SELECT COALESCE((steps -> 'catch-up' ->> 'applied')::int, 0) AS n FROM tracetrack._migration_run WHERE run_id = 'lk-1'`)).rows[0].n));
      const before = await applied();
      const catchUp = spawnCli(['catch-up', '--target', db.url, '--run-id', 'lk-1', '--chunk-size', '100']);
      await killWhen(catchUp, async () => (await applied()) > before);
      const pending = await withTestClient(db.url, async (c) => (await c.query(`SELECT count(*)::int AS n FROM tracetrack_capture.change_log`)).rows[0].n as number);
      expect(pending, 'killed mid catch-up').toBeGreaterThan(0);
      const again = await runCli(['catch-up', '--target', db.url, '--run-id', 'lk-1']);
      expect(again.code, again.out).toBe(0);
      expect(again.out).toMatch(/0 pending/);

      // Killed under the cutover's write lock, while it catches up the rest: nothing is cut over. The
      // application's transaction is open when the cutover starts (its catch-up before the lock cannot see
      // it), so the cutover waits for it at the lock and then catches its changes up under the lock.
      const app = new pg.Client({ connectionString: db.url });
      await app.connect();
      await app.query('BEGIN');
      await backlog(db.url, 2, app);
      const cut = spawnCli(['cutover', '--target', db.url, '--run-id', 'lk-1']);
      const cutoverLock = (granted: boolean) => withTestClient(db.url, async (c) => (await c.query(
        `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.application_name = 'tracetrack-migrate:cutover' AND l.mode = 'ShareLock' AND l.granted = $1`, [granted],
      )).rowCount! > 0);
      for (let i = 0; i < 3000 && !(await cutoverLock(false)); i++) await sleep(20);
      await app.query('COMMIT');
      await app.end();
      await killWhen(cut, () => cutoverLock(true));
      await withTestClient(db.url, async (c) => {
        for (let i = 0; i < 500 && (await c.query(`SELECT 1 FROM pg_stat_activity WHERE application_name = 'tracetrack-migrate:cutover'`)).rowCount; i++) await sleep(20);
        expect((await c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'legacy_lk-1'`)).rowCount, 'nothing cut over').toBe(0);
        expect((await c.query(`SELECT count(*)::int AS n FROM tracetrack_capture.change_log`)).rows[0].n, 'the changes are still logged').toBeGreaterThan(0);
      });
      const cutAgain = await runCli(['cutover', '--target', db.url, '--run-id', 'lk-1']);
      expect(cutAgain.code, cutAgain.out).toBe(0);
      expect(cutAgain.out).toMatch(/blocked for \d+ ms \(\d+ last changes caught up under the lock; change capture removed\)/);

      const runTime = await withTestClient(db.url, async (c) =>
        (await c.query(`SELECT to_char(run_time, 'YYYY-MM-DD"T"HH24:MI:SS.US') AS t FROM tracetrack._migration_run WHERE run_id = 'lk-1'`)).rows[0].t as string);
      const live = await targetDump(db.url, 'public', runTime);
      const copy = `${db.name}_copy`;
      await adminQuery(`CREATE DATABASE "${copy}" TEMPLATE "${db.name}"`);
      try {
        await withTestClient(urlForDatabase(copy), async (c) => {
          await rollbackRun({ client: c, targetSchema: 'tracetrack', runId: 'lk-1' });
          await c.query('DROP SCHEMA tracetrack CASCADE');
          const r = await runEngine(c, { runId: 'clean', runTime, batchSize: 2000 });
          const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
          expect(v.passed, renderFailures(v.checks)).toBe(true);
        });
        const clean = await targetDump(urlForDatabase(copy), 'tracetrack', runTime);
        expect({ ...live, audit_log: null }).toEqual({ ...clean, audit_log: null });
      } finally {
        await adminQuery(`DROP DATABASE IF EXISTS "${copy}" WITH (FORCE)`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await db.drop();
    }
  });
});
