import { describe, expect, it } from 'vitest';
import { TARGET_TABLES } from '../../lambdas/core/rules';
import { WORK_TABLES } from '../../lambdas/core/sql/target-ddl';
import { verifyRun } from '../../lambdas/engine/verify';
import { runEngine, withFixtureDatabase } from '../support/engine';

/**
 * Tables filled moments ago have no planner statistics until autovacuum gets to them, and the bench
 * showed what a join planned without them costs: the verification of 1,000,000 bags joined the reject
 * store in a nested loop (2.5 billion rows compared, 7 minutes instead of 8 seconds). The migration
 * therefore analyses its work tables after `prepare`, each target table when its step ends, and
 * Verify analyses the work tables before its first query. `last_analyze` is set only by an explicit
 * ANALYZE (autovacuum sets `last_autoanalyze`), so these assertions fail if one is dropped.
 */
describe('planner statistics', () => {
  it('work tables and target tables are analysed by the migration, and again by Verify', async () => {
    await withFixtureDatabase('a', async (c) => {
      const analysedAt = async () => {
        const r = await c.query<{ relname: string; last_analyze: Date | null }>(
          `SELECT relname, last_analyze FROM pg_stat_user_tables WHERE schemaname = 'tracetrack'`,
        );
        return Object.fromEntries(r.rows.map((row) => [row.relname, row.last_analyze]));
      };
      const r = await runEngine(c, { runId: 'stats', batchSize: 5 });
      // Statistics reach pg_stat_user_tables asynchronously (at the latest when the backend reports).
      await c.query('SELECT pg_stat_force_next_flush()');
      const afterMigration = await analysedAt();
      for (const t of [...WORK_TABLES, ...TARGET_TABLES]) expect(afterMigration[t], `${t} analysed by the migration`).toBeInstanceOf(Date);

      await new Promise((resolve) => setTimeout(resolve, 20));
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      expect(v.passed).toBe(true);
      await c.query('SELECT pg_stat_force_next_flush()');
      const afterVerify = await analysedAt();
      for (const t of WORK_TABLES) {
        expect(afterVerify[t]!.getTime(), `${t} analysed again by Verify`).toBeGreaterThan(afterMigration[t]!.getTime());
      }
    }, 'stats');
  });
});
