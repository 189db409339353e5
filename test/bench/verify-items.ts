/**
 * Verify's items alone on a migrated database (a kept demo: `npm run demo -- --scale 1 --keep`), to measure and
 * tune Verify without a whole bench run: plans a new round of the latest run's items, runs them LANES at a time
 * (each on a connection of its own, with the migration's session settings), assembles the verdict.
 *
 *   npx tsx test/bench/verify-items.ts <url> [--lanes 1] [--items]
 *
 * Prints the items' wall and the sum of their seconds (with --lanes 1 the CPU of one connection, nearly all of it
 * PostgreSQL's), and with --items each item's milliseconds.
 */
import { planVerification, runVerifyItem, assembleRun, type VerifyOptions } from '../../lambdas/engine/verify';
import { latestRun } from '../../lambdas/engine/runs';
import { connect, parseDatabaseUrl } from '../../lambdas/io/pg';

const arg = (name: string, def: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};

async function main() {
  const url = process.argv[2];
  if (!url || url.startsWith('--')) throw new Error('usage: npx tsx test/bench/verify-items.ts <url> [--lanes 1] [--items]');
  const lanes = Number(arg('lanes', '1'));
  const open = () => connect(parseDatabaseUrl(url));
  const c0 = await open();
  const rec = await latestRun(c0, 'tracetrack');
  if (!rec?.plan) throw new Error('No migrated run in schema tracetrack: run `npm run demo -- --scale 1 --keep` first.');
  const run = { runId: rec.runId, sourceSchema: rec.sourceSchema, targetSchema: 'tracetrack', runTime: rec.runTime, batchSize: 200_000 };
  const base: VerifyOptions = { client: c0, run, plan: rec.plan, fingerprints: !process.argv.includes('--no-fingerprints') };
  const { round, items } = await planVerification(base);
  const queue = [...items];
  const times: [string, number][] = [];
  const t0 = Date.now();
  await Promise.all(Array.from({ length: lanes }, async () => {
    const c = await open();
    try {
      for (let ref = queue.shift(); ref; ref = queue.shift()) {
        const s = Date.now();
        const r = await runVerifyItem({ ...base, client: c, deadline: Date.now() + 600_000 }, ref);
        times.push([r.label, Date.now() - s]);
      }
    } finally {
      await c.end();
    }
  }));
  const wall = Date.now() - t0;
  const verdict = await assembleRun(base, round);
  await c0.end();
  if (process.argv.includes('--items')) for (const [label, ms] of times.sort((a, b) => b[1] - a[1])) console.log(`${String(ms).padStart(6)} ms  ${label}`);
  console.log(`${items.length} items, ${lanes} at a time: wall ${(wall / 1000).toFixed(1)} s, item seconds ${(times.reduce((a, x) => a + x[1], 0) / 1000).toFixed(1)}; verdict ${verdict.passed ? 'passed' : 'FAILED'} (${verdict.checks.filter((x) => x.passed).length}/${verdict.checks.length} checks)`);
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
