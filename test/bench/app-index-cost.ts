/**
 * What the application's indexes (APP_INDEXES, built by finalize) cost: migrates a seeded shape-A database at
 * `scale` (`npx tsx test/bench/app-index-cost.ts [scale]`), then drops and rebuilds each index finalize adds for
 * the application beyond the target schema's own, timing each build. Prints JSON.
 */
import pg from 'pg';
import { startEmbeddedCluster } from '../../lib/runner/embedded-postgres';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { analyseSource, assertPlan } from '../../lambdas/engine/analyse';
import { createTargetTables, runMigrateStep } from '../../lambdas/engine/migrate';
import { ensureInternalTables, recordRun, updateRun } from '../../lambdas/engine/runs';
import { hashPasswords } from '../../lambdas/io/password';
import { TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';
import { qualified } from '../../lambdas/core/sql/ident';

/** The indexes added for the application's models (the rest are the target schema's own). */
const APP_ADDED = ['idx_user_role_created', 'idx_bag_qr_id', 'idx_bag_created_at', 'idx_bag_name', 'idx_bag_dispatch_area', 'idx_bag_user_type',
  'idx_bill_created_at', 'idx_promotion_user_id', 'idx_promotion_requested_at', 'idx_audit_timestamp', 'idx_audit_request_id'];

async function main() {
  const scale = Number(process.argv[2] ?? '1');
  const cluster = await startEmbeddedCluster();
  try {
    await cluster.createDatabase('idx');
    const c = new pg.Client({ connectionString: cluster.url('idx') });
    await c.connect();
    await seedLegacyShapeA(c, { scale });
    const run = { runId: 'idx', sourceSchema: 'public', targetSchema: 'tracetrack', runTime: '2026-01-01T00:00:00', batchSize: 200_000 };
    const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: 'tracetrack' });
    assertPlan(plan);
    await ensureInternalTables(c, run.targetSchema);
    await recordRun(c, run.targetSchema, run);
    await updateRun(c, run.targetSchema, run.runId, { plan });
    await createTargetTables(c, run.targetSchema);
    let finalizeMs = 0;
    for (const step of plan.steps) {
      const t0 = Date.now();
      for (;;) {
        const r = await runMigrateStep({ client: c, run, plan, deadline: Date.now() + 3_600_000, hashPasswords: (p) => hashPasswords(p) }, step);
        if (r.done) break;
      }
      if (step === 'finalize') finalizeMs = Date.now() - t0;
    }
    const builds: Record<string, number> = {};
    for (const [table, ddl] of Object.entries(TARGET_TABLE_DDL)) {
      for (const idx of ddl.indexes.filter((i) => APP_ADDED.includes(i.name))) {
        await c.query(`DROP INDEX ${qualified('tracetrack', idx.name)}`);
        const t0 = Date.now();
        await c.query(`CREATE INDEX ${idx.name} ON ${qualified('tracetrack', table)} ${idx.on}`);
        builds[idx.name] = Date.now() - t0;
      }
    }
    const totalMs = Object.values(builds).reduce((a, b) => a + b, 0);
    console.log(JSON.stringify({ scale, finalizeSeconds: finalizeMs / 1000, appIndexSeconds: totalMs / 1000, builds }, null, 1));
    await c.end();
  } finally {
    await cluster.stop();
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
