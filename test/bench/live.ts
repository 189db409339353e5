/**
 * npm run bench -- --live [--scale S[,S…]] [--rate TPS] [--seconds N]
 *
 * Live migration figures on a fresh embedded PostgreSQL (or with --postgres N Debian's PostgreSQL N) per scale (shape A, lib/runner/demo-seed.ts):
 *  1. capture overhead: the same application transaction (a scan insert, a bag reweigh, a reparent, a new
 *     bag, a scan delete: primary-key lookups only, pgbench-like) timed without capture, with the
 *     statement-level capture this tool installs, and with a row-level trigger capture for comparison;
 *  2. the write freeze: a live run (Preflight with capture → migrate → verify → catch-up) with a writer at
 *     --rate transactions/s throughout, then the cutover; the freeze as the cutover records it, and the
 *     longest the writer waited for one transaction meanwhile (what the application sees).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import { createS3Client } from '../../lambdas/io/s3';
import { installCapture, removeCapture } from '../../lambdas/engine/capture';
import { analyseTask, catchUpTask, createSchemaTask, cutoverTask, migrateStepTask, preflightTask, verifyTask, type TaskDeps } from '../../lambdas/engine/tasks';
import { parseDatabaseUrl } from '../../lambdas/io/pg';
import { hashPasswords } from '../../lambdas/io/password';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { benchPostgresVersion, startBenchCluster } from './cluster';
import { startLocalS3 } from '../../lib/runner/local-s3';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1]!;
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : fallback;
}

const log = (s: string) => process.stdout.write(`[bench:live ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const TABLES = ['user', 'bag', 'scan', 'bill', 'bill_bag'];
const GROUP = 21;

/** One application transaction of primary-key writes; `next` hands out new ids. */
async function appTransaction(c: pg.ClientBase, i: number, bags: number, next: () => number): Promise<void> {
  const child = (k: number) => {
    const b = 2 + ((i * 7919 + k * 104729) % (bags - 2));
    return (b - 1) % GROUP === 0 ? b + 1 : b;
  };
  const parent = 1 + GROUP * ((i * 13) % Math.floor(bags / GROUP));
  const newBag = next();
  await c.query('BEGIN');
  await c.query(`INSERT INTO scan (id, created_at, parent_id, child_id, scanner_id) VALUES ($1, now(), $2, $3, 2)`, [next(), parent, child(1)]);
  await c.query(`UPDATE bag SET weight = weight + 0.25 WHERE id = $1`, [child(2)]);
  await c.query(`UPDATE bag SET parent_bag_id = $1 WHERE id = $2`, [parent, child(3)]);
  await c.query(`INSERT INTO bag (id, qr_code, parent_bag_id, owner_id, area, weight, status, created_at) VALUES ($1, $2, $3, 2, 'north', 1, 'pending', now())`, [newBag, `LIVE${newBag}`, parent]);
  await c.query(`DELETE FROM scan WHERE id = $1`, [1 + ((i * 31) % 1000)]);
  await c.query('COMMIT');
}

/** One bulk statement of the application: 100 bags reweighed at once. */
async function bulkTransaction(c: pg.ClientBase, i: number, bags: number): Promise<void> {
  const lo = 2 + ((i * 997) % (bags - 200));
  await c.query(`UPDATE bag SET weight = weight + 0.25 WHERE id BETWEEN $1 AND $2`, [lo, lo + 99]);
}

async function timeBulk(c: pg.Client, n: number, bags: number, offset: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await bulkTransaction(c, offset + i, bags);
  return Number(process.hrtime.bigint() - t0) / 1e6 / n;
}

async function timeTransactions(c: pg.Client, n: number, bags: number, next: () => number, offset: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await appTransaction(c, offset + i, bags, next);
  return Number(process.hrtime.bigint() - t0) / 1e6 / n;
}

const ROW_TRIGGER = `
  CREATE SCHEMA rowcap; CREATE TABLE rowcap.log (pos bigserial PRIMARY KEY, tbl text, op "char", key bigint, txid bigint DEFAULT txid_current(), at timestamptz DEFAULT now());
  CREATE FUNCTION rowcap.f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
    IF TG_OP IN ('UPDATE','DELETE') THEN INSERT INTO rowcap.log (tbl, op, key) VALUES (TG_TABLE_NAME, left(TG_OP, 1), OLD.id); END IF;
    IF TG_OP IN ('INSERT','UPDATE') THEN INSERT INTO rowcap.log (tbl, op, key) VALUES (TG_TABLE_NAME, left(TG_OP, 1), NEW.id); END IF;
    RETURN NULL; END $$;`;

async function benchScale(scale: number, rate: number, seconds: number) {
  const cluster = await startBenchCluster(benchPostgresVersion());
  const s3dir = mkdtempSync(path.join(tmpdir(), 'bench-live-s3-'));
  const s3server = await startLocalS3({ directory: s3dir, buckets: ['bench'] });
  const s3 = createS3Client({ endpoint: s3server.endpoint, localServer: true });
  try {
    await cluster.createDatabase('live');
    const url = cluster.url('live');
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    const seed = await seedLegacyShapeA(c, { scale });
    const bags = seed.rows.bag;
    let id = 50_000_000;
    const next = () => ++id;
    log(`scale ${scale}: seeded ${bags} bags, ${seed.rows.scan} scans in ${(seed.elapsedMs / 1000).toFixed(1)} s`);

    // 1. Overhead per application transaction (5 statements), warm.
    // Rounds alternate (none, statement-level, row-level, …) and the median of each is taken: one pass each
    // measured mostly warm-up and autovacuum.
    const N = 300;
    const ROUNDS = 5;
    await c.query(ROW_TRIGGER);
    const samples = { none: [] as number[], statement: [] as number[], row: [] as number[] };
    const bulk = { none: [] as number[], statement: [] as number[], row: [] as number[] };
    await timeTransactions(c, 200, bags, next, 0);
    for (let r = 0; r < ROUNDS; r++) {
      samples.none.push(await timeTransactions(c, N, bags, next, 1000 + r * 3 * N));
      bulk.none.push(await timeBulk(c, 50, bags, r * 150));
      await installCapture(c, { runId: 'bench-overhead', sourceSchema: 'public', targetSchema: 'tracetrack', tables: TABLES });
      samples.statement.push(await timeTransactions(c, N, bags, next, 1000 + (r * 3 + 1) * N));
      bulk.statement.push(await timeBulk(c, 50, bags, r * 150 + 50));
      await removeCapture(c, 'bench-overhead');
      for (const t of TABLES) await c.query(`CREATE TRIGGER rowcap AFTER INSERT OR UPDATE OR DELETE ON "${t}" FOR EACH ROW EXECUTE FUNCTION rowcap.f()`);
      samples.row.push(await timeTransactions(c, N, bags, next, 1000 + (r * 3 + 2) * N));
      bulk.row.push(await timeBulk(c, 50, bags, r * 150 + 100));
      for (const t of TABLES) await c.query(`DROP TRIGGER rowcap ON "${t}"`);
    }
    await c.query('DROP SCHEMA rowcap CASCADE');
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const [none, statement, row] = [median(samples.none), median(samples.statement), median(samples.row)];
    const [bNone, bStatement, bRow] = [median(bulk.none), median(bulk.statement), median(bulk.row)];
    log(`overhead per bulk statement (100 rows updated): none ${bNone.toFixed(3)} ms, statement-level ${bStatement.toFixed(3)} ms (+${((100 * (bStatement - bNone)) / bNone).toFixed(1)}%), row-level ${bRow.toFixed(3)} ms (+${((100 * (bRow - bNone)) / bNone).toFixed(1)}%)`);
    const overhead = { withoutCaptureMs: none, statementCaptureMs: statement, rowCaptureMs: row, statementOverheadPct: (100 * (statement - none)) / none, rowOverheadPct: (100 * (row - none)) / none, bulk100: { none: bNone, statement: bStatement, row: bRow } };
    log(`overhead per app transaction (5 writes): none ${none.toFixed(3)} ms, statement-level capture ${statement.toFixed(3)} ms (+${overhead.statementOverheadPct.toFixed(1)}%), row-level ${row.toFixed(3)} ms (+${overhead.rowOverheadPct.toFixed(1)}%)`);

    // 2. A live run with the writer at `rate` tx/s throughout, then the cutover.
    const writer = new pg.Client({ connectionString: url });
    await writer.connect();
    let running = true;
    let written = 0;
    let maxWaitMs = 0;
    const cutoverWindow = { active: false, from: 0, to: 0 };
    let maxWaitInCutover = 0;
    let failedAfterSwap: string | null = null;
    const writerLoop = (async () => {
      const period = 1000 / rate;
      let due = Date.now();
      while (running) {
        const t0 = Date.now();
        try {
          await appTransaction(writer, 10_000 + written, bags, next);
        } catch (err) {
          // After the swap the application's schema holds the new tables: the legacy-shaped writes of this
          // writer (blocked by the freeze, then resolved again by name) fail, as the old application would.
          await writer.query('ROLLBACK').catch(() => undefined);
          if (!cutoverWindow.active) throw err;
          maxWaitInCutover = Math.max(maxWaitInCutover, Date.now() - t0);
          failedAfterSwap = String((err as Error).message);
          break;
        }
        const ms = Date.now() - t0;
        maxWaitMs = Math.max(maxWaitMs, ms);
        if (cutoverWindow.active && (cutoverWindow.to === 0 || t0 <= cutoverWindow.to)) maxWaitInCutover = Math.max(maxWaitInCutover, ms);
        written++;
        due += period;
        const sleep = due - Date.now();
        if (sleep > 0) await new Promise((r) => setTimeout(r, sleep));
      }
    })();
    const deps: TaskDeps = {
      source: async () => parseDatabaseUrl(url), target: async () => parseDatabaseUrl(url),
      s3, bucket: 'bench', prefix: '', timeBudgetMs: 600_000, hashPasswords: (p) => hashPasswords(p),
    };
    const t0 = Date.now();
    const { run } = await preflightTask({ input: { runId: `live-${String(scale).replace('.', '_')}`, live: true } }, deps);
    const analysis = await analyseTask({ run }, deps);
    await createSchemaTask({ run }, deps);
    for (const step of analysis.steps) {
      let cursor: string | null = null;
      for (;;) {
        const r = await migrateStepTask({ run, step, cursor }, deps);
        cursor = r.cursor;
        if (r.done) break;
      }
    }
    const migrateS = (Date.now() - t0) / 1000;
    await verifyTask({ run }, deps);
    const verifyS = (Date.now() - t0) / 1000 - migrateS;
    const catchUps: { applied: number; pending: number; rate: number }[] = [];
    for (;;) {
      const r = await catchUpTask({ run }, deps);
      catchUps.push({ applied: r.applied, pending: r.pending, rate: Math.round(r.rate) });
      if (r.caughtUp) break;
    }
    // Let the writer run a few seconds caught up, as an operator would wait before cutting over.
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const pendingAtCutover = (await c.query(`SELECT count(*)::int AS n FROM tracetrack_capture.change_log`)).rows[0].n as number;
    cutoverWindow.from = Date.now();
    cutoverWindow.active = true;
    const cut = await cutoverTask({ run }, deps);
    cutoverWindow.to = Date.now();
    await new Promise((r) => setTimeout(r, 1500));
    running = false;
    await writerLoop;
    await writer.end();
    await c.end();
    const wallS = (Date.now() - t0) / 1000;
    const result = {
      scale, bags, scans: seed.rows.scan, rate, writerTransactions: written, migrateS, verifyS, wallS, catchUps,
      pendingAtCutover, writeFreezeMs: cut.writeFreezeMs, freezePhases: cut.freezePhases, writerAfterSwap: failedAfterSwap, cutoverMs: cutoverWindow.to - cutoverWindow.from, maxWriterWaitInCutoverMs: maxWaitInCutover, maxWriterWaitMs: maxWaitMs, overhead,
    };
    log(`scale ${scale}: ${written} writer transactions at ${rate}/s during ${wallS.toFixed(1)} s; ${pendingAtCutover} changes pending at cutover; write freeze ${cut.writeFreezeMs} ms ${JSON.stringify(cut.freezePhases)} (cutover call ${result.cutoverMs} ms; the writer's longest transaction meanwhile ${maxWaitInCutover} ms)`);
    return result;
  } finally {
    s3.destroy();
    await s3server.stop();
    rmSync(s3dir, { recursive: true, force: true });
    await cluster.stop();
  }
}

export async function mainLive(): Promise<void> {
  const scales = arg('scale', '0.05,0.25').split(',').map(Number);
  const rate = Number(arg('rate', '15'));
  const seconds = Number(arg('seconds', '5'));
  const results = [];
  for (const s of scales) results.push(await benchScale(s, rate, seconds));
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}
