import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase, withTestClient } from '../support/pg';
import { useTestS3 } from '../support/s3';
import { runTasks, targetDump, taskDeps, migrateAllSteps } from '../support/tasks';
import { loadFixture } from '../support/engine';
import {
  analyseTask,
  createSchemaTask,
  preflightTask,
  reportTask,
  verifyTask,
  type TaskDeps,
} from '../../lambdas/engine/tasks';
import { cutoverRun, rollbackRun } from '../../lambdas/engine/cutover';

const store = useTestS3();

const deps = (sourceUrl: string, targetUrl: string, extra: Partial<TaskDeps> = {}) => taskDeps(store.current, sourceUrl, targetUrl, extra);
const dump = targetDump;

describe('workflow tasks on a real PostgreSQL and local S3', () => {
  it('same-database and cross-database paths give the same target, and both verify', async () => {
    const same = await createTestDatabase();
    const src = await createTestDatabase();
    const tgt = await createTestDatabase();
    await loadFixture(same.url, 'ae');
    await loadFixture(src.url, 'ae');
    const r1 = await runTasks(deps(same.url, same.url), { runId: 'same-1', batchSize: 4 });
    const r2 = await runTasks(deps(src.url, tgt.url), { runId: 'cross-1', batchSize: 4 });
    expect(r1.crossDatabase).toBe(false);
    expect(r2.crossDatabase).toBe(true);
    expect(await dump(tgt.url, 'tracetrack', r2.runTime)).toEqual(await dump(same.url, 'tracetrack', r1.runTime));
    // The staged copy (it holds legacy plaintext passwords) is gone once the run completed.
    const staged = await withTestClient(tgt.url, (c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'tracetrack_source'`));
    expect(staged.rowCount).toBe(0);
    // The legacy tables of the target database are untouched; the source database got nothing.
    const srcSchemas = await withTestClient(src.url, (c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'tracetrack'`));
    expect(srcSchemas.rowCount).toBe(0);
    const run = await withTestClient(tgt.url, (c) => c.query(`SELECT status, verification->>'passed' AS passed FROM tracetrack._migration_run WHERE run_id = 'cross-1'`));
    expect(run.rows[0]).toEqual({ status: 'completed', passed: 'true' });
  });

  it('Preflight lists every source table for the backup, the largest first (ties by name)', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    await withTestClient(db.url, (c) =>
      c.query(`INSERT INTO bill_bag (bill_id, bag_id) SELECT 1, 1 FROM generate_series(1, 20000);
               CREATE TABLE location (id int primary key, name text);
               INSERT INTO location SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g`),
    );
    const { backupTables } = await preflightTask({ input: { runId: 'order-1' } }, deps(db.url, db.url));
    const sizes = await withTestClient(db.url, (c) =>
      c.query<{ relname: string; bytes: string }>(`SELECT relname, pg_relation_size(oid)::bigint AS bytes FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'`),
    );
    const bytes = new Map(sizes.rows.map((r) => [r.relname, Number(r.bytes)]));
    expect([...backupTables].sort()).toEqual([...bytes.keys()].sort());
    expect(backupTables.slice(0, 2)).toEqual(['bill_bag', 'location']);
    for (let i = 1; i < backupTables.length; i++) {
      const [a, b] = [backupTables[i - 1]!, backupTables[i]!];
      expect(bytes.get(a)! > bytes.get(b)! || (bytes.get(a) === bytes.get(b) && a < b), `${a} before ${b}`).toBe(true);
    }
  });

  it('a dry run writes nothing to the target and still refuses an unknown table with rows', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    await runTasks(deps(db.url, db.url), { runId: 'dry-1', dryRun: true });
    const schema = await withTestClient(db.url, (c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'tracetrack'`));
    expect(schema.rowCount).toBe(0);
    await withTestClient(db.url, (c) => c.query(`CREATE TABLE mystery (id int primary key); INSERT INTO mystery VALUES (1)`));
    await expect(runTasks(deps(db.url, db.url), { runId: 'dry-2', dryRun: true })).rejects.toMatchObject({
      name: 'PlanError',
      message: expect.stringContaining('"mystery" has rows'),
    });
  });

  it('a second run against the same target is refused while the first holds the lease', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    const d = deps(db.url, db.url);
    const { run } = await preflightTask({ input: { runId: 'first' } }, d);
    await expect(preflightTask({ input: { runId: 'second' } }, d)).rejects.toMatchObject({
      name: 'LeaseHeldError',
      message: expect.stringContaining('Run first holds the lease of schema "tracetrack" (state running'),
    });
    // The first run resumes (same id) and completes; then the second may start.
    const analysis = await analyseTask({ run }, d);
    await createSchemaTask({ run }, d);
    await migrateAllSteps(run, analysis.steps, d);
    await verifyTask({ run }, d);
    await reportTask({ run }, d);
    await expect(preflightTask({ input: { runId: 'second' } }, d)).resolves.toBeTruthy();
  });

  it('invalid execution input lists every problem at once', async () => {
    const db = await createTestDatabase();
    await expect(
      preflightTask({ input: { runId: 'bad id!', batchSize: 0, tables: ['bags'], colour: 'red' } as never }, deps(db.url, db.url)),
    ).rejects.toMatchObject({ name: 'InputError', message: expect.stringMatching(/unknown field "colour"[\s\S]*batchSize[\s\S]*"bags"/) });
  });

  it('cutover moves the tables in one transaction; rollback restores the database exactly; both are idempotent', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    const before = await withTestClient(db.url, async (c) => snapshotPublic(c));
    const run = await runTasks(deps(db.url, db.url), { runId: 'cut-1', batchSize: 5 });
    const target = await dump(db.url, 'tracetrack');
    await withTestClient(db.url, async (c) => {
      const out = await cutoverRun({ client: c, targetSchema: 'tracetrack', runId: run.runId });
      expect(out.status).toBe('cut-over');
      expect((await cutoverRun({ client: c, targetSchema: 'tracetrack', runId: run.runId })).status).toBe('already-cut-over');
      const audit = await c.query(`SELECT action, details FROM public.audit_log WHERE action = 'data_migration'`);
      expect(JSON.parse(audit.rows[0].details)).toMatchObject({ runId: 'cut-1' });
      const legacy = await c.query(`SELECT count(*)::int AS n FROM "legacy_cut-1".bag`);
      expect(legacy.rows[0].n).toBe(17);
    });
    // The application's view equals the migrated target (bar the audit row the cutover wrote).
    const app = await dump(db.url, 'public');
    expect({ ...app, audit_log: undefined }).toEqual({ ...target, audit_log: undefined });
    await withTestClient(db.url, async (c) => {
      expect((await rollbackRun({ client: c, targetSchema: 'tracetrack', runId: run.runId })).status).toBe('rolled-back');
      expect((await rollbackRun({ client: c, targetSchema: 'tracetrack', runId: run.runId })).status).toBe('not-cut-over');
      expect(await snapshotPublic(c)).toEqual(before);
    });
    expect(await dump(db.url, 'tracetrack')).toEqual(target);
  });

  it('rollback refuses to hide what the application wrote into the new tables since the cutover, naming it; --accept-new-writes rolls back anyway', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    const run = await runTasks(deps(db.url, db.url), { runId: 'cut-3' });
    await withTestClient(db.url, async (c) => {
      await cutoverRun({ client: c, targetSchema: 'tracetrack', runId: run.runId });
      // The application, on its new tables.
      await c.query(`INSERT INTO public.scan ("timestamp", parent_bag_id, user_id) VALUES (now() AT TIME ZONE 'utc', 1, 1)`);
      await c.query(`UPDATE public.bag SET weight_kg = 2.0 WHERE id IN (4, 5)`);
      await expect(rollbackRun({ client: c, targetSchema: 'tracetrack', runId: run.runId })).rejects.toMatchObject({
        name: 'CutoverError',
        message: expect.stringContaining('(bag: 2 updated; scan: 1 inserted rows)'),
      });
      expect((await c.query(`SELECT status FROM tracetrack._migration_run WHERE run_id = 'cut-3'`)).rows[0].status).toBe('cut-over');
      expect((await rollbackRun({ client: c, targetSchema: 'tracetrack', runId: run.runId, acceptNewWrites: true })).status).toBe('rolled-back');
      // The rows are kept in the target schema; the counting triggers are gone with the rollback.
      expect((await c.query(`SELECT count(*)::int AS n FROM tracetrack.bag WHERE id IN (4, 5) AND weight_kg = 2.0`)).rows[0].n).toBe(2);
      const triggers = await c.query(`SELECT count(*)::int AS n FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace
                                       WHERE n.nspname = 'tracetrack' AND t.tgname LIKE 'tracetrack_after_cutover%'`);
      expect(triggers.rows[0].n).toBe(0);
    });
  });

  it('cutover is refused after a failed verification, and waits for locks a bounded time', async () => {
    const db = await createTestDatabase();
    await loadFixture(db.url, 'a');
    const run = await runTasks(deps(db.url, db.url), { runId: 'cut-2' });
    await withTestClient(db.url, (c) => c.query(`UPDATE tracetrack._migration_run SET verification = jsonb_set(verification, '{passed}', 'false') WHERE run_id = 'cut-2'`));
    await withTestClient(db.url, async (c) => {
      await expect(cutoverRun({ client: c, targetSchema: 'tracetrack', runId: run.runId })).rejects.toMatchObject({ name: 'CutoverError', message: expect.stringContaining('failed verification') });
      await c.query(`UPDATE tracetrack._migration_run SET verification = jsonb_set(verification, '{passed}', 'true') WHERE run_id = 'cut-2'`);
    });
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE public.bag IN ACCESS SHARE MODE');
      const started = Date.now();
      await withTestClient(db.url, async (c) => {
        await expect(cutoverRun({ client: c, targetSchema: 'tracetrack', runId: run.runId, lockTimeoutMs: 500 })).rejects.toMatchObject({
          name: 'CutoverError',
          message: expect.stringContaining('gave up waiting for a table lock'),
        });
      });
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await locker.query('ROLLBACK');
      await locker.end();
    }
    // Nothing moved.
    const still = await withTestClient(db.url, (c) => c.query(`SELECT count(*)::int AS n FROM public.bag`));
    expect(still.rows[0].n).toBe(17);
  });
});

async function snapshotPublic(c: pg.Client): Promise<Record<string, string>> {
  const tables = (await c.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)).rows.map((r) => r.tablename as string);
  const out: Record<string, string> = {};
  for (const t of tables) {
    const r = await c.query(`SELECT md5(COALESCE(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM public."${t}" x`);
    out[t] = r.rows[0].h;
  }
  return out;
}
