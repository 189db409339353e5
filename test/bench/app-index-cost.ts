/**
 * What the application's indexes (APP_INDEXES, built by finalize) cost: migrates a seeded shape-A database at
 * `scale` (`npx tsx test/bench/app-index-cost.ts [scale]`), then drops and rebuilds each index finalize adds for
 * the application beyond the target schema's own, timing each build. Prints JSON.
 */
import { TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';
import { qualified } from '../../lambdas/core/sql/ident';
import { withSeededMigration } from './seeded-migration';

/** The indexes added for the application's models (the rest are the target schema's own). */
const APP_ADDED = ['idx_user_role_created', 'idx_bag_qr_id', 'idx_bag_created_at', 'idx_bag_name', 'idx_bag_dispatch_area', 'idx_bag_user_type',
  'idx_bill_created_at', 'idx_promotion_user_id', 'idx_promotion_requested_at', 'idx_audit_timestamp', 'idx_audit_request_id'];

async function main() {
  const scale = Number(process.argv[2] ?? '1');
  const out = await withSeededMigration(scale, async (c, { stepSeconds }) => {
    const builds: Record<string, number> = {};
    for (const [table, ddl] of Object.entries(TARGET_TABLE_DDL)) {
      for (const idx of ddl.indexes.filter((i) => APP_ADDED.includes(i.name))) {
        await c.query(`DROP INDEX ${qualified('tracetrack', idx.name)}`);
        const t0 = Date.now();
        await c.query(`CREATE INDEX ${idx.name} ON ${qualified('tracetrack', table)} ${idx.on}`);
        builds[idx.name] = Date.now() - t0;
      }
    }
    const appIndexSeconds = Object.values(builds).reduce((a, b) => a + b, 0) / 1000;
    return { scale, finalizeSeconds: stepSeconds.finalize, appIndexSeconds, builds };
  });
  console.log(JSON.stringify(out, null, 1));
}
main().catch((e) => { console.error(e); process.exit(1); });
