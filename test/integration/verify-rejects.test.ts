import { describe, expect, it } from 'vitest';
import { verifyRun, type VerifyOptions } from '../../lambdas/engine/verify';
import { runEngine, withFixtureDatabase } from '../support/engine';

const WHOLE = { bucketWidth: 2, chunkKeys: 1e9, itemKeys: 1e9 };

/**
 * Verify matches a source row with its stored reject by the key's text as the mapping wrote it: a stored key in
 * another form ('05' for 5) is not that row's, and a stored key beyond bigint's range is no error (a join by the key
 * cast to bigint, tried as a speed-up, failed both).
 */
describe('Verify and the reject store', () => {
  it('a reject stored under another text of its key is not found; a key beyond bigint breaks nothing', async () => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'vrej', batchSize: 3 });
      const o: VerifyOptions = { client: c, run: r.run, plan: r.plan };
      expect((await verifyRun({ ...o, sizes: WHOLE })).passed).toBe(true);
      const stored = (await c.query(`SELECT source_table, source_key FROM tracetrack._migration_reject WHERE run_id = 'vrej' AND source_key ~ '^[1-9][0-9]*$' ORDER BY source_table, source_key::bigint LIMIT 1`)).rows[0];
      expect(stored).toBeDefined();
      await c.query(`INSERT INTO tracetrack._migration_reject (run_id, target_table, source_table, source_key, reason, row_data)
                     SELECT run_id, target_table, source_table, '99999999999999999999', reason, row_data FROM tracetrack._migration_reject
                      WHERE run_id = 'vrej' AND source_table = $1 AND source_key = $2`, [stored.source_table, stored.source_key]);
      expect((await verifyRun({ ...o, sizes: WHOLE })).passed).toBe(true);
      await c.query(`UPDATE tracetrack._migration_reject SET source_key = '0' || source_key WHERE run_id = 'vrej' AND source_table = $1 AND source_key = $2`, [stored.source_table, stored.source_key]);
      const broken = await verifyRun({ ...o, sizes: WHOLE });
      expect(broken.passed).toBe(false);
      const failed = broken.checks.filter((x) => !x.passed);
      expect(failed.map((x) => x.name)).toEqual([`counts:${stored.source_table}:${stored.source_table}`]);
      expect(failed[0]!.detail).toMatch(new RegExp(`1 missing \\(e\\.g\\. key ${stored.source_key}\\)$`));
    }, 'vrej');
  });
});
