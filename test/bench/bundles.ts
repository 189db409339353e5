/**
 * What the function bundles weigh and what loading one costs: `npm run measure:bundles [-- --runs N]`.
 *
 * Synthesizes the stack with bundling (as `cdk synth` does) into a temp directory, then for every
 * task's bundle: the size of index.js and its source map, the deflated size of both (≈ the zip CDK
 * uploads), and N cold starts, each a new bare Node process (the function's NODE_OPTIONS from the
 * template, nothing on NODE_PATH) timed from spawn to the handler being loaded, and the module
 * load (require) alone inside it. Medians are printed, one line per function.
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { deflateRawSync } from 'node:zlib';
import { synthesizeBundles } from '../../lib/runner/bundles';
import { resolveFunctionEnvironment, startBundleProcess, writeWorker } from '../../lib/runner/bundled-run';

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KB`;

async function main(): Promise<void> {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;
  const outdir = mkdtempSync(path.join(tmpdir(), 'tracetrack-measure-'));
  try {
    const t0 = performance.now();
    const bundles = synthesizeBundles(outdir);
    const synthSeconds = (performance.now() - t0) / 1000;
    const worker = writeWorker(outdir);
    const rows: string[][] = [['function', 'memory', 'index.js', 'index.js.map', 'zip (deflate -9)', 'load (require)', 'spawn → ready']];
    for (const fn of Object.values(bundles.functions)) {
      const js = path.join(fn.assetDir, 'index.js');
      const map = `${js}.map`;
      const zipped = deflateRawSync(readFileSync(js), { level: 9 }).length + deflateRawSync(readFileSync(map), { level: 9 }).length;
      const env = resolveFunctionEnvironment(fn, { sourceUrl: 'postgres://unused@127.0.0.1/x', targetUrl: 'postgres://unused@127.0.0.1/x', bucket: 'unused' }, bundles.template as never);
      const load: number[] = [];
      const ready: number[] = [];
      for (let i = 0; i < runs; i++) {
        const started = performance.now();
        const { worker: w, initMs } = await startBundleProcess(worker, fn, env);
        ready.push(performance.now() - started);
        load.push(initMs);
        w.child.kill();
      }
      rows.push([fn.state, `${fn.memoryMiB} MiB`, kb(statSync(js).size), kb(statSync(map).size), kb(zipped), `${median(load).toFixed(0)} ms`, `${median(ready).toFixed(0)} ms`]);
    }
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    const line = (r: string[]) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
    process.stdout.write(`${line(rows[0]!)}\n|${widths.map((w, i) => (i === 0 ? `-${'-'.repeat(w)}-` : `-${'-'.repeat(w)}:`)).join('|')}|\n`);
    for (const r of rows.slice(1)) process.stdout.write(`${line(r)}\n`);
    process.stdout.write(`\nNode ${process.version}, ${runs} cold starts per function (medians); synth with bundling ${synthSeconds.toFixed(1)} s.\n`);
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exitCode = 1;
});
