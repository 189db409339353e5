import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderFailures } from '../../lambdas/core/verify';
import { readCaptures } from '../../lambdas/engine/capture';
import { cutoverRun, rollbackRun } from '../../lambdas/engine/cutover';
import { readRun } from '../../lambdas/engine/runs';
import { analyseTask, catchUpTask, createSchemaTask, cutoverTask, preflightTask, verifyTask } from '../../lambdas/engine/tasks';
import { verifyRun } from '../../lambdas/engine/verify';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { loadFixture, runEngine } from '../support/engine';
import { writeOnce } from '../support/live-writer';
import { cli } from '../support/cli';
import { adminQuery, createTestDatabase, urlForDatabase, withTestClient } from '../support/pg';
import { startTestS3 } from '../support/s3';
import { runStepToEnd, runTasks, targetDump, taskDeps } from '../support/tasks';

/**
 * A live run through the workflow's tasks (MIGRATION_SPEC.md §6): capture from Preflight on, the
 * application writing across migrate, verify and catch-up, a cutover under a write freeze; and the
 * refusals: a stale cutover without capture, a capture another run left behind.
 */

let s3: Awaited<ReturnType<typeof startTestS3>>;
beforeAll(async () => {
  s3 = await startTestS3();
});
afterAll(async () => {
  await s3?.stop();
});

const triggerCount = async (c: pg.ClientBase) =>
  (await c.query(`SELECT count(*)::int AS n FROM pg_trigger WHERE tgname LIKE 'tracetrack_capture%'`)).rows[0].n as number;

/** The new tables a clean run makes of the copy's final legacy state (after undoing the cutover there). */
async function cleanRunOfFinalLegacy(sourceDb: string, runId: string, runTime: string): Promise<Record<string, string>> {
  const copy = `${sourceDb}_copy`;
  await adminQuery(`CREATE DATABASE "${copy}" TEMPLATE "${sourceDb}"`);
  try {
    const url = urlForDatabase(copy);
    await withTestClient(url, async (c) => {
      // The writes after the cutover (a bag inserted and deleted again) net to nothing: the rollback may hide them.
      await rollbackRun({ client: c, targetSchema: 'tracetrack', runId, acceptNewWrites: true });
      await c.query('DROP SCHEMA tracetrack CASCADE');
      const r = await runEngine(c, { runId: 'clean', runTime, batchSize: 500 });
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(v.passed, renderFailures(v.checks)).toBe(true);
    });
    return await targetDump(url, 'tracetrack', runTime);
  } finally {
    await adminQuery(`DROP DATABASE IF EXISTS "${copy}" WITH (FORCE)`);
  }
}

describe('live runs through the tasks', () => {
  it('captures from Preflight, verifies at a capture position, catches up and cuts over in a write freeze, losing no write', async () => {
    const db = await createTestDatabase('livet');
    const writer = new pg.Client({ connectionString: db.url });
    try {
      await withTestClient(db.url, (c) => seedLegacyShapeA(c, { scale: 0.002 }));
      await writer.connect();
      let i = 0;
      const write = async (n: number) => {
        for (const end = i + n; i < end; i++) await writeOnce(writer, i);
      };
      const d = taskDeps(s3, db.url, db.url);
      const { run } = await preflightTask({ input: { runId: 'lt-1', live: true, batchSize: 400 } }, d);
      expect(run.live).toBe(true);
      await withTestClient(db.url, async (c) => expect(await triggerCount(c)).toBe(5 * 4));
      await write(15);
      const analysis = await analyseTask({ run }, d);
      await createSchemaTask({ run }, d);
      for (const step of analysis.steps) {
        await runStepToEnd(run, step, d);
        await write(3);
      }
      const verified = await verifyTask({ run }, d);
      expect(verified.passed).toBe(true);
      await write(20);
      const caught = await catchUpTask({ run }, d);
      expect(caught).toMatchObject({ caughtUp: true, pending: 0 });
      expect(caught.applied).toBeGreaterThan(0);
      await write(12);
      const cut = await cutoverTask({ run }, d);
      expect(cut.status).toBe('cut-over');
      expect(cut.writeFreezeMs).toBeGreaterThanOrEqual(0);
      // Writes after the cutover go to the new tables (the application's schema now holds them).
      await writer.query(`INSERT INTO public.bag (qr_id, type) VALUES ('SB77777', 'parent')`);
      await writer.query(`DELETE FROM public.bag WHERE qr_id = 'SB77777'`);
      await withTestClient(db.url, async (c) => {
        const rec = await readRun(c, 'tracetrack', 'lt-1');
        expect((rec!.verification as { capturePosition: number }).capturePosition).toBeGreaterThan(0);
        expect(rec!.cutover).toMatchObject({ status: 'cut-over', live: true, writeFreezeMs: cut.writeFreezeMs });
        const audit = await c.query(`SELECT details FROM public.audit_log WHERE action = 'data_migration'`);
        expect(JSON.parse(audit.rows[0].details)).toMatchObject({ runId: 'lt-1', writeFreezeMs: cut.writeFreezeMs, live: true });
        expect(await triggerCount(c)).toBe(0);
        expect(await readCaptures(c)).toEqual([]);
      });
      await writer.end();
      const live = await targetDump(db.url, 'public', run.runTime);
      const clean = await cleanRunOfFinalLegacy(db.name, 'lt-1', run.runTime);
      // The cutover's own audit_log row is the one difference by design.
      expect({ ...live, audit_log: null }).toEqual({ ...clean, audit_log: null });
    } finally {
      await writer.end().catch(() => undefined);
      await db.drop();
    }
  });

  it('refuses the cutover of a run without capture whose source changed after Verify, with the number of changed rows', async () => {
    const db = await createTestDatabase('stale');
    try {
      await loadFixture(db.url, 'a');
      await runTasks(taskDeps(s3, db.url, db.url), { runId: 'st-1', batchSize: 4 });
      await withTestClient(db.url, async (c) => {
        await c.query(`UPDATE bag SET weight = weight + 1 WHERE id IN (1, 2)`);
        await c.query(`INSERT INTO scan (id, created_at, parent_id, child_id, scanner_id) VALUES (900, '2024-05-01', 1, 4, 3)`);
        await c.query(`DELETE FROM bill_bag WHERE id = (SELECT min(id) FROM bill_bag)`);
        await expect(cutoverRun({ client: c, targetSchema: 'tracetrack', runId: 'st-1' })).rejects.toThrow(
          /source changed since run st-1 was verified.*at least 4 rows changed \(bag: 17 → 17 rows, 2 inserted or updated; bill_bag: 12 → 11 rows, 0 inserted or updated, at least 1 deleted; scan: 14 → 15 rows, 1 inserted or updated\)/s,
        );
        // Nothing moved.
        const legacy = await c.query(`SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'legacy_st-1'`);
        expect(legacy.rows[0].n).toBe(0);
      });
    } finally {
      await db.drop();
    }
  });

  it('Preflight of a later run reports a capture another run left behind, until it is removed', async () => {
    const db = await createTestDatabase('left');
    try {
      await loadFixture(db.url, 'a');
      const d = taskDeps(s3, db.url, db.url);
      await preflightTask({ input: { runId: 'crashed-1', live: true } }, d);
      await withTestClient(db.url, (c) => c.query(`DELETE FROM tracetrack._migration_lease`)); // its lease expired
      await expect(preflightTask({ input: { runId: 'next-1' } }, d)).rejects.toThrow(/Run crashed-1 left change capture installed on 5 tables.*abandon --run-id crashed-1/s);
      await expect(preflightTask({ input: { runId: 'next-2', live: true } }, d)).rejects.toThrow(/Run crashed-1 left change capture/);
      // The command the refusal names removes it: `tracetrack-migrate abandon`.
      const abandoned = await cli(['abandon', '--target', db.url, '--run-id', 'crashed-1']);
      expect({ code: abandoned.code, stdout: abandoned.stdout }).toMatchObject({ code: 0, stdout: expect.stringContaining('Its change capture is removed') });
      expect(await withTestClient(db.url, (c) => readCaptures(c))).toEqual([]);
      await expect(preflightTask({ input: { runId: 'next-1' } }, d)).resolves.toBeTruthy();
    } finally {
      await db.drop();
    }
  });
});
