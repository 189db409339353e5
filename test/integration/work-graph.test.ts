import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Plan } from '../../lambdas/core/planner';
import { TARGET_TABLES } from '../../lambdas/core/rules';
import { PENDING_PASSWORD_HASH } from '../../lambdas/core/transforms';
import { hashingCompanions, planFinalizeJobs, planWaves } from '../../lambdas/core/work-graph';
import { analyseSource, assertPlan } from '../../lambdas/engine/analyse';
import { deferredUniqueKeyTables } from '../../lambdas/core/sql/mapping';
import { renderIndexes, renderUniqueKeys } from '../../lambdas/core/sql/target-ddl';
import { createTargetTables, runMigrateStep, type EngineRun, type StepOptions } from '../../lambdas/engine/migrate';
import { ensureInternalTables, recordRun, updateRun } from '../../lambdas/engine/runs';
import { verifyRun } from '../../lambdas/engine/verify';
import { checkPasswordWerkzeug, hashPasswords } from '../../lambdas/io/password';
import { runEngine, loadFixture } from '../support/engine';
import { createTestDatabase } from '../support/pg';

/**
 * The migration as a graph of work items (core/work-graph.ts), on a real PostgreSQL: run wave after wave with
 * four connections, every invocation on a time budget of nothing (one batch each, so items interleave batch by
 * batch), and every item invoked twice at once (a retry or redrive beside a running invocation), it leaves the
 * target of the one-at-a-time run: each key range done exactly once.
 */

const SCHEMA = 'tracetrack';
const q = (t: string) => `"${SCHEMA}"."${t}"`;

async function connected(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

/** Every target row as JSON in id order; a rehashed password (random salt) becomes a marker after checking it. */
async function dumpTargets(c: pg.ClientBase): Promise<Record<string, string[]>> {
  const plain = new Map((await c.query(`SELECT id::int AS id, password FROM public."user"`)).rows.map((r) => [r.id as number, r.password as string | null]));
  const out: Record<string, string[]> = {};
  for (const table of TARGET_TABLES) {
    const rows = (await c.query(`SELECT to_jsonb(t) AS row FROM ${q(table)} t ORDER BY id`)).rows.map((r) => r.row);
    out[table] = [];
    for (const row of rows) {
      if (table === 'user' && row.password_hash !== plain.get(row.id) && row.password_hash !== '') {
        expect(row.password_hash).toMatch(/^scrypt:32768:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}$/);
        expect(await checkPasswordWerkzeug(row.password_hash, plain.get(row.id)!)).toBe(true);
        row.password_hash = '<rehashed>';
      }
      out[table].push(JSON.stringify(row));
    }
  }
  const rej = await c.query(`SELECT target_table, source_table, source_key, reason FROM ${q('_migration_reject')} ORDER BY 1, 2, 3, 4`);
  out._migration_reject = rej.rows.map((r) => JSON.stringify(r));
  return out;
}

/** The unique indexes of the target tables (constraints included), with their definitions, and the unique constraints. */
async function uniqueKeys(c: pg.ClientBase): Promise<string[]> {
  const idx = await c.query(
    `SELECT pg_get_indexdef(x.indexrelid) AS def FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid
      WHERE x.indisunique AND t.relnamespace = $1::regnamespace AND t.relname = ANY($2) ORDER BY 1`,
    [SCHEMA, TARGET_TABLES],
  );
  const con = await c.query(`SELECT conrelid::regclass::text || ' ' || conname AS def FROM pg_constraint WHERE contype IN ('u', 'p') AND connamespace = $1::regnamespace ORDER BY 1`, [SCHEMA]);
  return [...idx.rows.map((r) => r.def as string), ...con.rows.map((r) => r.def as string)];
}

/** The decision of a duplicate-checked table's step: loaded with its unique keys (true) or without them (false). */
async function uniqueKeysAtLoad(c: pg.ClientBase, runId: string, table: string): Promise<unknown> {
  const r = await c.query(`SELECT steps -> $2::text -> 'uniqueKeysAtLoad' AS v FROM ${q('_migration_run')} WHERE run_id = $1`, [runId, `migrate:${table}`]);
  return r.rows[0]?.v ?? null;
}

/** The workflow's shape in-process: waves in order, up to `concurrency` items at once, each item twice at once, on zero budgets. */
async function runGraph(url: string, concurrency: number): Promise<{ plan: Plan; run: EngineRun; extraConnections: number }> {
  const c = await connected(url);
  let extraConnections = 0;
  try {
    const base: EngineRun = { runId: 'graph', sourceSchema: 'public', targetSchema: SCHEMA, runTime: '2026-01-01T00:00:00', batchSize: 7 };
    const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: SCHEMA });
    assertPlan(plan);
    await ensureInternalTables(c, SCHEMA);
    const rec = await recordRun(c, SCHEMA, base);
    await updateRun(c, SCHEMA, base.runId, { plan });
    // As CreateSchema does: the tables whose batches cannot collide on a unique key get their keys in finalize.
    await createTargetTables(c, SCHEMA, deferredUniqueKeyTables(plan, false));
    const run = { ...base, runTime: rec.runTime };
    const openClient = async () => {
      extraConnections++;
      const extra = await connected(url);
      return { client: extra, close: () => extra.end() };
    };
    const waves = planWaves(plan, { batchSize: base.batchSize, concurrency });
    const invokeUntilDone = async (step: string) => {
      const { client, close } = await openClient();
      try {
        const o: StepOptions = { client, run, plan, deadline: 0, hashPasswords: (p) => hashPasswords(p), concurrency, openClient, hashingBeside: hashingCompanions(waves, step) };
        while (!(await runMigrateStep(o, step)).done);
      } finally {
        await close();
      }
    };
    for (const wave of waves) {
      const queue = [...wave];
      await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
        for (let step = queue.shift(); step; step = queue.shift()) await Promise.all([invokeUntilDone(step), invokeUntilDone(step)]);
      }));
    }
    return { plan, run, extraConnections };
  } finally {
    await c.end();
  }
}

/**
 * Shape A (plus `extra` SQL) in two databases: migrated one step at a time (runEngine) and as the parallel graph
 * (runGraph, concurrency 4); `fn` gets a client on each and the graph's plan and run.
 */
async function sequentialAndParallel(names: [string, string], extra: string | null, fn: (o: { s: pg.Client; p: pg.Client; plan: Plan; run: EngineRun }) => Promise<void>): Promise<void> {
  const sequential = await createTestDatabase(names[0]);
  const parallel = await createTestDatabase(names[1]);
  try {
    for (const db of [sequential, parallel]) {
      await loadFixture(db.url, 'a');
      if (extra) {
        const c = await connected(db.url);
        await c.query(extra).finally(() => c.end());
      }
    }
    const s = await connected(sequential.url);
    const p = await connected(parallel.url);
    try {
      await runEngine(s, { runId: 'graph', batchSize: 7 });
      const { plan, run } = await runGraph(parallel.url, 4);
      await fn({ s, p, plan, run });
    } finally {
      await s.end();
      await p.end();
    }
  } finally {
    await sequential.drop();
    await parallel.drop();
  }
}

describe('the work graph run in parallel', () => {
  it('gives the target of the one-at-a-time run (shape A: concurrency 4, interleaved batches, every item twice at once)', async () => {
    await sequentialAndParallel(['wgs', 'wgp'], null, async ({ s, p, plan, run }) => {
      expect(plan.steps).toEqual(expect.arrayContaining(['passwords:1/3', 'passwords:2/3', 'passwords:3/3']));
      expect(await dumpTargets(p)).toEqual(await dumpTargets(s));
      // The unique keys built after the load (bag, link, bill_bag) are those of tables created with them.
      expect(deferredUniqueKeyTables(plan, false)).toEqual(['bag', 'link', 'bill_bag']);
      // bill_bag has no two rows with the same bill and bag: its batches were plain inserts, its key built in finalize.
      expect(await uniqueKeysAtLoad(p, run.runId, 'bill_bag')).toBe(false);
      expect(await uniqueKeys(p)).toEqual(await uniqueKeys(s));
      expect((await uniqueKeys(p)).filter((d) => /idx_bag_qr_id_unique_ci|uq_parent_child|link_child_bag_id_unique/.test(d))).toHaveLength(5);
      // bag's indexes (an indexes:bag item beside scan) one statement per invocation on the zero budget, each checkpointed.
      const indexBatches = await p.query(`SELECT count(*)::int AS n FROM ${q('_migration_checkpoint')} WHERE run_id = 'graph' AND step = 'indexes:bag' AND source_table = 'indexes'`);
      expect(indexBatches.rows[0].n).toBe(renderUniqueKeys(SCHEMA, 'bag').length + renderIndexes(SCHEMA, 'bag').length);
      // Each key range once: no batch of any step claimed twice, and the hashing step wrote each pending row once.
      const twice = await p.query(`SELECT step, source_table, key_lo FROM ${q('_migration_checkpoint')} WHERE run_id = 'graph' AND batch_no > 0 GROUP BY 1, 2, 3 HAVING count(*) > 1`);
      expect(twice.rows).toEqual([]);
      const hashed = await p.query(`SELECT sum(migrated)::int AS n FROM ${q('_migration_checkpoint')} WHERE run_id = 'graph' AND step LIKE 'passwords:%'`);
      const plaintext = await p.query(`SELECT count(*)::int AS n FROM ${q('user')} t JOIN public."user" s ON s.id = t.id WHERE t.password_hash <> s.password AND t.password_hash <> ''`);
      expect(hashed.rows[0].n).toBe(plaintext.rows[0].n);
      expect(plaintext.rows[0].n).toBeGreaterThan(0);
      // The hashing steps took the pending passwords in key order, each after the one before (beside their waves).
      const parts = await p.query(`SELECT step, min(key_hi)::int AS lo, max(key_hi)::int AS hi FROM ${q('_migration_checkpoint')} WHERE run_id = 'graph' AND step LIKE 'passwords:%' AND batch_no > 0 GROUP BY 1 ORDER BY 1`);
      for (let i = 1; i < parts.rows.length; i++) expect(parts.rows[i].lo).toBeGreaterThan(parts.rows[i - 1].hi);
      expect((await p.query(`SELECT count(*)::int AS n FROM ${q('user')} WHERE password_hash = $1`, [PENDING_PASSWORD_HASH])).rows[0].n).toBe(0);
      // Foreign keys added NOT VALID were all validated.
      const fks = await p.query(`SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' AND connamespace = $1::regnamespace ORDER BY 1`, [SCHEMA]);
      expect(fks.rows.length).toBeGreaterThan(0);
      expect(fks.rows.filter((r) => !r.convalidated)).toEqual([]);
      const verdict = await verifyRun({ client: p, run, plan });
      expect(verdict.checks.filter((x) => !x.passed)).toEqual([]);
    });
  }, 120_000);

  it('a hashing step hashes only while the steps beside it run, the next takes the passwords still pending, the last all that is left', async () => {
    const db = await createTestDatabase('wgh');
    const c = await connected(db.url);
    try {
      await loadFixture(db.url, 'a');
      // 40 more users with legacy plaintext passwords: five batches of PASSWORD_BATCH.
      await c.query(`INSERT INTO public."user" (id, name, email, password, role) SELECT g, 'plain' || g, 'plain' || g || '@tracetrack.example', 'secret-' || g, 'user' FROM generate_series(101, 140) g`);
      const base: EngineRun = { runId: 'hash', sourceSchema: 'public', targetSchema: SCHEMA, runTime: '2026-01-01T00:00:00', batchSize: 7 };
      const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: SCHEMA });
      await ensureInternalTables(c, SCHEMA);
      const rec = await recordRun(c, SCHEMA, base);
      await updateRun(c, SCHEMA, base.runId, { plan });
      await createTargetTables(c, SCHEMA, deferredUniqueKeyTables(plan, false));
      const run = { ...base, runTime: rec.runTime };
      const o = (beside: string[] | null): StepOptions => ({ client: c, run, plan, deadline: 0, hashPasswords: (x) => hashPasswords(x), hashingBeside: beside });
      for (const step of ['prepare', 'user']) while (!(await runMigrateStep(o(null), step)).done);
      const pending = async () => Number((await c.query(`SELECT count(*)::int AS n FROM ${q('user')} WHERE password_hash = $1`, [PENDING_PASSWORD_HASH])).rows[0].n);
      const all = await pending();
      expect(all).toBeGreaterThanOrEqual(42);
      // Beside bag (not done): one batch per invocation (zero budget), twice.
      const first = [await runMigrateStep(o(['bag']), 'passwords:1/3'), await runMigrateStep(o(['bag']), 'passwords:1/3')];
      expect(first.map((r) => [r.done, r.migrated])).toEqual([[false, 8], [false, 8]]);
      // bag done: the next invocation stops at once, the step done with 16 hashed, the rest still pending.
      while (!(await runMigrateStep(o(null), 'bag')).done);
      expect(await runMigrateStep(o(['bag']), 'passwords:1/3')).toMatchObject({ done: true, migrated: 0 });
      expect(await pending()).toBe(all - 16);
      // A step whose companions are done before it starts hashes nothing; the last hashes all that is left.
      expect(await runMigrateStep(o(['bag']), 'passwords:2/3')).toMatchObject({ done: true, migrated: 0 });
      let hashed = 0;
      for (let r = await runMigrateStep(o(null), 'passwords:3/3'); ; r = await runMigrateStep(o(null), 'passwords:3/3')) {
        hashed += r.migrated;
        if (r.done) break;
      }
      expect(hashed).toBe(all - 16);
      expect(await pending()).toBe(0);
      // Each once: the steps' batches in key order, one after the other; every hash logs in with its legacy password.
      const byStep = await c.query(`SELECT step, sum(migrated)::int AS n, min(key_hi)::int AS lo, max(key_hi)::int AS hi FROM ${q('_migration_checkpoint')} WHERE run_id = 'hash' AND step LIKE 'passwords:%' AND batch_no > 0 GROUP BY 1 ORDER BY 1`);
      expect(byStep.rows.map((r) => [r.step, r.n])).toEqual([['passwords:1/3', 16], ['passwords:3/3', all - 16]]);
      expect(byStep.rows[1].lo).toBeGreaterThan(byStep.rows[0].hi);
      const users = await c.query(`SELECT t.password_hash AS hash, s.password AS plain FROM ${q('user')} t JOIN public."user" s ON s.id = t.id WHERE s.id IN (3, 101, 125, 140) ORDER BY s.id`);
      for (const u of users.rows) expect(await checkPasswordWerkzeug(u.hash, u.plain)).toBe(true);
    } finally {
      await c.end();
      await db.drop();
    }
  }, 120_000);

  it('scan cut into key-range parts (scan:1/3 … 3/3) beside each other: the target, rejects and counts of the one-at-a-time run', async () => {
    // 14 + 127 scans at batch size 7: three parts of at least PART_BATCHES batches; ids with a gap (40-59 missing),
    // every 10th of a bag that does not exist (rejected), every 7th without a scanner.
    const scans = `INSERT INTO public.scan (id, created_at, parent_id, child_id, scanner_id)
      SELECT g, '2024-03-01 08:00:00'::timestamp + g * interval '1 minute', CASE WHEN g % 10 = 0 THEN 9999 ELSE 1 END, NULL, CASE WHEN g % 7 = 0 THEN NULL ELSE 3 END
        FROM generate_series(20, 166) g WHERE g NOT BETWEEN 40 AND 59;
      ANALYZE public.scan`; // the plan's row estimates are the catalog's (a table never analysed has none, and no parts)
    await sequentialAndParallel(['wps', 'wpp'], scans, async ({ s, p, plan, run }) => {
      const waves = planWaves(plan, { batchSize: run.batchSize, concurrency: 4 });
      expect(waves.flat().filter((x) => x.startsWith('scan'))).toEqual(['scan:1/3', 'scan:2/3', 'scan:3/3']);
      expect(await dumpTargets(p)).toEqual(await dumpTargets(s));
      expect((await p.query(`SELECT count(*)::int AS n FROM ${q('scan')}`)).rows[0].n).toBeGreaterThan(100);
      // Cut where recorded (min 1, max 166: at 56 and 111), each part's batches inside its range, each range once.
      const split = await p.query(`SELECT steps -> 'migrate:scan' -> 'splitKeys' -> '3' -> 'scan' AS k FROM ${q('_migration_run')} WHERE run_id = $1`, [run.runId]);
      expect(split.rows[0].k).toEqual([56, 111]);
      const batches = await p.query(
        `SELECT step, bool_or(key_lo IS NULL) AS from_start, min(key_lo) AS lo, max(key_hi) AS hi
           FROM ${q('_migration_checkpoint')} WHERE run_id = $1 AND step LIKE 'scan:%' AND batch_no > 0 GROUP BY 1 ORDER BY 1`, [run.runId]);
      expect(batches.rows.map((r) => [r.step, r.from_start, r.step === 'scan:1/3' ? null : Number(r.lo), Number(r.hi)])).toEqual([
        ['scan:1/3', true, null, 56], ['scan:2/3', false, 56, 111], ['scan:3/3', false, 111, 166],
      ]);
      // The table's record sums its parts, as the one-at-a-time run's sums its batches.
      const record = async (c: pg.Client) => (await c.query(`SELECT steps -> 'migrate:scan' -> 'sources' AS x FROM ${q('_migration_run')} WHERE run_id = 'graph'`)).rows[0].x
        .map((x: Record<string, unknown>) => [x.source, x.migrated, x.rejected]);
      expect(await record(p)).toEqual(await record(s));
      // An invocation that died after its part's mark and before the table's: a redrive of any part marks the table,
      // with the same record, and loads nothing again.
      await p.query(`DELETE FROM ${q('_migration_checkpoint')} WHERE run_id = $1 AND step = 'scan' AND source_table = '*'`, [run.runId]);
      const o: StepOptions = { client: p, run, plan, deadline: 0, hashPasswords: (x) => hashPasswords(x) };
      const again = await runMigrateStep(o, 'scan:2/3');
      expect([again.done, again.migrated, again.batches]).toEqual([true, 0, 0]);
      expect((await p.query(`SELECT count(*)::int AS n FROM ${q('_migration_checkpoint')} WHERE run_id = $1 AND step = 'scan' AND source_table = '*'`, [run.runId])).rows[0].n).toBe(1);
      expect(await record(p)).toEqual(await record(s));
      const verdict = await verifyRun({ client: p, run, plan });
      expect(verdict.checks.filter((x) => !x.passed)).toEqual([]);
    });
  }, 120_000);

  it('bill_bag rows with the same bill and bag: the key is there from the first batch, the lowest key kept and the others rejected, as one at a time', async () => {
    // 13 repeats 9's pair in the same batch (keys 8-14 at batch size 7), 14 repeats 2's in a later batch.
    const duplicates = `INSERT INTO public.bill_bag (id, bill_id, bag_id, created_at) VALUES (13, 9, 9, '2024-02-01 10:00:00'), (14, 1, 2, '2024-02-01 10:01:00')`;
    await sequentialAndParallel(['wds', 'wdp'], duplicates, async ({ s, p, plan, run }) => {
      expect(await uniqueKeysAtLoad(p, run.runId, 'bill_bag')).toBe(true);
      expect(await dumpTargets(p)).toEqual(await dumpTargets(s));
      const kept = await p.query(`SELECT id FROM ${q('bill_bag')} WHERE id IN (2, 9, 13, 14) ORDER BY id`);
      expect(kept.rows.map((r) => r.id)).toEqual([2, 9]);
      const rejected = await p.query(`SELECT source_key, reason FROM ${q('_migration_reject')} WHERE source_table = 'bill_bag' AND source_key IN ('13', '14') ORDER BY 1`);
      expect(rejected.rows).toEqual([
        { source_key: '13', reason: 'duplicate bill/bag pair: 9/9 is already used by another row' },
        { source_key: '14', reason: 'duplicate bill/bag pair: 1/2 is already used by another row' },
      ]);
      const verdict = await verifyRun({ client: p, run, plan });
      expect(verdict.checks.filter((x) => !x.passed)).toEqual([]);
    });
  }, 120_000);

  /** Shape A migrated up to finalize on `db`, with the tables created as CreateSchema creates them. */
  async function migratedButFinalize(c: pg.ClientBase, url: string, runId: string, openedCount: { n: number }): Promise<StepOptions> {
    const base: EngineRun = { runId, sourceSchema: 'public', targetSchema: SCHEMA, runTime: '2026-01-01T00:00:00', batchSize: 1000 };
    const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: SCHEMA });
    await ensureInternalTables(c, SCHEMA);
    const rec = await recordRun(c, SCHEMA, base);
    await updateRun(c, SCHEMA, base.runId, { plan });
    await createTargetTables(c, SCHEMA, deferredUniqueKeyTables(plan, false));
    const o: StepOptions = {
      client: c, run: { ...base, runTime: rec.runTime }, plan, deadline: Date.now() + 600_000, hashPasswords: (p) => hashPasswords(p), concurrency: 3,
      openClient: async () => {
        openedCount.n++;
        const extra = await connected(url);
        return { client: extra, close: () => extra.end() };
      },
    };
    for (const step of plan.steps.filter((x) => x !== 'finalize')) while (!(await runMigrateStep(o, step)).done);
    return o;
  }

  it('finalize builds its indexes and validates its foreign keys on several connections at once', async () => {
    const db = await createTestDatabase('wgf');
    try {
      await loadFixture(db.url, 'a');
      const c = await connected(db.url);
      try {
        await c.query('ANALYZE public.scan, public.bag'); // row estimates: the largest table (scan) gets its index builds split
        const opened = { n: 0 };
        const o = await migratedButFinalize(c, db.url, 'fin', opened);
        expect(planFinalizeJobs(o.plan).filter((j) => j.kind === 'indexes').map((j) => [j.name, j.indexes])).toEqual([['scan:indexes-1/2', [0, 2]], ['scan:indexes-2/2', [1, 3]]]);
        expect((await runMigrateStep(o, 'finalize')).done).toBe(true);
        // Three connections at most: the step's own and two more.
        expect(opened.n).toBe(2);
        const jobs = await c.query(`SELECT source_table FROM ${q('_migration_checkpoint')} WHERE run_id = 'fin' AND step = 'finalize' AND source_table <> '*' ORDER BY 1`);
        expect(jobs.rows.map((r) => r.source_table)).toEqual(expect.arrayContaining(['validate:scan', 'scan', 'scan:indexes-1/2', 'scan:indexes-2/2']));
        // Every one of scan's indexes built (valid), whichever job built it.
        const indexes = await c.query(`SELECT i.indexrelid::regclass::text AS name, i.indisvalid AS valid FROM pg_index i WHERE i.indrelid = $1::regclass AND NOT i.indisprimary ORDER BY 1`, [`${SCHEMA}.scan`]);
        expect(indexes.rows).toEqual(renderIndexes(SCHEMA, 'scan').map((sql) => ({ name: `${SCHEMA}.${/INDEX IF NOT EXISTS "?([a-z_]+)"?/.exec(sql)![1]}`, valid: true })).sort((x, y) => x.name.localeCompare(y.name)));
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
    }
  }, 120_000);

  it('a duplicate QR code in a table whose unique keys wait for finalize makes finalize fail, naming the key (never dropped quietly)', async () => {
    const db = await createTestDatabase('wgu');
    try {
      await loadFixture(db.url, 'a');
      const c = await connected(db.url);
      try {
        const o = await migratedButFinalize(c, db.url, 'uniq', { n: 0 });
        // As if a collision had got past prepare: a second bag with another bag's QR code in other letter case.
        await c.query(`INSERT INTO ${q('bag')} (id, qr_id, type) SELECT 900000, lower(qr_id), type FROM ${q('bag')} ORDER BY id LIMIT 1`);
        const err = await runMigrateStep(o, 'finalize').then(() => null, (e: Error) => e);
        expect(err?.message).toMatch(/Finalizing bag .*idx_bag_qr_id_unique_ci/s);
        expect((await c.query(`SELECT count(*)::int AS n FROM ${q('bag')} WHERE id = 900000`)).rows[0].n).toBe(1);
      } finally {
        await c.end();
      }
    } finally {
      await db.drop();
    }
  }, 120_000);
});
