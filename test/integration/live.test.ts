import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { renderFailures } from '../../lambdas/core/verify';
import { captureStatus, installCapture, readCaptures, removeCapture } from '../../lambdas/engine/capture';
import { catchUp } from '../../lambdas/engine/catchup';
import { assembleRun, planVerification, runVerifyItem, verifyRun } from '../../lambdas/engine/verify';
import { hashPasswords } from '../../lambdas/io/password';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { runEngine } from '../support/engine';
import { writeOnce } from '../support/live-writer';
import { adminQuery, createTestDatabase, urlForDatabase, withTestClient } from '../support/pg';
import { targetDump } from '../support/tasks';

/**
 * A live source (MIGRATION_SPEC.md §6) on a real PostgreSQL: the application writes before, during and
 * after the migration; catch-up re-derives the captured keys; the target must then equal a clean run on a
 * copy of the final legacy state, table by table, rows and values.
 */

const RUN_TIME = '2026-01-01T00:00:00';
const TABLES = ['user', 'bag', 'scan', 'bill', 'bill_bag'];

async function writeRounds(c: pg.ClientBase, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) await writeOnce(c, i);
}

/** Rows of one target table as text (no password hashes: their salt is random), by id. */
async function rowsOf(url: string, table: string): Promise<Map<number, string>> {
  return withTestClient(url, async (c) => {
    const r = await c.query(`SELECT id, (to_jsonb(t) - 'password_hash')::text AS row FROM tracetrack.${JSON.stringify(table)} t`);
    return new Map(r.rows.map((x) => [Number(x.id), x.row as string]));
  });
}

/** The first differing rows of each table (for the failure message). */
async function differences(a: string, b: string): Promise<string[]> {
  const out: string[] = [];
  for (const t of ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan']) {
    const [x, y] = [await rowsOf(a, t), await rowsOf(b, t)];
    for (const k of new Set([...x.keys(), ...y.keys()])) if (x.get(k) !== y.get(k)) out.push(`${t} ${k}: live ${x.get(k) ?? '-'} / clean ${y.get(k) ?? '-'}`);
  }
  return out.slice(0, 10);
}

/** Tuples read so far per table (sequential + index fetches), after flushing this session's counters. */
async function tuplesRead(c: pg.ClientBase): Promise<Map<string, number>> {
  await c.query('SELECT pg_stat_force_next_flush()');
  await c.query('SELECT 1');
  await c.query('SELECT pg_stat_clear_snapshot()');
  const r = await c.query(`SELECT schemaname || '.' || relname AS t, (COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0))::bigint AS n FROM pg_stat_user_tables`);
  return new Map(r.rows.map((x) => [x.t as string, Number(x.n)]));
}

async function cleanRunOnCopy(sourceDb: string, runId: string, liveUrl: string): Promise<{ dump: Record<string, string>; diff: string[] }> {
  const copy = `${sourceDb}_copy`;
  await adminQuery(`CREATE DATABASE "${copy}" TEMPLATE "${sourceDb}"`);
  try {
    const url = urlForDatabase(copy);
    await withTestClient(url, async (c) => {
      await removeCapture(c, runId);
      await c.query('DROP SCHEMA tracetrack CASCADE');
      const r = await runEngine(c, { runId: 'clean', runTime: RUN_TIME, batchSize: 500 });
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(v.passed, renderFailures(v.checks)).toBe(true);
    });
    return { dump: await targetDump(url, 'tracetrack', RUN_TIME), diff: await differences(liveUrl, url) };
  } finally {
    await adminQuery(`DROP DATABASE IF EXISTS "${copy}" WITH (FORCE)`);
  }
}

/** The live target equals a clean run on a copy of the final legacy state, table by table, rows and values. */
async function expectLikeCleanRun(db: { name: string; url: string }, runId: string): Promise<void> {
  const live = await targetDump(db.url, 'tracetrack', RUN_TIME);
  const clean = await cleanRunOnCopy(db.name, runId, db.url);
  expect(clean.diff).toEqual([]);
  expect(live).toEqual(clean.dump);
}

type LiveRun = Awaited<ReturnType<typeof runEngine>>;

/** A small shape-A source with capture from the start, migrated live; `body` gets its client and the run. */
async function withLiveRun(name: string, runId: string, body: (c: pg.ClientBase, r: LiveRun) => Promise<void>, o: { likeCleanRun?: boolean } = {}): Promise<void> {
  const db = await createTestDatabase(name);
  try {
    await withTestClient(db.url, async (c) => {
      await seedLegacyShapeA(c, { scale: 0.002 });
      await installCapture(c, { runId, sourceSchema: 'public', targetSchema: 'tracetrack', tables: TABLES });
      await body(c, await runEngine(c, { runId, runTime: RUN_TIME, batchSize: 300, live: true }));
    });
    if (o.likeCleanRun) await expectLikeCleanRun(db, runId);
  } finally {
    await db.drop();
  }
}

describe('live migration: capture and catch-up', () => {
  it('writes across migrate, catch-up and verify leave the target equal to a clean run of the final source', async () => {
    const db = await createTestDatabase('live');
    try {
      await withTestClient(db.url, async (c) => {
        await seedLegacyShapeA(c, { scale: 0.002 });
        await installCapture(c, { runId: 'live-1', sourceSchema: 'public', targetSchema: 'tracetrack', tables: TABLES });
        const writer = new pg.Client({ connectionString: db.url });
        await writer.connect();
        try {
          await writeRounds(writer, 0, 20); // before the first batch
          const first = await runEngine(c, { runId: 'live-1', runTime: RUN_TIME, batchSize: 300, stopAfterBatches: 4, live: true });
          expect(first.interrupted).toBe(true);
          await writeRounds(writer, 20, 60); // between batches
          const r = await runEngine(c, { runId: 'live-1', runTime: RUN_TIME, batchSize: 300, live: true });
          await writeRounds(writer, 60, 100); // after the load
          expect((await captureStatus(c, 'live-1')).pending).toBeGreaterThan(100);
          const caught = await catchUp({ client: c, run: r.run, plan: r.plan, hashPasswords: (p) => hashPasswords(p), deadline: Date.now() + 60_000, chunkSize: 50 });
          expect(caught.pending).toBe(0);
          expect(caught.chunks).toBeGreaterThan(2);
          const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
          expect(v.passed, renderFailures(v.checks)).toBe(true);
          await writeRounds(writer, 100, 130); // after verification
          await catchUp({ client: c, run: r.run, plan: r.plan, hashPasswords: (p) => hashPasswords(p), deadline: Date.now() + 60_000 });
          const v2 = await verifyRun({ client: c, run: r.run, plan: r.plan });
          expect(v2.passed, renderFailures(v2.checks)).toBe(true);
          // Plaintext passwords of sign-ups never reach the change log (keys only) nor the target.
          const leaked = await c.query(`SELECT count(*)::int AS n FROM tracetrack."user" WHERE password_hash LIKE 'plain-pass-%'`);
          expect(leaked.rows[0].n).toBe(0);
        } finally {
          await writer.end();
        }
      });
      await expectLikeCleanRun(db, 'live-1');
      await withTestClient(db.url, async (c) => {
        expect(await removeCapture(c, 'live-1')).toBe(true);
        expect(await readCaptures(c)).toEqual([]);
        const triggers = await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'tracetrack_capture%'`);
        expect(triggers.rows[0].n).toBe(0);
        const schema = await c.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'tracetrack_capture'`);
        expect(schema.rows[0].n).toBe(0);
      });
    } finally {
      await db.drop();
    }
  });

  it("keeps bag roles true when a change makes a bag someone's parent, or no longer (the bag's own row unchanged)", async () => {
    // Shape A has no bag type: a bag is a parent when another bag names it as its parent. The changes below
    // touch only the referring rows; the referenced bags' roles (and so their type) change with them.
    await withLiveRun('live_roles', 'live-roles', async (c, r) => {
      const kids = (await c.query(`SELECT id, parent_bag_id FROM bag WHERE parent_bag_id IN (SELECT id FROM bag) AND qr_code !~* '^SB' ORDER BY id LIMIT 4`)).rows;
      const [a, b, x, y] = kids.map((k) => ({ id: Number(k.id), parent: Number(k.parent_bag_id) }));
      const typeOf = async (bagId: number) => (await c.query(`SELECT type FROM tracetrack.bag WHERE id = $1`, [bagId])).rows[0]?.type;
      expect(await typeOf(a!.id)).toBe('child');
      const catchUpNow = () => catchUp({ client: c, run: r.run, plan: r.plan, hashPasswords: (p) => hashPasswords(p), deadline: Date.now() + 60_000 });
      await c.query(`UPDATE bag SET parent_bag_id = $1 WHERE id = $2`, [a!.id, b!.id]); // a becomes b's parent
      await catchUpNow();
      expect(await typeOf(a!.id)).toBe('parent');
      await c.query(`UPDATE bag SET parent_bag_id = $1 WHERE id = $2`, [b!.parent, b!.id]); // … and no longer
      await c.query(`UPDATE bag SET parent_bag_id = $1 WHERE id = $2`, [x!.id, y!.id]); // x becomes y's parent
      // Catching up a few changes reads a few rows of the sources and of the work tables, not whole tables:
      // the cutover's write freeze must not grow with the database. (Tuples read per table, from PostgreSQL's
      // own counters. The target's bill summaries read each touched bill's parents and their children: a
      // fixed fan-out per change, about a third of these tiny target tables, so they are not counted here.)
      const before = await tuplesRead(c);
      await catchUpNow();
      const after = await tuplesRead(c);
      const sizes = await c.query(`SELECT schemaname || '.' || relname AS t, n_live_tup::int AS n FROM pg_stat_user_tables WHERE n_live_tup > 1000 AND (schemaname = 'public' OR relname LIKE '\\_mig\\_%')`);
      const scanned = sizes.rows.filter((t) => (after.get(t.t) ?? 0) - (before.get(t.t) ?? 0) > t.n / 4).map((t) => `${t.t}: ${(after.get(t.t) ?? 0) - (before.get(t.t) ?? 0)} of ${t.n} rows read`);
      expect(scanned).toEqual([]);
      expect(await typeOf(a!.id)).toBe('child');
      expect(await typeOf(x!.id)).toBe('parent');
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(v.passed, renderFailures(v.checks)).toBe(true);
    }, { likeCleanRun: true });
  });

  it('a run upgraded mid-way: PlanVerify creates the tables a later version added; catch-up refuses a live run prepared without per-row bag references', async () => {
    await withLiveRun('live_upgrade', 'live-up', async (c, r) => {
      // What an execution prepared and migrated by the previous version has: no verification items table,
      // and no record that prepare kept the per-row bag references.
      await c.query('DROP TABLE tracetrack._migration_verify');
      await c.query(`UPDATE tracetrack._migration_run SET steps = steps #- '{migrate:prepare,bagRefs}' WHERE run_id = 'live-up'`);
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(v.passed, renderFailures(v.checks)).toBe(true);
      const kid = (await c.query(`SELECT id FROM bag WHERE parent_bag_id IS NOT NULL ORDER BY id LIMIT 1`)).rows[0].id;
      await c.query(`UPDATE bag SET parent_bag_id = NULL WHERE id = $1`, [kid]);
      const before = (await captureStatus(c, 'live-up')).pending;
      await expect(catchUp({ client: c, run: r.run, plan: r.plan, hashPasswords: (p) => hashPasswords(p), deadline: Date.now() + 60_000 })).rejects.toThrow(
        /prepared without the per-row bag references[\s\S]*tracetrack-migrate abandon --run-id live-up/,
      );
      expect((await captureStatus(c, 'live-up')).pending, 'nothing of the chunk was applied').toBe(before);
    });
  });

  it("verifies a live source while the application writes between Verify's items (each check in its own snapshot)", async () => {
    await withLiveRun('live_items', 'live-items', async (c, r) => {
      const o = { client: c, run: r.run, plan: r.plan, live: { hashPasswords: (p: string[]) => hashPasswords(p) } };
      const { round, items } = await planVerification(o);
      const kinds = await c.query(`SELECT item_no, spec ->> 'kind' AS kind FROM tracetrack._migration_verify WHERE run_id = 'live-items'`);
      const kindOf = new Map(kinds.rows.map((x) => [`${round}/${x.item_no}`, x.kind as string]));
      // The range items first; then the application writes (three new bags, a deleted scan); then the rest.
      for (const ref of items.filter((i) => kindOf.get(i) === 'range')) await runVerifyItem({ ...o, deadline: Date.now() + 60_000 }, ref);
      for (let i = 0; i < 3; i++) await writeOnce(c, 9 * i);
      await c.query(`DELETE FROM scan WHERE id = (SELECT min(id) FROM scan)`);
      for (const ref of items.filter((i) => kindOf.get(i) !== 'range')) await runVerifyItem({ ...o, deadline: Date.now() + 60_000 }, ref);
      const v = await assembleRun(o, round);
      expect(v.passed, renderFailures(v.checks)).toBe(true);
    });
  });
});
