import { describe, expect, it } from 'vitest';
import { runEngine, withFixtureDatabase } from '../support/engine';

/**
 * Finalize vacuums every table once its table jobs are done (the summaries' UPDATEs clear the visibility of the pages
 * they touch) and the keys are added, before the foreign keys are validated: the validations, Verify's reference
 * checks and the application read these tables from their indexes, and on pages not all-visible each index entry cost
 * a heap fetch (PostgreSQL 15 at scale 1: scan's validation 2.70 s against 1.17 s).
 */
describe('finalize and the visibility map', () => {
  it('bag, whose child counts finalize updates, is all-visible once finalize is done; every vacuum ran between the table jobs and the validations', async () => {
    await withFixtureDatabase('a', async (c) => {
      await runEngine(c, { runId: 'fvac', batchSize: 3 });
      // bag alone: a VACUUM skips a page another session holds pinned, and autovacuum's ANALYZE of a small fixture
      // table (more than 50 new rows) may hold one at that moment; bag's few updated rows do not start it.
      const bag = (await c.query(`SELECT relpages, relallvisible FROM pg_class WHERE oid = 'tracetrack.bag'::regclass`)).rows[0];
      expect(bag.relpages).toBeGreaterThan(0);
      expect(bag.relallvisible).toBe(bag.relpages);
      const at = new Map((await c.query(`SELECT source_table, done_at FROM tracetrack._migration_checkpoint WHERE run_id = 'fvac' AND step = 'finalize'`)).rows.map((r) => [r.source_table as string, new Date(r.done_at).getTime()]));
      const vacuums = [...at.keys()].filter((k) => k.startsWith('vacuum:'));
      expect(vacuums.sort()).toEqual(['vacuum:audit_log', 'vacuum:bag', 'vacuum:bill', 'vacuum:bill_bag', 'vacuum:link', 'vacuum:promotionrequest', 'vacuum:scan', 'vacuum:user']);
      const lastTable = Math.max(...['user', 'bag', 'link', 'bill', 'bill_bag', 'scan'].map((t) => at.get(t)!));
      const firstValidation = Math.min(...[...at.keys()].filter((k) => k.startsWith('validate:')).map((k) => at.get(k)!));
      for (const v of vacuums) {
        expect(at.get(v)!).toBeGreaterThanOrEqual(lastTable);
        expect(at.get(v)!).toBeLessThanOrEqual(firstValidation);
      }
    }, 'fvac');
  });
});
