import pg from 'pg';
import { startEmbeddedCluster } from '../../lib/runner/embedded-postgres';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import type { Plan } from '../../lambdas/core/planner';
import { analyseSource, assertPlan } from '../../lambdas/engine/analyse';
import { createTargetTables, runMigrateStep } from '../../lambdas/engine/migrate';
import { ensureInternalTables, recordRun, updateRun } from '../../lambdas/engine/runs';
import { hashPasswords } from '../../lambdas/io/password';
import { planWaves } from '../../lambdas/core/work-graph';
import { deferredUniqueKeyTables } from '../../lambdas/core/sql/mapping';

/**
 * A whole in-process migration of a shape-A database seeded at `scale`, on an embedded PostgreSQL of its own
 * (stopped afterwards): `fn` gets the client on the migrated database and the seconds each step took.
 */
export async function withSeededMigration<T>(
  scale: number, fn: (c: pg.Client, o: { plan: Plan; stepSeconds: Record<string, number> }) => Promise<T>, concurrency = 1, batchSize = 200_000,
): Promise<T> {
  const cluster = await startEmbeddedCluster();
  try {
    await cluster.createDatabase('bench');
    const c = new pg.Client({ connectionString: cluster.url('bench') });
    await c.connect();
    try {
      await seedLegacyShapeA(c, { scale });
      const run = { runId: 'bench', sourceSchema: 'public', targetSchema: 'tracetrack', runTime: '2026-01-01T00:00:00', batchSize };
      const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: 'tracetrack' });
      assertPlan(plan);
      await ensureInternalTables(c, run.targetSchema);
      const rec = await recordRun(c, run.targetSchema, run);
      await updateRun(c, run.targetSchema, run.runId, { plan });
      // As CreateSchema does (a bulk run): bag and link without their unique keys until finalize.
      await createTargetTables(c, run.targetSchema, deferredUniqueKeyTables(plan, false));
      const stepSeconds: Record<string, number> = {};
      // The work graph as the workflow runs it: wave after wave, up to `concurrency` items at once, each on its own connection.
      const openClient = async () => {
        const extra = new pg.Client({ connectionString: cluster.url('bench') });
        await extra.connect();
        return { client: extra, close: () => extra.end() };
      };
      const runStep = async (step: string) => {
        const t0 = Date.now();
        const { client, close } = await openClient();
        try {
          for (;;) {
            const r = await runMigrateStep({
              client, run: { ...run, runTime: rec.runTime }, plan, deadline: Date.now() + 3_600_000, hashPasswords: (p) => hashPasswords(p), concurrency, openClient,
            }, step);
            if (r.done) break;
          }
        } finally {
          await close();
        }
        stepSeconds[step] = (Date.now() - t0) / 1000;
      };
      // As Analyse plans them: the largest tables in key-range parts where the batch size and concurrency allow.
      for (const wave of planWaves(plan, { batchSize, concurrency })) {
        const queue = [...wave];
        await Promise.all(Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
          for (let step = queue.shift(); step; step = queue.shift()) await runStep(step);
        }));
      }
      return await fn(c, { plan, stepSeconds });
    } finally {
      await c.end();
    }
  } finally {
    await cluster.stop();
  }
}
