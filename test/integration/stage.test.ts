import { describe, expect, it } from 'vitest';
import { parseStageStep } from '../../lambdas/core/work-graph';
import { analyseTask, createSchemaTask, migrateStepTask, preflightTask, reportTask, verifyTask } from '../../lambdas/engine/tasks';
import { loadFixture } from '../support/engine';
import { createTestDatabase, withTestClient } from '../support/pg';
import { useTestS3 } from '../support/s3';
import { migrateAllSteps, runStepToEnd, runTasks, targetDump, taskDeps } from '../support/tasks';

const store = useTestS3();

/** Checkpoints of a run (step, source, batch, keys, counts): what a redrive must leave as it is. */
const checkpoints = (url: string, runId: string) =>
  withTestClient(url, async (c) =>
    (await c.query(`SELECT step, source_table, batch_no, key_lo, key_hi, migrated, rejected FROM tracetrack._migration_checkpoint WHERE run_id = $1 ORDER BY 1, 2, 3`, [runId])).rows);

/** Shape A in a source database of its own, a cross-database run into another, planned and its tables created (Preflight, Analyse, CreateSchema). */
async function crossRunPlanned(names: [string, string], runId: string) {
  const src = await createTestDatabase(names[0]);
  const tgt = await createTestDatabase(names[1]);
  await loadFixture(src.url, 'a');
  const d = taskDeps(store.current, src.url, tgt.url);
  const { run } = await preflightTask({ input: { runId, batchSize: 4 } }, d);
  const analysis = await analyseTask({ run }, d);
  await createSchemaTask({ run }, d);
  return { src, tgt, d, run, analysis };
}

describe('cross-database staging as work items', () => {
  it('stages each table beside the steps that do not read it (one batch an invocation, each item twice at once), and a redrive changes nothing', async () => {
    const same = await createTestDatabase('stgs');
    const src = await createTestDatabase('stgx');
    const tgt = await createTestDatabase('stgt');
    await loadFixture(same.url, 'ae');
    await loadFixture(src.url, 'ae');
    const r1 = await runTasks(taskDeps(store.current, same.url), { runId: 'same-1', batchSize: 4 });

    // No time budget: every invocation does one batch and returns a cursor, so items interleave batch by batch.
    const d = taskDeps(store.current, src.url, tgt.url, { timeBudgetMs: 0 });
    const { run } = await preflightTask({ input: { runId: 'cross-1', batchSize: 4, concurrency: 4 } }, d);
    expect(run.crossDatabase).toBe(true);
    const analysis = await analyseTask({ run }, d);
    await createSchemaTask({ run }, d);
    // Staging shares waves with the migration's own steps: it is not one phase before them.
    expect(analysis.waves.some((w) => w.some((s) => parseStageStep(s)) && w.some((s) => !parseStageStep(s)))).toBe(true);
    for (const wave of analysis.waves) {
      const queue = [...wave];
      await Promise.all(Array.from({ length: Math.min(4, queue.length) }, async () => {
        for (let step = queue.shift(); step; step = queue.shift()) await Promise.all([runStepToEnd(run, step, d), runStepToEnd(run, step, d)]);
      }));
    }
    const before = await checkpoints(tgt.url, 'cross-1');
    expect(before.filter((c) => c.step === 'stage' && c.batch_no > 1).length).toBeGreaterThan(0);

    // A redrive of every item (staging too) finds its work done: no row copied or migrated twice.
    await migrateAllSteps(run, analysis.steps, d);
    for (const step of analysis.steps) expect((await migrateStepTask({ run, step, cursor: null }, d)).migrated).toBe(0);
    expect(await checkpoints(tgt.url, 'cross-1')).toEqual(before);

    await verifyTask({ run }, d);
    await reportTask({ run }, d);
    expect(await targetDump(tgt.url, 'tracetrack', run.runTime)).toEqual(await targetDump(same.url, 'tracetrack', r1.runTime));
    const staged = await withTestClient(tgt.url, (c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'tracetrack_source'`));
    expect(staged.rowCount).toBe(0);
  });

  it('refuses a step whose source tables are not staged yet, naming them, and writes nothing', async () => {
    const { tgt, d, run, analysis } = await crossRunPlanned(['stgr', 'stgq'], 'early-1');
    for (const step of analysis.steps.filter((s) => s === 'stage:bag')) await runStepToEnd(run, step, d);
    await runStepToEnd(run, 'prepare', d);
    await runStepToEnd(run, 'stage:user', d);
    await runStepToEnd(run, 'user', d);
    await expect(migrateStepTask({ run, step: 'scan', cursor: null }, d)).rejects.toMatchObject({
      name: 'MigrationBatchError',
      message: expect.stringContaining('reads "scan", which is not yet staged'),
    });
    const scans = await withTestClient(tgt.url, (c) => c.query('SELECT count(*)::int AS n FROM tracetrack.scan'));
    expect(scans.rows[0].n).toBe(0);
  });
});

describe('cross-database Verify compares the source with its staged copies', () => {
  it('a source row changed after its table was staged fails staged:<table>, naming the table', async () => {
    const { src, d, run, analysis } = await crossRunPlanned(['stgv', 'stgw'], 'drift-1');
    await migrateAllSteps(run, analysis.steps, d);
    await withTestClient(src.url, (c) => c.query(`UPDATE bill SET description = 'changed after staging' WHERE id = (SELECT min(id) FROM bill)`));
    const err = await verifyTask({ run }, d).then(() => null, (e: Error) => e);
    expect(err?.message).toMatch(/staged:bill: source has [0-9]+ rows, the staged copy [0-9]+, or their content differs/);
    expect(err?.message).not.toMatch(/staged:bag:/);
  });
});

describe('cross-database staging formats', () => {
  it('copies a table with a user-defined type (an enum array) as text, the others in binary, and the staged copies verify', async () => {
    const src = await createTestDatabase('stge');
    const tgt = await createTestDatabase('stgf');
    await loadFixture(src.url, 'a');
    // The same enum in both databases (the staging table is created with the source's column types), with different OIDs.
    for (const url of [src.url, tgt.url]) await withTestClient(url, (c) => c.query(`CREATE TYPE public.tag_kind AS ENUM ('fragile', 'urgent')`));
    await withTestClient(src.url, (c) => c.query(`ALTER TABLE bag ADD COLUMN tags public.tag_kind[]; UPDATE bag SET tags = ARRAY['urgent', 'fragile']::public.tag_kind[] WHERE id % 2 = 0`));
    await runTasks(taskDeps(store.current, src.url, tgt.url), { runId: 'fmt-1', batchSize: 4 });
    const run = await withTestClient(tgt.url, (c) => c.query(`SELECT status, verification->>'passed' AS passed FROM tracetrack._migration_run WHERE run_id = 'fmt-1'`));
    expect(run.rows[0]).toEqual({ status: 'completed', passed: 'true' });
  });
});
