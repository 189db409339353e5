/**
 * Target checksums of a whole migration of a seeded shape-A database (`npx tsx test/bench/target-checksums.ts [scale] [concurrency, default 4] [batch size, default 200000]`):
 * one line per target table, `<rows>:<sum of row hashes>` (rehashed passwords left out). Run it on two commits to show
 * that a refactor leaves the migrated data unchanged, byte for byte.
 */
import { withSeededMigration } from './seeded-migration';

const TABLES = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log'];

async function main() {
  const scale = Number(process.argv[2] ?? '0.25');
  const concurrency = Number(process.argv[3] ?? '4');
  // A smaller batch size cuts tables into more key-range parts (at scale 0.25, 50000: scan in two).
  const batchSize = Number(process.argv[4] ?? '200000');
  const out = await withSeededMigration(scale, async (c, { stepSeconds }) => {
    const tables: Record<string, string> = {};
    for (const t of TABLES) {
      const cols = (await c.query(`SELECT column_name FROM information_schema.columns WHERE table_schema = 'tracetrack' AND table_name = $1 AND column_name <> 'password_hash' ORDER BY ordinal_position`, [t])).rows.map((r) => `"${r.column_name}"`);
      const r = await c.query(`SELECT count(*)::bigint AS n, COALESCE(sum(hashtextextended(ROW(${cols.join(', ')})::text, 0)::numeric), 0)::text AS h FROM tracetrack."${t}"`);
      tables[t] = `${r.rows[0].n}:${r.rows[0].h}`;
    }
    const rej = await c.query(`SELECT count(*)::bigint AS n, COALESCE(sum(hashtextextended(target_table || '|' || source_table || '|' || source_key || '|' || reason, 0)::numeric), 0)::text AS h FROM tracetrack._migration_reject`);
    tables._migration_reject = `${rej.rows[0].n}:${rej.rows[0].h}`;
    return { scale, concurrency, batchSize, stepSeconds, tables };
  }, concurrency, batchSize);
  console.log(JSON.stringify(out, null, 1));
}
main().catch((e) => { console.error(e); process.exit(1); });
