import { spawn } from 'node:child_process';
import { connect as tcpConnect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, type CliResult } from '../support/cli';
import { createTestDatabase, withTestClient } from '../support/pg';

/**
 * tracetrack-migrate as a user runs it: a child process, real PostgreSQL, the local S3 server the
 * CLI starts itself. What is checked is what the user sees: exit status, stdout/stderr, files.
 */

const ROOT = path.join(__dirname, '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const expectA = JSON.parse(readFileSync(path.join(FIXTURES, 'shape-a.expect.json'), 'utf8')) as {
  source_tables: Record<string, number>;
  targets: Record<string, { migrated: number; rejected: number; derived?: number }>;
};
/** Plaintext passwords of the fixtures: must never be printed. */
const FIXTURE_PLAINTEXTS = ['hunter2', 'correct horse'];


function assertNoSecrets(result: CliResult, url: string): void {
  const password = decodeURIComponent(new URL(url).password);
  const out = result.stdout + result.stderr;
  if (password) expect(out).not.toContain(password);
  for (const p of FIXTURE_PLAINTEXTS) expect(out).not.toContain(p);
}

async function loadFixture(url: string, file: string, extraSql = ''): Promise<void> {
  const sql = readFileSync(path.join(FIXTURES, file), 'utf8');
  await withTestClient(url, async (c) => {
    await c.query(sql);
    if (extraSql) await c.query(extraSql);
  });
}

async function count(url: string, sql: string): Promise<number> {
  return withTestClient(url, async (c) => Number((await c.query(sql)).rows[0].n));
}

let work: string;
beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-cli-'));
});
afterAll(() => {
  rmSync(work, { recursive: true, force: true });
});

describe('tracetrack-migrate (CLI, e2e)', () => {
  it('refuses to run without a source, saying to pass --source or --demo (exit 2)', async () => {
    const r = await cli(['run', '--backup-dir', path.join(work, 'none')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--source/);
    expect(r.stderr).toMatch(/--demo/);
    const bad = await cli(['run', '--demo', '--batch-size', 'many']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--batch-size/);
    const unknown = await cli(['run', '--sauce', 'x']);
    expect(unknown.code).toBe(2);
  });

  it('runs the demo: embedded PostgreSQL, seeded shape A, whole workflow, summary, everything stopped (exit 0)', async () => {
    const started = Date.now();
    const r = await cli(['run', '--demo', '--scale', '0.003', '--backup-dir', path.join(work, 'demo-s3'), '--report', path.join(work, 'demo-report.json')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/table\s+source rows\s+migrated\s+derived\s+rejected\s+seconds/);
    expect(r.stdout).toMatch(/^bag\s+\d+\s+\d+/m);
    expect(r.stdout).toMatch(/completed in/);
    expect(r.stdout).toMatch(/Backup: s3:\/\/tracetrack-backups\/runs\/.+\/backup\//);
    expect(r.stdout).toMatch(/Demo: stopping the embedded PostgreSQL/);
    // Not a TTY: plain progress lines, one per update.
    expect(r.stdout).toMatch(/^migrate bag: [\d,]+ rows, .* done$/m);
    expect(r.stdout).not.toContain('\r');
    expect(r.stdout).not.toContain('tracetrack-local');
    const report = JSON.parse(readFileSync(path.join(work, 'demo-report.json'), 'utf8')) as { status: string };
    expect(report.status).toBe('completed');
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('runs the whole workflow with scan in key-range parts (scale 0.003, batch size 500: 9,000 scans in three parts), one summary row for the table, verified', async () => {
    const reportFile = path.join(work, 'parts-report.json');
    const r = await cli(['run', '--demo', '--scale', '0.003', '--batch-size', '500', '--backup-dir', path.join(work, 'parts-s3'), '--report', reportFile]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const part of ['scan:1/3', 'scan:2/3', 'scan:3/3']) expect(r.stdout).toMatch(new RegExp(`^migrate ${part}: [\\d,]+ rows, .* done$`, 'm'));
    expect(r.stdout).toMatch(/^scan\s+9000\s+\d+\s+0\s+\d+\s+[\d.]+$/m);
    expect(r.stdout).not.toMatch(/^scan:/m);
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { status: string; tables: Record<string, { migrated: number; rejected: number }>; checks: { name: string; passed: boolean }[] };
    expect(report.status).toBe('completed');
    expect(report.tables.scan!.migrated + report.tables.scan!.rejected).toBe(9000);
    expect(report.checks.length).toBeGreaterThan(20);
    expect(report.checks.filter((c) => !c.passed)).toEqual([]);
  });

  it('on SIGINT, stops the embedded PostgreSQL it started and exits 130', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bin', 'cli.ts'), 'run', '--demo', '--scale', '0.05', '--backup-dir', path.join(work, 'sigint-s3')], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        stdout += String(d);
        const m = /^Run .*127\.0\.0\.1:(\d+)\//m.exec(stdout);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', () => reject(new Error(`exited before the run started:\n${stdout}\n${stderr}`)));
    });
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(130);
    expect(stderr).toContain('SIGINT');
    expect(stderr).not.toContain('tracetrack-local');
    const refused = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port }, () => {
        socket.destroy();
        resolve(false);
      });
      socket.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });

  describe('on the shape-A fixture', () => {
    let db: Awaited<ReturnType<typeof createTestDatabase>>;
    const s3dir = () => path.join(work, 'fixture-s3');
    let runId: string;

    beforeAll(async () => {
      db = await createTestDatabase('cli_a');
      await loadFixture(db.url, 'shape-a.sql');
    });
    afterAll(async () => {
      await db?.drop();
    });

    it('analyze --json prints the plan with its decisions, and writes nothing', async () => {
      const r = await cli(['analyze', '--source', db.url, '--json']);
      expect(r.code).toBe(0);
      const plan = JSON.parse(r.stdout) as { decisions: unknown[]; tables: { target: string }[]; problems: string[] };
      expect(plan.decisions.length).toBeGreaterThan(10);
      expect(plan.tables.map((t) => t.target)).toContain('bag');
      expect(plan.problems).toEqual([]);
      expect(await count(db.url, `SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'tracetrack'`)).toBe(0);
      assertNoSecrets(r, db.url);
      const text = await cli(['analyze', '--source', db.url]);
      expect(text.code).toBe(0);
      expect(text.stdout).toContain('bag');
      assertNoSecrets(text, db.url);
    });

    it('runs with --source, --backup-dir, --batch-size and --report; the report has the expected counts (exit 0)', async () => {
      const reportFile = path.join(work, 'fixture-report.json');
      const r = await cli(['run', '--source', db.url, '--backup-dir', s3dir(), '--batch-size', '5', '--report', reportFile]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      assertNoSecrets(r, db.url);
      const report = JSON.parse(readFileSync(reportFile, 'utf8')) as {
        runId: string;
        status: string;
        tables: Record<string, { migrated: number; rejected: number; derived: number }>;
        sources: Record<string, { rows: number; backupKey: string; sha256: string }>;
        checks: { name: string; passed: boolean }[];
      };
      runId = report.runId;
      expect(report.status).toBe('completed');
      for (const [table, want] of Object.entries(expectA.targets)) {
        const got = report.tables[table] ?? { migrated: 0, rejected: 0, derived: 0 };
        expect({ table, migrated: got.migrated, rejected: got.rejected, derived: got.derived ?? 0 }).toEqual({
          table, migrated: want.migrated, rejected: want.rejected, derived: want.derived ?? 0,
        });
      }
      for (const [table, rows] of Object.entries(expectA.source_tables)) {
        expect(report.sources[table]).toMatchObject({ rows });
        expect(report.sources[table]!.sha256).toMatch(/^[0-9a-f]{64}$/);
        expect(report.sources[table]!.backupKey).toContain(`runs/${runId}/`);
      }
      expect(report.checks.length).toBeGreaterThan(0);
      expect(report.checks.every((c) => c.passed)).toBe(true);
      // Batches of 5: the bag step took several.
      expect(await count(db.url, `SELECT count(*) AS n FROM tracetrack._migration_checkpoint WHERE step = 'bag'`)).toBeGreaterThan(3);
      expect(await count(db.url, 'SELECT count(*) AS n FROM tracetrack.bag')).toBe(expectA.targets.bag!.migrated);
    });

    it('restores the latest run into a schema: every table equals the source (EXCEPT ALL both ways empty)', async () => {
      const r = await cli(['restore', '--target', db.url, '--schema', 'restored', '--backup-dir', s3dir()]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(runId);
      assertNoSecrets(r, db.url);
      for (const table of Object.keys(expectA.source_tables)) {
        const q = (a: string, b: string) => `SELECT count(*) AS n FROM (SELECT * FROM ${a}."${table}" EXCEPT ALL SELECT * FROM ${b}."${table}") d`;
        expect(await count(db.url, q('public', 'restored'))).toBe(0);
        expect(await count(db.url, q('restored', 'public'))).toBe(0);
      }
      const one = await cli(['restore', '--target', db.url, '--schema', 'restored_one', '--backup-dir', s3dir(), '--run-id', runId, '--table', 'bag']);
      expect(one.code).toBe(0);
      expect(await count(db.url, `SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'restored_one'`)).toBe(1);
      const missing = await cli(['restore', '--target', db.url, '--schema', 'x', '--backup-dir', path.join(work, 'empty-s3')]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toMatch(/No finished backup/);
    });

    it('cuts over and rolls back', async () => {
      const cut = await cli(['cutover', '--target', db.url, '--run-id', runId]);
      expect(cut.stderr).toBe('');
      expect(cut.code).toBe(0);
      expect(cut.stdout).toMatch(/cut-over/);
      assertNoSecrets(cut, db.url);
      // The new bag table (with its qr_id column) is now the application's.
      expect(await count(db.url, `SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'bag' AND column_name = 'qr_id'`)).toBe(1);
      const back = await cli(['rollback', '--target', db.url, '--run-id', runId]);
      expect(back.code).toBe(0);
      expect(back.stdout).toMatch(/rolled-back/);
      expect(await count(db.url, `SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'bag' AND column_name = 'qr_code'`)).toBe(1);
    });
  });

  it('migrates into another database with --target; the source database gets no target schema', async () => {
    const source = await createTestDatabase('cli_src');
    const target = await createTestDatabase('cli_dst');
    try {
      await loadFixture(source.url, 'shape-a.sql');
      const r = await cli(['run', '--source', source.url, '--target', target.url, '--backup-dir', path.join(work, 'xdb-s3')]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      assertNoSecrets(r, target.url);
      expect(await count(target.url, 'SELECT count(*) AS n FROM tracetrack.bag')).toBe(expectA.targets.bag!.migrated);
      expect(await count(source.url, `SELECT count(*) AS n FROM pg_namespace WHERE nspname = 'tracetrack'`)).toBe(0);
    } finally {
      await source.drop();
      await target.drop();
    }
  });

  describe('on a source with an unknown table', () => {
    let db: Awaited<ReturnType<typeof createTestDatabase>>;
    beforeAll(async () => {
      db = await createTestDatabase('cli_unk');
      await loadFixture(db.url, 'shape-a.sql', `CREATE TABLE mystery (id int PRIMARY KEY, what text); INSERT INTO mystery VALUES (1, 'x'), (2, 'y');`);
    });
    afterAll(async () => {
      await db?.drop();
    });

    it('analyze exits 2 naming the table; --skip-table fixes it', async () => {
      const r = await cli(['analyze', '--source', db.url]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('mystery');
      expect(r.stderr).toMatch(/--skip-table/);
      const skipped = await cli(['analyze', '--source', db.url, '--skip-table', 'mystery', '--json']);
      expect(skipped.code).toBe(0);
      expect((JSON.parse(skipped.stdout) as { skippedTables: string[] }).skippedTables).toContain('mystery');
    });

    it('a failed run names the step and how to resume; rerun with --run-id and a --mapping file succeeds without duplicates', async () => {
      const s3 = path.join(work, 'resume-s3');
      const runId = 'cli-resume-1';
      const failed = await cli(['run', '--source', db.url, '--backup-dir', s3, '--run-id', runId]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/failed in step Analyse with PlanError/);
      expect(failed.stderr).toContain('mystery');
      expect(failed.stderr).toContain(`--run-id ${runId}`);
      assertNoSecrets(failed, db.url);

      const mapping = path.join(work, 'mapping.json');
      writeFileSync(mapping, JSON.stringify({ skipTables: ['mystery'] }));
      const reportFile = path.join(work, 'resume-report.json');
      const resumed = await cli(['run', '--source', db.url, '--backup-dir', s3, '--run-id', runId, '--mapping', mapping, '--report', reportFile]);
      expect(resumed.stderr).toBe('');
      expect(resumed.code).toBe(0);
      const report = JSON.parse(readFileSync(reportFile, 'utf8')) as { runId: string; tables: Record<string, { migrated: number }> };
      expect(report.runId).toBe(runId);
      expect(report.tables.bag!.migrated).toBe(expectA.targets.bag!.migrated);
      expect(await count(db.url, 'SELECT count(*) AS n FROM tracetrack.bag')).toBe(expectA.targets.bag!.migrated);
      expect(await count(db.url, 'SELECT count(*) AS n FROM tracetrack.scan')).toBe(expectA.targets.scan!.migrated);

      // The same run id again: everything is done, nothing is duplicated.
      const again = await cli(['run', '--source', db.url, '--backup-dir', s3, '--run-id', runId, '--mapping', mapping]);
      expect(again.code).toBe(0);
      expect(await count(db.url, 'SELECT count(*) AS n FROM tracetrack.bag')).toBe(expectA.targets.bag!.migrated);
      expect(await count(db.url, 'SELECT count(*) AS n FROM tracetrack.user')).toBe(expectA.targets.user!.migrated);
    });

    it('refuses an invalid mapping file before starting (exit 2)', async () => {
      const mapping = path.join(work, 'bad-mapping.json');
      writeFileSync(mapping, JSON.stringify({ tables: { mystery: 'nowhere' } }));
      const r = await cli(['run', '--source', db.url, '--backup-dir', path.join(work, 'bad-s3'), '--mapping', mapping]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('nowhere');
    });
  });
});
