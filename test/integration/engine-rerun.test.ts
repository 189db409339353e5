import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { Plan } from '../../lambdas/core/planner';
import { TARGET_TABLES } from '../../lambdas/core/rules';
import { renderFailures } from '../../lambdas/core/verify';
import { verifyRun } from '../../lambdas/engine/verify';
import { runEngine, withFixtureDatabase, type EngineRunOptions } from '../support/engine';

/**
 * Idempotence and resumability (MIGRATION_SPEC.md §3.6, STYLE.md §5) on a real PostgreSQL:
 * a second run, the same run again, an interrupted-then-resumed run and different batch sizes all
 * leave exactly the same target.
 */

const SCHEMA = 'tracetrack';
const RUN_TIME = '2026-01-01T00:00:00';
const LATER_RUN_TIME = '2027-06-01T12:00:00';
const SHAPES = ['a', 'b', 'c', 'd', 'e', 'ae'] as const;

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
const q = (table: string) => `${ident(SCHEMA)}.${ident(table)}`;

type Dump = Record<string, string[]>;

/** An md5 per target table over every row's full text, in id order. */
async function checksums(c: pg.ClientBase): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const table of TARGET_TABLES) {
    const r = await c.query(`SELECT md5(string_agg(t::text, '|' ORDER BY id)) AS h, count(*)::int AS n FROM ${q(table)} t`);
    out[table] = `${r.rows[0].n}:${r.rows[0].h}`;
  }
  return out;
}

/** The legacy password values of the source: a target hash not among them was made by the migration. */
async function sourcePasswordValues(c: pg.ClientBase, plan: Plan): Promise<Set<string>> {
  const values = new Set<string>();
  for (const s of plan.tables.find((t) => t.target === 'user')?.sources ?? []) {
    const col = s.columns.find((m) => m.kind === 'password')?.source;
    if (!col) continue;
    const r = await c.query(`SELECT ${ident(col)}::text AS v FROM public.${ident(s.table)} WHERE ${ident(col)} IS NOT NULL`);
    for (const row of r.rows) values.add(row.v);
  }
  return values;
}

/**
 * Every row of every target table as text, in id order. Rehashed plaintext passwords carry a random
 * salt, so across databases they are replaced by a marker (they are checked by the shape tests).
 */
async function dumpTargets(c: pg.ClientBase, plan: Plan): Promise<Dump> {
  const legacy = await sourcePasswordValues(c, plan);
  const out: Dump = {};
  for (const table of TARGET_TABLES) {
    const r = await c.query(`SELECT to_jsonb(t) AS row FROM ${q(table)} t ORDER BY id`);
    out[table] = r.rows.map(({ row }) => {
      if (table === 'user' && !legacy.has(row.password_hash)) {
        expect(row.password_hash).toMatch(/^scrypt:32768:8:1\$/);
        row.password_hash = '<rehashed>';
      }
      return JSON.stringify(row);
    });
  }
  return out;
}

/** The reject store of one run, without its run id and time. */
async function rejects(c: pg.ClientBase, runId: string): Promise<string[]> {
  const r = await c.query(
    `SELECT target_table, source_table, source_key, reason, row_data FROM ${q('_migration_reject')} WHERE run_id = $1
      ORDER BY target_table, source_table, source_key`,
    [runId],
  );
  return r.rows.map((row) => JSON.stringify(row));
}

async function idMap(c: pg.ClientBase): Promise<string[]> {
  const r = await c.query(`SELECT source_table, source_key, target_table, target_id FROM ${q('_migration_id_map')} ORDER BY 1, 2`);
  return r.rows.map((row) => JSON.stringify(row));
}

async function rejectCounts(c: pg.ClientBase): Promise<Record<string, number>> {
  const r = await c.query(`SELECT run_id, count(*)::int AS n FROM ${q('_migration_reject')} GROUP BY run_id ORDER BY run_id`);
  return Object.fromEntries(r.rows.map((row) => [row.run_id, row.n]));
}

const withShape = <T>(shape: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => withFixtureDatabase(shape, fn, 'rerun');

/** Runs until done, interrupted every `stopAfterBatches` batches; returns how often it was interrupted. */
async function runToCompletion(c: pg.ClientBase, options: EngineRunOptions): Promise<{ interruptions: number; result: Awaited<ReturnType<typeof runEngine>> }> {
  let interruptions = 0;
  for (;;) {
    const result = await runEngine(c, options);
    if (!result.interrupted) return { interruptions, result };
    interruptions++;
    expect(interruptions, 'the run makes progress between interruptions').toBeLessThan(1000);
  }
}

/** A clean, uninterrupted run on a fresh copy of the fixture: the reference. */
async function cleanRun(shape: string, options: EngineRunOptions = {}) {
  return withShape(shape, async (c) => {
    const r = await runEngine(c, { runId: 'clean', runTime: RUN_TIME, ...options });
    expect(r.interrupted).toBe(false);
    return { dump: await dumpTargets(c, r.plan), rejects: await rejects(c, 'clean'), idMap: await idMap(c) };
  });
}

describe('engine reruns', () => {
  /** Per target table: the counts a report shows (the per-source details hold samples of this run). */
  const reportCounts = (tables: Record<string, { targetRows: number; migrated: number; rejected: number; derived: number }>) =>
    Object.fromEntries(Object.entries(tables).map(([t, c]) => [t, { targetRows: c.targetRows, migrated: c.migrated, rejected: c.rejected, derived: c.derived }]));

  it.each(SHAPES)('shape %s: a second run with a new run id (and a later run time) changes nothing and reports the same counts', async (shape) => {
    await withShape(shape, async (c) => {
      const first = await runEngine(c, { runId: 'run-1', runTime: RUN_TIME });
      const v1 = await verifyRun({ client: c, run: first.run, plan: first.plan });
      expect(v1.passed, renderFailures(v1.checks)).toBe(true);
      const before = await checksums(c);

      const second = await runEngine(c, { runId: 'run-2', runTime: LATER_RUN_TIME });
      expect(second.interrupted).toBe(false);
      for (const [step, t] of Object.entries(second.totals)) expect({ step, migrated: t.migrated }).toEqual({ step, migrated: 0 });
      expect(await checksums(c)).toEqual(before);

      const v2 = await verifyRun({ client: c, run: second.run, plan: second.plan });
      expect(reportCounts(v2.tables)).toEqual(reportCounts(v1.tables));
      // Counts, orphans, sequences and passwords hold for the second run too (content: see the later-run-time test below).
      const failedOtherThanChecksum = v2.checks.filter((ch) => !ch.passed && !ch.name.startsWith('checksum:'));
      expect(failedOtherThanChecksum.map((ch) => `${ch.name}: ${ch.detail}`)).toEqual([]);
      // The second run records the same rejects under its own id.
      expect(await rejects(c, 'run-2')).toEqual(await rejects(c, 'run-1'));
    });
  });

  it.each(SHAPES)('shape %s: a second run with a new run id and the same run time verifies', async (shape) => {
    await withShape(shape, async (c) => {
      const first = await runEngine(c, { runId: 'run-1', runTime: RUN_TIME });
      const v1 = await verifyRun({ client: c, run: first.run, plan: first.plan });
      const second = await runEngine(c, { runId: 'run-2', runTime: RUN_TIME });
      const v2 = await verifyRun({ client: c, run: second.run, plan: second.plan });
      expect(v2.passed, renderFailures(v2.checks)).toBe(true);
      expect(v2.tables).toEqual(v1.tables);
    });
  });

  // A second run asks for a later run time, but the target keeps the first run's migration time (recordRun),
  // so rows it leaves alone (their missing timestamps hold that time) still verify. MIGRATION_SPEC §3.6.
  it('shape a: a second run with a new run id and a later run time verifies (the target keeps its first migration time)', async () => {
    await withShape('a', async (c) => {
      await runEngine(c, { runId: 'run-1', runTime: RUN_TIME });
      const second = await runEngine(c, { runId: 'run-2', runTime: LATER_RUN_TIME });
      const v2 = await verifyRun({ client: c, run: second.run, plan: second.plan });
      expect(v2.passed, renderFailures(v2.checks)).toBe(true);
    });
  });

  it.each(SHAPES)('shape %s: running the same run id again is a no-op (checkpoints)', async (shape) => {
    await withShape(shape, async (c) => {
      const first = await runEngine(c, { runId: 'same', runTime: RUN_TIME });
      const v1 = await verifyRun({ client: c, run: first.run, plan: first.plan });
      const before = { sums: await checksums(c), rejects: await rejectCounts(c), idMap: await idMap(c) };

      const again = await runEngine(c, { runId: 'same', runTime: LATER_RUN_TIME });
      expect(again.interrupted).toBe(false);
      // The resumed run keeps the run time recorded the first time.
      expect(again.run.runTime.startsWith(RUN_TIME)).toBe(true);
      for (const [step, t] of Object.entries(again.totals)) expect({ step, ...t }).toEqual({ step, migrated: 0, rejected: 0 });
      expect({ sums: await checksums(c), rejects: await rejectCounts(c), idMap: await idMap(c) }).toEqual(before);
      const v2 = await verifyRun({ client: c, run: again.run, plan: again.plan });
      expect(v2.passed, renderFailures(v2.checks)).toBe(true);
      expect(v2.tables).toEqual(v1.tables);
    });
  });

  it.each(SHAPES)('shape %s: a run interrupted between batches and resumed ends identical to a clean run', async (shape) => {
    const reference = await cleanRun(shape);
    await withShape(shape, async (c) => {
      const first = await runEngine(c, { runId: 'resumed', runTime: RUN_TIME, stopAfterBatches: 3, batchSize: 2 });
      expect(first.interrupted).toBe(true);
      const { interruptions, result } = await runToCompletion(c, { runId: 'resumed', runTime: RUN_TIME, stopAfterBatches: 3, batchSize: 2 });
      expect(interruptions + 1).toBeGreaterThan(1);
      expect(await dumpTargets(c, result.plan)).toEqual(reference.dump);
      expect(await idMap(c)).toEqual(reference.idMap);
      // Rejects are neither doubled nor lost.
      expect(await rejects(c, 'resumed')).toEqual(reference.rejects);
      expect(await rejectCounts(c)).toEqual(reference.rejects.length ? { resumed: reference.rejects.length } : {});
      const v = await verifyRun({ client: c, run: result.run, plan: result.plan });
      expect(v.passed, renderFailures(v.checks)).toBe(true);
    });
  });

  it.each(SHAPES)('shape %s: batch sizes 1, 3 and 1000 give the same target', async (shape) => {
    const [one, three, thousand] = await Promise.all([1, 3, 1000].map((batchSize) => cleanRun(shape, { batchSize })));
    expect(one!.dump).toEqual(thousand!.dump);
    expect(three!.dump).toEqual(thousand!.dump);
    expect(one!.rejects).toEqual(thousand!.rejects);
    expect(three!.rejects).toEqual(thousand!.rejects);
    expect(one!.idMap).toEqual(thousand!.idMap);
  });
});
