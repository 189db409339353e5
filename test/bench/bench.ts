/**
 * npm run bench -- [--scale S] [--batch-size N] [--postgres 15] [--data-checksums on|off] [--no-results] [--explain-slow MS [--pg-log FILE]]
 *
 * One run on a fresh embedded PostgreSQL (stopped at the end): seeds shape A at scale S, measures the
 * floors (INSERT…SELECT into schema `floor`; COPY|gzip -1 of every source table; psql COPY pipe into a
 * second database), then `tracetrack-migrate run` in place and into another database (child processes
 * under /usr/bin/time -v for the peak RSS), then those three floors again; prints the ratios (each against
 * the mean of its floor before and after the runs) and writes test/bench/RESULTS.md and
 * test/bench/results-scale-S.json. With `--postgres N`: Debian's PostgreSQL N instead of the embedded 18
 * (test/bench/cluster.ts), results in test/bench/RESULTS-pgN.md and results-scale-S-pgN.json.
 */
import { spawn, execFileSync } from 'node:child_process';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import * as path from 'node:path';
import pg from 'pg';
import type { EmbeddedCluster } from '../../lib/runner/embedded-postgres';
import { benchPostgresVersion, dataChecksumFlags, startBenchCluster } from './cluster';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';
import { BARE_SCHEMA, bareFloor, copyGzipFloor, FLOOR_SCHEMA, FLOOR_SESSION_OPTIONS, GZIP_BINARY, insertSelectFloor, psqlPipeFloor, type FloorTableTiming } from './floor';
import { parseTablePartStep } from '../../lambdas/core/work-graph';

const ROOT = path.join(__dirname, '..', '..');
const SOURCE_TABLES = ['user', 'bag', 'scan', 'bill', 'bill_bag'];
const LAMBDA_BUDGET_S = 600;

function arg(name: string, fallback?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  const eq = process.argv.find((a) => a.startsWith(`--${name}=`));
  return eq ? eq.slice(name.length + 3) : fallback;
}
const scale = Number(arg('scale', '1'));
const batchSize = Number(arg('batch-size', '200000'));
/** A migrate step's final progress line: step, rows read, seconds, rejected. */
const MIGRATE_DONE_LINE = /^migrate (\S+): ([\d,]+) rows, .*?, ([\d.]+) s(?: \((\d+) rejected\))? done$/;
const writeResults = !process.argv.includes('--no-results');
const postgresVersion = benchPostgresVersion();
/** '' for the embedded default, '-pg15' for `--postgres 15`: the suffix of the result files. */
const resultSuffix = postgresVersion ? `-pg${postgresVersion}` : '';
if (!(scale > 0) && !process.argv.includes('--live')) throw new Error('--scale must be > 0');

const log = (s: string) => process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;
const f1 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(1));
const f2 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(2));
const rate = (rows: number, s: number) => (s > 0 ? (rows / s >= 10_000 ? `${Math.round(rows / s / 1000)}k` : String(Math.round(rows / s))) : '-');

interface CliRun {
  label: string;
  loadBefore: number;
  loadAfter: number;
  exitCode: number;
  wall: number;
  peakRssMb: number;
  lines: { t: number; text: string }[];
  stderrTail: string;
  backup: { perTable: Record<string, { rows: number; seconds: number; invocations: number }>; phase: number };
  migrate: {
    createSchema: number;
    perStep: Record<string, { seconds: number; invocations: number; migrated?: number; rejected?: number; derived?: number; source?: number; parts?: number }>;
    stepsTotal: number;
    total: number;
    phaseWall: number;
  };
  verify: number;
  verifyNote?: string;
  report: number;
  checkpoints: { step: string; source_table: string; batches: number; seconds: number; migrated: number; rejected: number }[];
  reportSteps?: unknown;
  runRecordSteps?: unknown;
}

async function runCli(label: string, cliArgs: string[], checkpointUrl: string, runId: string): Promise<CliRun> {
  const reportFile = path.join(tmpdir(), `tracetrack-bench-${runId}.json`);
  const backupDir = mkdtempSync(path.join(tmpdir(), `tracetrack-bench-backup-`));
  const args = ['-v', process.execPath, '--import', 'tsx', 'bin/cli.ts', 'run', ...cliArgs, '--backup-dir', backupDir, '--report', reportFile, '--batch-size', String(batchSize), '--run-id', runId];
  log(`${label}: node --import tsx bin/cli.ts run ${cliArgs.map((a) => a.replace(/:[^:@/]+@/, ':***@')).join(' ')} --backup-dir <tmp> --report <tmp> --batch-size ${batchSize} --run-id ${runId}`);
  const load = loadavg()[0]!;
  log(`${label}: load average (1 min) before: ${load.toFixed(2)}`);
  const t0 = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, FORCE_COLOR: '0' } });
  const lines: { t: number; text: string }[] = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += String(d);
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const text = buf.slice(0, i);
      buf = buf.slice(i + 1);
      lines.push({ t: secondsSince(t0), text });
      if (/ done|^Run |^Verify|^Analyse:/.test(text)) log(`  ${label} | ${text}`);
    }
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const exitCode: number = await new Promise((resolve) => child.on('exit', (code) => resolve(code ?? -1)));
  const wall = secondsSince(t0);
  const loadAfter = loadavg()[0]!;
  if (buf) lines.push({ t: wall, text: buf });
  // The CLI's own getrusage figure (this process only); /usr/bin/time -v would also count child processes.
  const ownMb = lines.map((l) => /Peak memory of this process: (\d+) MB/.exec(l.text)?.[1]).find((m) => m !== undefined);
  const rssKb = ownMb !== undefined ? Number(ownMb) * 1024 : Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1] ?? NaN);
  const cliStderr = stderr.split(/\n\s*Command being timed:/)[0] ?? '';
  if (exitCode !== 0) log(`${label}: exit ${exitCode}\n${cliStderr.slice(-3000)}`);

  const ckClient = new pg.Client({ connectionString: checkpointUrl });
  await ckClient.connect();
  let checkpoints: CliRun['checkpoints'] = [];
  let runSteps: Record<string, { seconds?: number }> = {};
  try {
    const r = await ckClient.query(
      `SELECT step, source_table, count(*)::int AS batches, sum(seconds)::float8 AS seconds, sum(migrated)::bigint AS migrated, sum(rejected)::bigint AS rejected
         FROM tracetrack._migration_checkpoint WHERE run_id = $1 GROUP BY step, source_table ORDER BY min(done_at)`,
      [runId],
    );
    checkpoints = r.rows.filter((x) => x.source_table !== '*').map((x) => ({ ...x, migrated: Number(x.migrated), rejected: Number(x.rejected) }));
    const s = await ckClient.query(`SELECT steps FROM tracetrack._migration_run WHERE run_id = $1`, [runId]);
    runSteps = s.rows[0]?.steps ?? {};
  } catch (err) {
    log(`${label}: could not read checkpoints: ${(err as Error).message}`);
  } finally {
    await ckClient.end();
  }
  let reportSteps: unknown;
  if (existsSync(reportFile)) {
    try {
      reportSteps = (JSON.parse(readFileSync(reportFile, 'utf8')) as { steps?: unknown }).steps;
    } catch {
      /* not JSON */
    }
    rmSync(reportFile, { force: true });
  }
  rmSync(backupDir, { recursive: true, force: true });
  return parseRun({ label, loadBefore: load, loadAfter, exitCode, wall, peakRssMb: rssKb / 1024, lines, stderrTail: cliStderr.slice(-2000), checkpoints, reportSteps, runRecordSteps: runSteps });
}

type RawRun = Pick<CliRun, 'label' | 'loadBefore' | 'loadAfter' | 'exitCode' | 'wall' | 'peakRssMb' | 'lines' | 'stderrTail' | 'checkpoints' | 'reportSteps' | 'runRecordSteps'>;

/** The figures of one CLI run from its timestamped stdout lines (and, after a failure, the --report file's per-step trace). */
function parseRun(raw: RawRun): CliRun {
  const { lines } = raw;
  const at = (re: RegExp, last = false) => {
    const hits = lines.filter((l) => re.test(l.text));
    return last ? hits[hits.length - 1] : hits[0];
  };
  const num = (re: RegExp) => {
    const l = at(re);
    const m = l ? re.exec(l.text) : null;
    return m ? Number(m[1]) : NaN;
  };

  // Backup: per table, the final progress line's seconds (since the table's first invocation); one line per invocation.
  const backupPerTable: CliRun['backup']['perTable'] = {};
  for (const l of lines) {
    const m = /^backup (\S+): ([\d,]+) rows, .*?, ([\d.]+) s/.exec(l.text);
    if (!m) continue;
    const e = (backupPerTable[m[1]!] ??= { rows: 0, seconds: 0, invocations: 0 });
    e.rows = Number(m[2]!.replace(/,/g, ''));
    e.seconds = Number(m[3]);
    e.invocations++;
  }
  const preflight = at(/^Preflight:/);
  const finalizeBackup = at(/^FinalizeBackup done/);
  const backupPhase = preflight && finalizeBackup ? finalizeBackup.t - preflight.t : NaN;

  // Migrate: invocation counts from the progress lines, seconds from the CLI summary table (time in each step's invocations).
  const perStep: CliRun['migrate']['perStep'] = {};
  // A table loaded in key-range parts (scan:1/2, scan:2/2) is one row: its parts' invocations, the longest part's wall.
  const partWall: Record<string, number> = {};
  const partsOf: Record<string, Set<string>> = {};
  for (const l of lines) {
    const m = /^migrate (\S+): /.exec(l.text);
    if (!m) continue;
    const table = parseTablePartStep(m[1]!)?.table;
    const done = table ? MIGRATE_DONE_LINE.exec(l.text) : null;
    if (table) (partsOf[table] ??= new Set()).add(m[1]!);
    if (table && done) partWall[table] = Math.max(partWall[table] ?? 0, Number(done[3]));
    (perStep[table ?? m[1]!] ??= { seconds: 0, invocations: 0 }).invocations++;
  }
  const header = lines.findIndex((l) => /^table\s+source rows\s+migrated/.test(l.text));
  let stepsTotal = NaN;
  if (header >= 0) {
    for (const l of lines.slice(header + 1)) {
      const cols = l.text.trim().split(/\s+/);
      if (cols.length !== 6) break;
      const [table, source, migrated, derived, rejected, seconds] = cols as [string, string, string, string, string, string];
      if (table === 'total') {
        stepsTotal = Number(seconds);
        break;
      }
      const e = (perStep[table] ??= { seconds: 0, invocations: 0 });
      Object.assign(e, { seconds: partWall[table] ?? Number(seconds), source: Number(source), migrated: Number(migrated), derived: Number(derived), rejected: Number(rejected), ...(partsOf[table] ? { parts: partsOf[table].size } : {}) });
    }
  }
  // Steps without a summary row (prepare, stage, finalize; every step after a failed run): the seconds
  // of their final progress line (from their first invocation's start to their end) ...
  for (const l of lines) {
    const m = MIGRATE_DONE_LINE.exec(l.text);
    if (m && perStep[m[1]!] && perStep[m[1]!]!.source === undefined) {
      const migrated = Number(m[2]!.replace(/,/g, ''));
      const rejected = Number(m[4] ?? 0);
      const table = !['prepare', 'stage', 'finalize'].includes(m[1]!);
      Object.assign(perStep[m[1]!]!, { seconds: Number(m[3]), ...(header < 0 ? { migrated, rejected, ...(table ? { source: migrated + rejected } : {}) } : {}) });
    }
  }
  // ... or, after a failure, exactly from the --report file's trace (time inside each step's invocations).
  if (header < 0 && Array.isArray(raw.reportSteps)) {
    for (const s of raw.reportSteps as { step: string; seconds: number; invocations: number }[]) {
      const e = (perStep[s.step] ??= { seconds: 0, invocations: 0 });
      e.seconds = s.seconds;
      e.invocations = s.invocations;
    }
    stepsTotal = (raw.reportSteps as { seconds: number }[]).reduce((a, s) => a + s.seconds, 0);
  }
  const createSchema = num(/^CreateSchema done \(([\d.]+) s\)/);
  const createLine = at(/^CreateSchema done/);
  const lastMigrate = at(/^migrate \S+: .* done$/, true);
  const migratePhaseWall = createLine && lastMigrate ? lastMigrate.t - createLine.t : NaN;
  // Verify = PlanVerify + the VerifyItems Map (items in parallel) + the assembly: from PlanVerify's start to Verify's end.
  const planVerifyLine = at(/^PlanVerify done/);
  const verifyLine = at(/^Verify done/);
  let verify = planVerifyLine && verifyLine
    ? verifyLine.t - planVerifyLine.t + num(/^PlanVerify done \(([\d.]+) s\)/)
    : num(/^Verify done \(([\d.]+) s\)/);
  let verifyNote: string | undefined;
  // The failure is printed on stderr: "Run ID failed in step STATE with ERROR:".
  const failed = /Run \S+ failed in step (\S+) with (\S+):/.exec(raw.stderrTail);
  if (failed) {
    if (failed[1] === 'Verify') {
      // Verify did not finish: the time from the end of the migration to the exit of the CLI (a lower bound of its time).
      verify = lastMigrate ? raw.wall - lastMigrate.t : NaN;
      verifyNote = `Verify failed with ${failed[2]} ~${verify.toFixed(0)} s after the migration ended (lower bound)`;
    } else verifyNote = `the run failed in ${failed[1]} with ${failed[2]}`;
  }
  return {
    ...raw,
    backup: { perTable: backupPerTable, phase: backupPhase },
    // The steps run as a graph, several at once: the migration's time is the wall of its phase, not the sum of its steps.
    migrate: { createSchema, perStep, stepsTotal, total: createSchema + (Number.isFinite(migratePhaseWall) ? migratePhaseWall : stepsTotal), phaseWall: migratePhaseWall },
    verify,
    verifyNote,
    report: num(/^Report done \(([\d.]+) s\)/),
  };
}

/** History events and state transitions (states entered) of one execution, from invocation counts. */
function historyOf(backupInv: number[], migrateInv: number[], waves = 6, verifyInv: number[] = []) {
  // Fixed: ExecutionStarted/Succeeded; tasks Preflight, FinalizeBackup, Analyse, CreateSchema, Verify, Report (5 events each);
  // Choices IsDryRun, IsCutoverRequested (2 each); Map Backup (4: Entered/Started/Succeeded/Exited); Pass StartWaves (2);
  // per wave of the migration graph: Pass PickWave 2 + Map Migrate 4 + Pass NextWave 2 + Choice IsMigrated 2.
  const fixedEvents = 2 + 6 * 5 + 2 * 2 + 4 + 2 + waves * 10;
  // Per Map item: iteration started/succeeded 2 + Pass 2 + Succeed 2; per invocation: Task 5 + Choice 2.
  const item = (inv: number) => 6 + inv * 7;
  // Verify items: PlanVerify (5) and the VerifyItems Map (4), then per item as above.
  const verifyFixed = verifyInv.length ? 5 + 4 : 0;
  const events = fixedEvents + verifyFixed + [...backupInv, ...migrateInv, ...verifyInv].reduce((a, n) => a + item(n), 0);
  // States entered: 6 tasks + 2 choices + Backup + StartWaves, 4 per wave, PlanVerify + VerifyItems; per item Pass + Succeed; per invocation Task + Choice.
  const transitions = 10 + 4 * waves + (verifyInv.length ? 2 : 0) + [...backupInv, ...migrateInv, ...verifyInv].reduce((a, n) => a + 2 + 2 * n, 0);
  return { events, transitions };
}

function machine() {
  const cpu = cpus()[0]?.model ?? 'unknown';
  const mem = `${(totalmem() / 2 ** 30).toFixed(1)} GiB`;
  const nproc = execFileSync('nproc').toString().trim();
  return { nproc, mem, cpu, node: process.version, gzip: GZIP_BINARY ? `${GZIP_BINARY} -1` : 'node zlib level 1' };
}

/** `--render results-scale-S.json`: rebuilds RESULTS.md from a saved run (e.g. after changing the report). */
function renderSaved(file: string) {
  const saved = JSON.parse(readFileSync(file, 'utf8')) as Base & { runs: (RawRun & { output: string[] })[] };
  const [inPlace, cross] = saved.runs.map(({ output, ...r }) =>
    parseRun({
      ...r,
      lines: output.map((o) => {
        const m = /^\s*([\d.]+) {2}(.*)$/s.exec(o);
        return m ? { t: Number(m[1]), text: m[2]! } : { t: NaN, text: o };
      }),
    }),
  ) as [CliRun, CliRun];
  const out = summarize(saved, inPlace, cross);
  const md = `RESULTS${/(-pg\d+)\.json$/.exec(file)?.[1] ?? ''}.md`;
  writeFileSync(path.join(__dirname, md), renderResults(out, inPlace, cross));
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  log(`re-rendered test/bench/${md} from ${file}`);
}

/**
 * The COPY | gzip floor of the source tables and the psql pipe floor into a fresh database floor_x; then floor_x and
 * the INSERT…SELECT floor's schema (the pipe floor reads which rows that floor kept) are dropped.
 */
async function copyAndPipeFloors(client: pg.Client, cl: EmbeddedCluster, url: string, connect: () => Promise<pg.Client>, sourceRows: Record<string, number>, gzip: string) {
  log(`floor 1b: COPY TO STDOUT | ${gzip} > /dev/null`);
  const gzipFloor = await copyGzipFloor(connect, SOURCE_TABLES);
  log(`  per table ${JSON.stringify(Object.fromEntries(Object.entries(gzipFloor.perTable).map(([k, v]) => [k, +v.toFixed(2)])))}; sequential ${f2(gzipFloor.sequential)} s, 2 at a time ${f2(gzipFloor.concurrent2)} s`);
  log('floor 1c: psql COPY (SELECT renamed) TO STDOUT | psql COPY FROM STDIN into database floor_x');
  await cl.createDatabase('floor_x');
  const fx = new pg.Client({ connectionString: cl.url('floor_x'), options: FLOOR_SESSION_OPTIONS });
  await fx.connect();
  const u = new URL(url);
  const pipeFloor = await psqlPipeFloor({ host: u.hostname, port: Number(u.port), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) }, 'bench', 'floor_x', fx, sourceRows);
  await fx.end();
  for (const x of pipeFloor.tables) log(`  ${x.table}: ${x.rows} rows, pipe ${f2(x.loadSeconds)} s + indexes/FKs ${f2(x.postLoadSeconds)} s`);
  log(`  total ${f2(pipeFloor.total)} s`);
  await client.query(`DROP SCHEMA ${FLOOR_SCHEMA} CASCADE`);
  await client.query('DROP DATABASE floor_x');
  return { gzipFloor, pipeFloor };
}

async function main() {
  const render = arg('render');
  if (render) return renderSaved(render);
  const benchStart = process.hrtime.bigint();
  const m = machine();
  log(`scale ${scale}, batch size ${batchSize}; ${m.nproc} CPUs (${m.cpu}), ${m.mem}, node ${m.node}`);
  let cluster: EmbeddedCluster | undefined;
  const cleanup = async () => {
    if (cluster) {
      const c = cluster;
      cluster = undefined;
      await c.stop().catch(() => undefined);
    }
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    let t = process.hrtime.bigint();
    // --explain-slow MS: every statement slower than MS ms is logged with its EXPLAIN ANALYZE (auto_explain)
    // into the file --pg-log names (default bench-postgres.log), to find out where a slow phase spends its time.
    const explainSlow = arg('explain-slow');
    const pgLog = arg('pg-log', 'bench-postgres.log')!;
    // --data-checksums on|off (default on, on every version): initdb's page checksums (cluster.ts dataChecksumFlags).
    // The versions' runs are compared, so they get the same setting: on, what initdb 18 gives a cluster made today.
    const checksumsFlag = arg('data-checksums');
    if (checksumsFlag !== undefined && checksumsFlag !== 'on' && checksumsFlag !== 'off') throw new Error(`--data-checksums takes on or off, not ${JSON.stringify(checksumsFlag)}`);
    const checksums = checksumsFlag ?? 'on';
    const initdbFlags = dataChecksumFlags(postgresVersion, checksums);
    cluster = await startBenchCluster(postgresVersion, {
      initdbFlags,
      ...(explainSlow
        ? {
            postgresFlags: ['-c', 'shared_preload_libraries=auto_explain', '-c', `auto_explain.log_min_duration=${Number(explainSlow)}`, '-c', 'auto_explain.log_analyze=on', '-c', 'auto_explain.log_buffers=on'],
            onLog: (line: string) => appendFileSync(pgLog, `${line}\n`),
          }
        : {}),
    });
    const cl = cluster;
    await cl.createDatabase('bench');
    const url = cl.url('bench');
    // The floors' sessions without JIT, as the migration's own (lambdas/io/pg.ts connect): the same settings on both sides.
    const client = new pg.Client({ connectionString: url, options: FLOOR_SESSION_OPTIONS });
    await client.connect();
    const pgVersion = String((await client.query('SHOW server_version')).rows[0].server_version);
    const dataChecksums = String((await client.query('SHOW data_checksums')).rows[0].data_checksums);
    if (dataChecksums !== checksums) throw new Error(`the bench cluster has data checksums ${dataChecksums}, not ${checksums} as asked: initdb ${initdbFlags.join(' ') || '(no checksum flag)'} did not give them`);
    log(`${postgresVersion ? `Debian PostgreSQL (/usr/lib/postgresql/${postgresVersion}/bin)` : 'embedded PostgreSQL'} ${pgVersion} on port ${cl.port}, data checksums ${dataChecksums} (${f1(secondsSince(t))} s)`);

    t = process.hrtime.bigint();
    const seed = await seedLegacyShapeA(client, { scale });
    const seedSeconds = secondsSince(t);
    const sourceRows: Record<string, number> = { ...seed.rows };
    log(`seeded in ${f1(seedSeconds)} s: ${JSON.stringify(seed.rows)}`);
    await client.query('CHECKPOINT');

    // 1a. INSERT … SELECT floor.
    log('floor 1a: INSERT … SELECT into schema floor, then secondary indexes and FKs');
    const insertFloor = await insertSelectFloor(client, sourceRows);
    for (const x of insertFloor.tables) log(`  ${x.table}: ${x.rows} rows, load ${f2(x.loadSeconds)} s + indexes/FKs ${f2(x.postLoadSeconds)} s`);
    log(`  total ${f2(insertFloor.total)} s (1-minute load average now ${loadavg()[0]!.toFixed(2)})`);
    // 1d. The bare physical floor: the same renames into tables without keys, then keys, indexes, FKs.
    log('floor 1d: INSERT … SELECT into bare tables (no keys), then keys, indexes and FKs');
    const bare = await bareFloor(client, sourceRows);
    for (const x of bare.tables) log(`  ${x.table}: ${x.rows} rows, load ${f2(x.loadSeconds)} s + keys/indexes/FKs ${f2(x.postLoadSeconds)} s`);
    log(`  total ${f2(bare.total)} s (1-minute load average now ${loadavg()[0]!.toFixed(2)})`);
    await client.query(`DROP SCHEMA ${BARE_SCHEMA} CASCADE`);
    if (process.argv.includes('--floor-only')) {
      await client.end();
      return;
    }

    // 1b, 1c: the COPY | gzip and psql pipe floors (measured again after the runs, below).
    const connect = async () => {
      const c = new pg.Client({ connectionString: url, options: FLOOR_SESSION_OPTIONS });
      await c.connect();
      return c;
    };
    const { gzipFloor, pipeFloor } = await copyAndPipeFloors(client, cl, url, connect, sourceRows, m.gzip);
    await client.query('CHECKPOINT');

    // 2. In place.
    const inPlace = await runCli('in-place', ['--source', url], url, 'bench-inplace');
    // 3. Cross-database into a fresh database of the same cluster.
    await cl.createDatabase('target_x');
    await client.query('CHECKPOINT');
    const cross = await runCli('cross-db', ['--source', url, '--target', cl.url('target_x')], cl.url('target_x'), 'bench-cross');
    // The floors again, after the runs: the machine's speed drifts by up to a third within minutes (other
    // engineers' runs share it), so each ratio is taken against the mean of the floor measured before and after.
    await client.query('CHECKPOINT');
    log('floors again, after the runs (each ratio uses the mean of before and after)');
    log('floor 1a (after): INSERT … SELECT into schema floor, then secondary indexes and FKs');
    const insertAfter = await insertSelectFloor(client, sourceRows);
    log(`  total ${f2(insertAfter.total)} s (1-minute load average now ${loadavg()[0]!.toFixed(2)})`);
    const after = await copyAndPipeFloors(client, cl, url, connect, sourceRows, m.gzip);
    await client.end();
    await cleanup();
    const benchWall = secondsSince(benchStart);

    const out = summarize(
      {
        date: new Date().toISOString(),
        scale,
        batchSize,
        machine: { ...m, postgres: pgVersion, dataChecksums, ...(checksumsFlag ? { dataChecksumsFlag: checksumsFlag } : {}), postgresSource: postgresVersion ? `Debian /usr/lib/postgresql/${postgresVersion}/bin` : 'embedded-postgres', psql: execFileSync('/usr/bin/psql', ['--version']).toString().trim() },
        seed: { rows: seed.rows, dirty: seed.dirty, seconds: seedSeconds },
        floors: { insertSelect: insertFloor, bare, copyGzip: gzipFloor, psqlPipe: pipeFloor, after: { insertSelect: insertAfter, copyGzip: after.gzipFloor, psqlPipe: after.pipeFloor } },
        benchWall,
      },
      inPlace,
      cross,
    );
    const text = renderResults(out, inPlace, cross);
    process.stdout.write(`\n${text}\n`);
    if (writeResults) {
      writeFileSync(path.join(__dirname, `RESULTS${resultSuffix}.md`), text);
      writeFileSync(path.join(__dirname, `results-scale-${scale}${resultSuffix}.json`), `${JSON.stringify(out, null, 2)}\n`);
      log(`wrote test/bench/RESULTS${resultSuffix}.md and test/bench/results-scale-${scale}${resultSuffix}.json`);
    }
    log(`bench wall time ${f1(benchWall)} s`);
    if (inPlace.exitCode !== 0 || cross.exitCode !== 0) process.exitCode = 1;
  } finally {
    await cleanup();
  }
}

type Out = {
  date: string;
  scale: number;
  batchSize: number;
  machine: Record<string, string>;
  seed: { rows: Record<string, number>; dirty?: unknown; seconds: number };
  floors: {
    insertSelect: { tables: FloorTableTiming[]; createSeconds: number; sequenceSeconds: number; total: number };
    /** Absent in results saved before the bare floor existed. */
    bare?: { tables: FloorTableTiming[]; createSeconds: number; total: number };
    copyGzip: { perTable: Record<string, number>; sequential: number; concurrent2: number };
    psqlPipe: { tables: FloorTableTiming[]; createSeconds: number; total: number };
    /** The same floors measured again after the two runs (absent in results saved before 2026-12-02 19:30). */
    after?: {
      insertSelect: { tables: FloorTableTiming[]; createSeconds: number; sequenceSeconds: number; total: number };
      copyGzip: { perTable: Record<string, number>; sequential: number; concurrent2: number };
      psqlPipe: { tables: FloorTableTiming[]; createSeconds: number; total: number };
    };
  };
  /** `floors`: the floor measured before and (where measured) after the runs; `floor` is their mean. `values`: the tool's samples; `value` their mean. */
  ratios: { what: string; value: number; values?: number[]; floor: number; floors?: number[]; ratio: number; target: number }[];
  peakRssMb: number;
  history: {
    local: Record<'inPlace' | 'cross', { events: number; transitions: number }>;
    s10: Record<'inPlace' | 'cross', { items: { name: string; seconds: number; invocations: number }[]; events: number; transitions: number }>;
  };
  benchWall: number;
};

type Base = Pick<Out, 'date' | 'scale' | 'batchSize' | 'machine' | 'seed' | 'floors' | 'benchWall'>;

/** Ratios, state transitions and the JSON document of one bench run. */
function summarize(base: Base, inPlace: CliRun, cross: CliRun) {
  const { scale } = base;
  const { after } = base.floors;
  // Each floor measured before the runs and, since 2026-12-02, again after them: the ratio is against their mean.
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const gzipOf = (g: Out['floors']['copyGzip']) => Math.min(g.sequential, g.concurrent2);
  const insertFloors = [base.floors.insertSelect.total, ...(after ? [after.insertSelect.total] : [])];
  const backupFloors = [gzipOf(base.floors.copyGzip), ...(after ? [gzipOf(after.copyGzip)] : [])];
  const pipeFloors = [base.floors.psqlPipe.total, ...(after ? [after.psqlPipe.total] : [])];
  // The backup is the same work in both runs (the source's tables to S3): with the floor measured twice, both runs' backups count.
  const backups = after ? [inPlace.backup.phase, cross.backup.phase] : [inPlace.backup.phase];
  const peakRss = Math.max(inPlace.peakRssMb, cross.peakRssMb);
  const ratio = (what: string, values: number[], floors: number[], target: number) =>
    ({ what, value: mean(values), values, floor: mean(floors), floors, ratio: mean(values) / mean(floors), target });
  const ratios = [
    ratio('migrate (in place) vs INSERT…SELECT floor', [inPlace.migrate.total], insertFloors, 1.0),
    ratio('whole run in place (wall) vs INSERT…SELECT floor', [inPlace.wall], insertFloors, 2.0),
    ratio('backup vs COPY|gzip floor', backups, backupFloors, 1.3),
    ratio(`verify vs migrate (in place)${inPlace.verifyNote ? ' — Verify did not finish, lower bound' : ''}`, [inPlace.verify], [inPlace.migrate.total], 0.3),
    ratio('cross-db migrate vs psql pipe floor', [cross.migrate.total], pipeFloors, 1.5),
  ];

  // State transitions: local (S) from the counted invocations; S=10 with the 600 s Lambda budget.
  const backupInv = (r: CliRun) => SOURCE_TABLES.map((tb) => r.backup.perTable[tb]?.invocations ?? 1);
  // A table in parts is one Map item per part (its invocations shared among them).
  const migrateInv = (r: CliRun) => Object.values(r.migrate.perStep).flatMap((s) => (s.parts ? Array.from({ length: s.parts }, (_, i) => Math.floor((s.invocations + i) / s.parts!)) : [s.invocations]));
  const verifyInv = (r: CliRun) => r.lines.flatMap((l) => { const m = /^verify .*: (\d+) invocation\(s\), [\d.]+ s done$/.exec(l.text); return m ? [Number(m[1])] : []; });
  const local = { inPlace: historyOf(backupInv(inPlace), migrateInv(inPlace), undefined, verifyInv(inPlace)), cross: historyOf(backupInv(cross), migrateInv(cross), undefined, verifyInv(cross)) };
  const factor = 10 / scale;
  const projected = (r: CliRun) => {
    const b = SOURCE_TABLES.map((tb) => ({ name: `backup ${tb}`, seconds: (r.backup.perTable[tb]?.seconds ?? 0) * factor }));
    const mg = Object.entries(r.migrate.perStep).map(([k, s]) => ({ name: `migrate ${k}`, seconds: s.seconds * factor }));
    const items = [...b, ...mg].map((x) => ({ ...x, invocations: Math.max(1, Math.ceil(x.seconds / LAMBDA_BUDGET_S)) }));
    const h = historyOf(items.slice(0, b.length).map((x) => x.invocations), items.slice(b.length).map((x) => x.invocations));
    return { items, ...h };
  };
  const s10 = { inPlace: projected(inPlace), cross: projected(cross) };

  return {
    ...base,
    runs: [inPlace, cross].map(({ lines, ...r }) => ({ ...r, output: lines.map((l) => `${l.t.toFixed(1).padStart(7)}  ${l.text}`) })),
    ratios,
    peakRssMb: peakRss,
    history: { local, s10 },
  };
}

function table(rows: string[][]): string {
  const head = `| ${rows[0]!.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |\n|${rows[0]!.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`;
  return [head, ...rows.slice(1).map((r) => `| ${r.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`)].join('\n');
}

function renderResults(o: Out, inPlace: CliRun, cross: CliRun): string {
  const L: string[] = [];
  const ok = (r: number, t: number) => (Number.isFinite(r) ? (r <= t ? 'met' : '**missed**') : 'n/a');
  L.push(`# Benchmark: tracetrack-migrate vs the floors (scale ${o.scale})`, '');
  const pgFlag = /^Debian .*\/(\d+)\/bin$/.exec(o.machine.postgresSource ?? '')?.[1];
  L.push(`Measured ${o.date} by \`npm run bench -- --scale ${o.scale}${pgFlag ? ` --postgres ${pgFlag}` : ''}${o.machine.dataChecksumsFlag ? ` --data-checksums ${o.machine.dataChecksumsFlag}` : ''}\` (test/bench/bench.ts, floors in test/bench/floor.ts); raw figures in test/bench/results-scale-${o.scale}${pgFlag ? `-pg${pgFlag}` : ''}.json.`, '');
  L.push('## Machine', '');
  L.push(`- CPUs: ${o.machine.nproc} × ${o.machine.cpu}`, `- memory: ${o.machine.mem}`, `- PostgreSQL: ${o.machine.postgres} (${o.machine.postgresSource ?? 'embedded-postgres'}, fsync=off, synchronous_commit=off, full_page_writes=off, default shared_buffers${o.machine.dataChecksums ? `, data checksums ${o.machine.dataChecksums}` : ''}); client ${o.machine.psql}`, `- node ${o.machine.node}; gzip floor: ${o.machine.gzip}`, '');
  L.push('## Data', '');
  L.push(`Shape A from lib/runner/demo-seed.ts at scale ${o.scale}: ${Object.entries(o.seed.rows).map(([k, v]) => `${v.toLocaleString('en-US')} ${k}`).join(', ')} (seeded in ${f1(o.seed.seconds)} s, not counted). Migration: \`node --import tsx bin/cli.ts run --source URL [--target URL2] --backup-dir TMP --report FILE --batch-size ${o.batchSize}\`, local time budget (5 s per invocation).`, '');
  L.push('## Ratios to the floor', '');
  const samples = (xs: number[] | undefined, m: number) => (xs && xs.length > 1 ? `${f1(m)} (${xs.map(f1).join(', ')})` : f1(m));
  L.push(table([['measure', 'seconds', 'floor s', 'ratio', 'target', ''], ...o.ratios.map((r) => [r.what, samples(r.values, r.value), samples(r.floors, r.floor), f2(r.ratio), `≤ ${r.target}`, /lower bound/.test(r.what) && r.ratio <= r.target ? 'unknown' : ok(r.ratio, r.target)]), ['peak RSS of the Node process (max of both runs)', `${Math.round(o.peakRssMb)} MB`, '', '', '≤ 300 MB', ok(o.peakRssMb, 300)]]));
  if (o.floors.after) {
    const first = (what: string) => o.ratios.find((r) => r.what.startsWith(what))!;
    const againstFirst = [
      ['migrate', first('migrate').value / first('migrate').floors![0]!],
      ['whole run', first('whole run').value / first('whole run').floors![0]!],
      ['backup (in place)', (first('backup').values![0]!) / first('backup').floors![0]!],
      ['cross-db', first('cross-db').value / first('cross-db').floors![0]!],
    ] as const;
    L.push('', `Floors in brackets: measured before the two runs, then again after them; the ratio is against their mean (the machine's speed drifts by up to a third within minutes). The backup: the mean of both runs' backup phases (the same work: the source's tables to S3). Against the floors before the runs alone, as the bench measured until 2026-12-02: ${againstFirst.map(([k, v]) => `${k} ${f2(v)}`).join(', ')}.`);
  }
  L.push('', `Whole runs (wall, incl. preflight/analyse/report and Node start): in place ${f1(inPlace.wall)} s (backup ${f1(inPlace.backup.phase)}, migrate ${f1(inPlace.migrate.total)}, verify ${f1(inPlace.verify)}), cross-database ${f1(cross.wall)} s (backup ${f1(cross.backup.phase)}, migrate ${f1(cross.migrate.total)}, verify ${f1(cross.verify)}). Peak RSS: in place ${Math.round(inPlace.peakRssMb)} MB, cross-database ${Math.round(cross.peakRssMb)} MB. Exit codes ${inPlace.exitCode} / ${cross.exitCode}${[inPlace, cross].filter((r) => r.verifyNote).map((r) => `; ${r.label}: ${r.verifyNote}`).join('')}. 1-minute load average before/after: in place ${f2(inPlace.loadBefore)}/${f2(inPlace.loadAfter)}, cross-database ${f2(cross.loadBefore)}/${f2(cross.loadAfter)} (2 CPUs; other engineers' test runs share this machine, so a load above ~1 means the bench competed for CPU).`, '');
  L.push('How each figure is taken: *migrate* = CreateSchema task + the wall of the Migrate phase (from \"CreateSchema done\" to the last step\'s \"done\" line; the steps run as a dependency graph, several at once, so their seconds add up to more); *backup* = wall from the Preflight line to "FinalizeBackup done" (two tables at a time, as the workflow does); *verify* = from PlanVerify\'s start to the Verify task\'s end (its items run several at once). The INSERT…SELECT floor includes creating the keyed tables, every table\'s secondary indexes + FKs + ANALYZE, and the sequences; the backup floor is the faster of sequential and two-at-a-time.', '');
  if (o.floors.bare) {
    const b = o.floors.bare;
    L.push(`Bare physical floor (same renames into tables without keys, then per table primary key, unique keys, indexes, FKs, ANALYZE): ${f1(b.total)} s (load ${f1(b.tables.reduce((a, x) => a + x.loadSeconds, 0))} s + keys/indexes/FKs ${f1(b.tables.reduce((a, x) => a + x.postLoadSeconds, 0))} s); migrate (in place) / bare floor = ${f2(inPlace.migrate.total / b.total)}, INSERT…SELECT floor / bare floor = ${f2(o.floors.insertSelect.total / b.total)}. Per table (load + keys/idx/FK): ${b.tables.map((x) => `${x.table} ${f2(x.loadSeconds)} + ${f2(x.postLoadSeconds)}`).join(', ')}.`, '');
  }

  L.push('## Migrate, per table (in place)', '');
  const fl = new Map(o.floors.insertSelect.tables.map((x) => [x.table, x]));
  const perTable = (r: CliRun, floors: Map<string, FloorTableTiming>) => {
    const rows: string[][] = [['step', 'source rows', 'migrated (+derived)', 'rejected', 'invocations', 'migrate s', 'rows/s', 'floor s (load + idx/FK)', 'floor rows/s', 'ratio']];
    for (const [step, s] of Object.entries(r.migrate.perStep)) {
      const f = floors.get(step);
      const src = s.source ?? 0;
      rows.push([
        s.parts ? `${step} (${s.parts} parts)` : step,
        s.source === undefined ? '' : src.toLocaleString('en-US'),
        s.migrated === undefined ? '' : `${(s.migrated + (s.derived ?? 0)).toLocaleString('en-US')}`,
        s.rejected === undefined ? '' : String(s.rejected),
        String(s.invocations),
        f2(s.seconds),
        src ? rate(src, s.seconds) : '',
        f ? `${f2(f.seconds)} (${f2(f.loadSeconds)} + ${f2(f.postLoadSeconds)})` : '',
        f ? rate(f.sourceRows, f.seconds) : '',
        f ? f2(s.seconds / f.seconds) : '',
      ]);
    }
    rows.push(['CreateSchema', '', '', '', '1', f2(r.migrate.createSchema), '', '', '', '']);
    return table(rows);
  };
  L.push(perTable(inPlace, fl), '');
  L.push(`Floor extras: create tables ${f2(o.floors.insertSelect.createSeconds)} s, sequences ${f2(o.floors.insertSelect.sequenceSeconds)} s; floor total ${f2(o.floors.insertSelect.total)} s. Floor rows/s use the source table's rows (link: bag rows). A table in key-range parts (scan (2 parts)): the invocations of all its parts, the seconds of the longer part (they run side by side).`, '');

  L.push('## Backup, per table', '');
  const bt: string[][] = [['table', 'rows', 'in place s', 'rows/s', 'invocations', 'cross-db s', 'COPY|gzip s', 'floor rows/s', 'ratio (in place)']];
  for (const tb of SOURCE_TABLES) {
    const b = inPlace.backup.perTable[tb];
    const c = cross.backup.perTable[tb];
    const g = o.floors.copyGzip.perTable[tb] ?? NaN;
    bt.push([tb, (b?.rows ?? 0).toLocaleString('en-US'), f2(b?.seconds), rate(b?.rows ?? 0, b?.seconds ?? 0), String(b?.invocations ?? '-'), f2(c?.seconds), f2(g), rate(o.seed.rows[tb] ?? 0, g), f2((b?.seconds ?? NaN) / g)]);
  }
  L.push(table(bt), '');
  const gzipAfter = o.floors.after?.copyGzip;
  L.push(`Backup phase wall: in place ${f1(inPlace.backup.phase)} s, cross-db ${f1(cross.backup.phase)} s; COPY|gzip floor sequential ${f2(o.floors.copyGzip.sequential)} s, two at a time ${f2(o.floors.copyGzip.concurrent2)} s${gzipAfter ? ` before the runs, ${f2(gzipAfter.sequential)} s and ${f2(gzipAfter.concurrent2)} s after them` : ''}. Per-table backup seconds are from the first invocation's start to the table's last progress line (two tables run at once); the per-table floor is the one before the runs.`, '');

  L.push('## Cross-database, per table', '');
  L.push(perTable(cross, new Map(o.floors.psqlPipe.tables.map((x) => [x.table, x]))), '');
  L.push(`psql pipe floor: create tables ${f2(o.floors.psqlPipe.createSeconds)} s, total ${f2(o.floors.psqlPipe.total)} s (each table: \`psql -c "COPY (SELECT renamed) TO STDOUT" | psql -c "COPY floor.t FROM STDIN"\`, then its indexes/FKs).`, '');

  L.push('## Verify', '');
  L.push(`In place ${f1(inPlace.verify)} s = ${f2(inPlace.verify / inPlace.migrate.total)} × migrate; cross-database ${f1(cross.verify)} s = ${f2(cross.verify / cross.migrate.total)} × migrate.`, '');
  for (const r of [inPlace, cross]) if (r.verifyNote) L.push(`**${r.label}: ${r.verifyNote}.** Its figure above is the time from the end of the migration to the failure, so a lower bound.`, '');

  L.push('## State transitions', '');
  L.push(`The CLI does not print the execution's counts, so they are computed from the invocations it reports (one progress line per BackupTable/MigrateStep invocation). History events: 2 (execution) + 6 single tasks × 5 + 2 Choices × 2 + Backup Map 4 + StartWaves 2 = 42 fixed, + 10 per wave of the migration graph (PickWave 2, Migrate Map 4, NextWave 2, IsMigrated 2; 6 waves counted) = 102; per Map item (5 backup tables + each migrate step) 2 (iteration) + 2 (Pass) + 2 (Succeed) + 7 per invocation (Task 5 + Choice 2). States entered (AWS's billed transitions): 10 fixed + 4 per wave + per item 2 + 2 per invocation.`, '');
  L.push(`Local (scale ${o.scale}, 5 s budget): in place ${o.history.local.inPlace.events} history events / ${o.history.local.inPlace.transitions} states entered; cross-database ${o.history.local.cross.events} / ${o.history.local.cross.transitions}.`, '');
  const s10 = o.history.s10.inPlace;
  L.push(`Projected at scale 10 with the deployed 600 s budget (seconds × ${10 / o.scale}, invocations = max(1, ceil(s / 600))), in place:`, '');
  L.push(table([['item', 's at S=10', 'invocations'], ...s10.items.map((x) => [x.name, f1(x.seconds), String(x.invocations)])]), '');
  const inv = s10.items.map((x) => x.invocations);
  L.push(`History events = 102 + Σ(6 + 7 × inv) = 102 + ${inv.length} × 6 + 7 × ${inv.reduce((a, b) => a + b, 0)} = **${s10.events}**; states entered = 34 + Σ(2 + 2 × inv) = **${s10.transitions}** (cross-database: ${o.history.s10.cross.events} / ${o.history.s10.cross.transitions}). Far under the 25,000-event history limit.`, '');

  L.push('## Where the time goes', '');
  const steps = Object.entries(inPlace.migrate.perStep).sort((a, b) => b[1].seconds - a[1].seconds);
  L.push(`In place, migrate steps by time: ${steps.map(([k, s]) => `${k} ${f1(s.seconds)} s`).join(', ')}; CreateSchema ${f1(inPlace.migrate.createSchema)} s.`);
  const csteps = Object.entries(cross.migrate.perStep).sort((a, b) => b[1].seconds - a[1].seconds);
  L.push(`Cross-database: ${csteps.map(([k, s]) => `${k} ${f1(s.seconds)} s`).join(', ')}.`, '');
  L.push('Checkpoints (tracetrack._migration_checkpoint, per step and source table: batches, seconds):', '');
  L.push(table([['run', 'step', 'source table', 'batches', 'seconds', 'migrated', 'rejected'], ...[inPlace, cross].flatMap((r) => r.checkpoints.map((c) => [r.label, c.step, c.source_table, String(c.batches), f2(c.seconds), String(c.migrated), String(c.rejected)]))]), '');
  L.push(`Bench wall time: ${f1(o.benchWall)} s (incl. seeding ${f1(o.seed.seconds)} s).`, '');
  // Findings written by hand (plans, causes, fixes on other PostgreSQL versions), kept across re-renders.
  const findings = path.join(__dirname, 'RESULTS-postgres-versions.md');
  if (existsSync(findings)) L.push(readFileSync(findings, 'utf8').trimEnd(), '');
  return `${L.join('\n')}\n`;
}

// --live: the live-migration figures (capture overhead, write freeze), test/bench/live.ts.
(process.argv.includes('--live') ? import('./live').then((m) => m.mainLive()) : main()).catch((err) => {
  console.error(err);
  process.exit(1);
});
