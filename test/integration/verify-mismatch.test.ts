import { describe, expect, it } from 'vitest';
import { verifyRun } from '../../lambdas/engine/verify';
import { runEngine, withFixtureDatabase } from '../support/engine';

/** MIGRATION_SPEC.md §3.2: a content mismatch names its key range and a sample of the differing keys. */
describe('verification of content', () => {
  it('a target row changed after the migration fails its checksum, naming the range and the differing key', async () => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'mis', batchSize: 4 });
      const clean = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(clean.passed).toBe(true);

      const ids = (await c.query<{ id: number }>(`SELECT id FROM tracetrack.bag ORDER BY id LIMIT 3`)).rows.map((x) => x.id);
      const changed = ids[1]!;
      await c.query(`UPDATE tracetrack.bag SET name = 'changed after the migration' WHERE id = $1`, [changed]);
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan, bucketWidth: 1000 });
      expect(v.passed).toBe(false);
      const failed = v.checks.filter((ch) => !ch.passed);
      expect(failed.map((ch) => ch.name)).toEqual(['checksum:bag:bag']);
      const lo = Math.floor(changed / 1000) * 1000;
      expect(failed[0]!.detail).toContain(`1 of 1 key range(s) differ; first: keys ${lo}–${lo + 999}`);
      expect(failed[0]!.detail).toMatch(new RegExp(`differing keys e\\.g\\. ${changed}$`));
    }, 'vmis');
  });

  // The range items read a primary-keyed source's target rows through each source row (one pass): a target row
  // that no source row of its range joins must still fail the range, not just be left out of the sums.
  it.each(['user', 'bag'] as const)('a %s target row whose source row was deleted after the migration fails its range', async (table) => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'orph', batchSize: 4 });
      expect((await verifyRun({ client: c, run: r.run, plan: r.plan })).passed).toBe(true);
      const name = table === 'user' ? '"user"' : 'bag';
      const inside = (await c.query<{ id: number }>(`SELECT id FROM public.${name} ORDER BY id OFFSET 1 LIMIT 1`)).rows[0]!.id;
      await c.query(`ALTER TABLE public.${name} DISABLE TRIGGER ALL`);
      await c.query(`DELETE FROM public.${name} WHERE id = $1`, [inside]);
      expect((await c.query(`SELECT count(*)::int AS n FROM tracetrack.${name} WHERE id = $1`, [inside])).rows[0].n).toBe(1);
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan, bucketWidth: 1000 });
      expect(v.passed).toBe(false);
      expect(v.checks.filter((ch) => !ch.passed).map((ch) => ch.name)).toContain(`checksum:${table}:${table}`);
    }, 'vorph');
  });
});
