/**
 * Target checksums of a whole migration of a seeded shape-A database (`npx tsx test/bench/target-checksums.ts [scale]`):
 * one line per target table, `<rows>:<sum of row hashes>` (rehashed passwords left out). Run it on two commits to show
 * that a refactor leaves the migrated data unchanged, byte for byte.
 */
import pg from 'pg';
import { startEmbeddedCluster } from '../../lib/runner/embedded-postgres';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { analyseSource, assertPlan } from '../../lambdas/engine/analyse';
import { createTargetTables, runMigrateStep } from '../../lambdas/engine/migrate';
import { ensureInternalTables, recordRun, updateRun } from '../../lambdas/engine/runs';
import { hashPasswords } from '../../lambdas/io/password';

const TABLES = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log'];
async function main() {
  const scale = Number(process.argv[2] ?? '0.25');
  const cluster = await startEmbeddedCluster();
  try {
    await cluster.createDatabase('cmp');
    const c = new pg.Client({ connectionString: cluster.url('cmp') });
    await c.connect();
    const t0 = Date.now();
    await seedLegacyShapeA(c, { scale });
    const run = { runId: 'cmp', sourceSchema: 'public', targetSchema: 'tracetrack', runTime: '2026-01-01T00:00:00', batchSize: 200_000 };
    const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: 'tracetrack' });
    assertPlan(plan);
    await ensureInternalTables(c, run.targetSchema);
    const rec = await recordRun(c, run.targetSchema, run);
    await updateRun(c, run.targetSchema, run.runId, { plan });
    await createTargetTables(c, run.targetSchema);
    const t1 = Date.now();
    for (const step of plan.steps) {
      for (;;) {
        const r = await runMigrateStep({ client: c, run: { ...run, runTime: rec.runTime }, plan, deadline: Date.now() + 3_600_000, hashPasswords: (p) => hashPasswords(p) }, step);
        if (r.done) break;
      }
    }
    const t2 = Date.now();
    const out: Record<string, string> = {};
    for (const t of TABLES) {
      const cols = (await c.query(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'tracetrack' AND table_name = $1 AND column_name <> 'password_hash' ORDER BY ordinal_position`, [t])).rows.map((r) => `"${r.column_name}"`);
      const r = await c.query(`SELECT count(*)::bigint AS n, COALESCE(sum(hashtextextended(ROW(${cols.join(', ')})::text, 0)::numeric), 0)::text AS h FROM tracetrack."${t}"`);
      out[t] = `${r.rows[0].n}:${r.rows[0].h}`;
    }
    const rej = await c.query(`SELECT count(*)::bigint AS n, COALESCE(sum(hashtextextended(target_table || '|' || source_table || '|' || source_key || '|' || reason, 0)::numeric), 0)::text AS h FROM tracetrack._migration_reject`);
    out._migration_reject = `${rej.rows[0].n}:${rej.rows[0].h}`;
    console.log(JSON.stringify({ scale, seedSeconds: (t1 - t0) / 1000, migrateSeconds: (t2 - t1) / 1000, tables: out }, null, 1));
    await c.end();
  } finally {
    await cluster.stop();
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
