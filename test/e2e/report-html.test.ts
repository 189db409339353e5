import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, ROOT } from '../support/cli';
import { withTestClient } from '../support/pg';

/**
 * The demo as a newcomer meets it: the printed report.html opened in a real browser (Debian's
 * headless Chromium, never a downloaded one), its numbers read off the page and compared with
 * report.json; the printed rejects file; `rejects` on the demo's S3 object; `--keep`.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

interface Report {
  runId: string;
  status: string;
  tables: Record<string, { migrated: number; rejected: number; derived: number }>;
  rejects: { key: string; rows: number };
  rejectGroups: { target: string; source: string; reason: string; count: number; samples: { sourceKey: string }[] }[];
  checks: { name: string; passed: boolean }[];
  readiness: { counts: Record<string, number> };
  steps: Record<string, unknown>;
}

let work: string;
let demo: Awaited<ReturnType<typeof cli>>;
let report: Report;
let htmlFile: string;
let rejectsFile: string;
const backupDir = () => path.join(work, 's3');

beforeAll(async () => {
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-html-'));
  demo = await cli(['run', '--demo', '--scale', '0.003', '--backup-dir', backupDir(), '--report', path.join(work, 'report.json')]);
  report = JSON.parse(readFileSync(path.join(work, 'report.json'), 'utf8')) as Report;
  htmlFile = /^Open the report in a browser: (.+)$/m.exec(demo.stdout)?.[1] ?? '';
  rejectsFile = /^Rejected rows \(\d+, CSV, no secret columns\): (.+)$/m.exec(demo.stdout)?.[1] ?? '';
}, 180_000);
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** The page in headless Chromium with a fresh profile; every request it makes is recorded. */
async function openInChromium<T>(file: string, fn: (page: Awaited<ReturnType<BrowserContext['newPage']>>, requests: string[]) => Promise<T>): Promise<T> {
  const profile = mkdtempSync(path.join(work, 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, offline: true });
  try {
    const page = await context.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(file).toString(), { waitUntil: 'load' });
    return await fn(page, requests);
  } finally {
    await context.close();
  }
}

const num = (text: string | null) => Number((text ?? '').replace(/[,\s]/g, ''));

describe('the demo leaves something to look at', () => {
  it('prints where report.html and the rejects file are, as ordinary files; --report FILE gets report.html beside it', () => {
    expect(demo.stderr).toBe('');
    expect(demo.code).toBe(0);
    expect(htmlFile).toBe(path.join(work, 'reports', report.runId, 'report.html'));
    expect(statSync(htmlFile).isFile()).toBe(true);
    expect(existsSync(path.join(work, 'report.html'))).toBe(true);
    expect(readFileSync(path.join(work, 'report.html'), 'utf8')).toBe(readFileSync(htmlFile, 'utf8'));
    const lines = readFileSync(rejectsFile, 'utf8').trimEnd().split('\n');
    expect(lines[0]).toBe('run_id,target_table,source_table,source_key,reason,row');
    expect(report.rejects.rows).toBeGreaterThan(0);
    expect(lines.length - 1).toBe(report.rejects.rows);
    expect(statSync(rejectsFile).mode & 0o077).toBe(0);
  });

  it('report.html in headless Chromium: no network, and every number on the page equals report.json', async () => {
    const html = readFileSync(htmlFile, 'utf8');
    // No secret: no plaintext legacy password, no hash.
    expect(html).not.toMatch(/plain-\d+/);
    expect(html).not.toContain('scrypt:');
    expect(html).not.toMatch(/<script|<link|https?:\/\//i);

    await openInChromium(htmlFile, async (page, requests) => {
      expect(await page.title()).toContain(report.runId);
      expect(await page.getAttribute('body', 'data-status')).toBe(report.status);
      // Tables: every target table of the report, each number as shown (text) and as marked (data-value).
      const rows = await page.$$eval('#tables tbody tr', (trs) =>
        trs.map((tr) => ({
          table: tr.getAttribute('data-table'),
          cells: Object.fromEntries([...tr.querySelectorAll('td[data-field]')].map((td) => [td.getAttribute('data-field'), { text: td.textContent, value: td.getAttribute('data-value') }])),
          bars: tr.querySelectorAll('svg rect').length,
        })),
      );
      expect(rows.map((r) => r.table).sort()).toEqual(Object.keys(report.tables).sort());
      for (const r of rows) {
        const want = report.tables[r.table!]!;
        const got = (f: string) => num(r.cells[f]!.text);
        expect({ table: r.table, migrated: got('migrated'), derived: got('derived'), rejected: got('rejected'), source: got('source') }).toEqual({
          table: r.table, migrated: want.migrated, derived: want.derived, rejected: want.rejected, source: want.migrated + want.derived + want.rejected,
        });
        for (const f of ['migrated', 'derived', 'rejected']) expect(Number(r.cells[f]!.value)).toBe(num(r.cells[f]!.text));
        expect(r.bars).toBeGreaterThanOrEqual(2);
      }
      // Rejects: the groups with their counts, adding up to the report's total.
      expect(num(await page.textContent('[data-field="reject-total"]'))).toBe(report.rejects.rows);
      const groups = await page.$$eval('[data-reject-group]', (trs) =>
        trs.map((tr) => ({ key: tr.getAttribute('data-reject-group'), count: tr.querySelector('[data-field="count"]')!.textContent, samples: tr.querySelectorAll('.samples li').length })),
      );
      expect(groups.map((g) => ({ key: g.key, count: num(g.count), samples: g.samples }))).toEqual(
        report.rejectGroups.map((g) => ({ key: `${g.target}/${g.source}/${g.reason}`, count: g.count, samples: g.samples.length })),
      );
      expect(groups.reduce((a, g) => a + num(g.count), 0)).toBe(report.rejects.rows);
      // Verification: every check with its outcome.
      const checks = await page.$$eval('[data-check]', (trs) => trs.map((tr) => ({ name: tr.getAttribute('data-check'), passed: tr.getAttribute('data-passed') === 'true' })));
      expect(checks).toEqual(report.checks.map((c) => ({ name: c.name, passed: c.passed })));
      expect(num(await page.textContent('[data-field="checks-passed"]'))).toBe(report.checks.filter((c) => c.passed).length);
      // Readiness counts.
      const readiness = await page.$$eval('[data-readiness]', (trs) => trs.map((tr) => [tr.getAttribute('data-readiness'), tr.querySelector('[data-field="count"]')!.textContent]));
      for (const [key, text] of readiness) expect({ key, n: num(text) }).toEqual({ key, n: report.readiness.counts[key!] ?? 0 });
      // The timeline: a bar for every migration step of the run.
      const steps = await page.$$eval('svg.timeline [data-step]', (gs) => gs.map((g) => g.getAttribute('data-step')));
      for (const s of Object.keys(report.steps).filter((k) => k.startsWith('migrate:'))) expect(steps).toContain(s);
      // Mapping: the plan's decisions and a section per target table.
      const plan = JSON.parse(readFileSync(path.join(backupDir(), 'tracetrack-backups', 'runs', report.runId, 'plan.json._S3rver_object'), 'utf8')) as { decisions: unknown[]; tables: { target: string }[] };
      expect(await page.$$eval('tr[data-decision]', (trs) => trs.length)).toBe(plan.decisions.length);
      expect(await page.$$eval('section.map', (s) => s.map((x) => x.getAttribute('data-target')))).toEqual(plan.tables.map((t) => t.target));
      expect(requests.every((u) => u.startsWith('file://'))).toBe(true);
      await page.setViewportSize({ width: 1200, height: 900 });
      await page.screenshot({ path: path.join(work, 'report.png'), fullPage: true });
      if (process.env.REPORT_SCREENSHOT) await page.screenshot({ path: process.env.REPORT_SCREENSHOT, fullPage: true });
    });
  });

  it('rejects lists the demo run\'s rejected rows from its S3 object, without secret columns; --table and --reason filter', async () => {
    const all = await cli(['rejects', '--backup-dir', backupDir(), '--format', 'jsonl']);
    expect(all.code).toBe(0);
    const rows = all.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { run_id: string; target_table: string; reason: string; row: Record<string, unknown> | null });
    expect(rows.length).toBe(report.rejects.rows);
    expect(rows.every((r) => r.run_id === report.runId)).toBe(true);
    expect(all.stdout).not.toMatch(/"password(_hash)?"\s*:/);
    expect(all.stdout).not.toMatch(/plain-\d+/);
    expect(all.stderr).toContain(`--run-id ${report.runId} --retry-rejects`);
    const bags = await cli(['rejects', '--backup-dir', backupDir(), '--run-id', report.runId, '--table', 'bag', '--reason', 'negative weight']);
    expect(bags.code).toBe(0);
    const csv = bags.stdout.trimEnd().split('\n');
    expect(csv[0]).toBe('run_id,target_table,source_table,source_key,reason,row');
    const want = rows.filter((r) => r.target_table === 'bag' && r.reason.includes('negative weight')).length;
    expect(want).toBeGreaterThan(0);
    expect(csv.length - 1).toBe(want);
    const bad = await cli(['rejects', '--backup-dir', backupDir(), '--format', 'xml']);
    expect(bad.code).toBe(2);
  });

  it('--keep keeps the embedded database running with its URL printed until Ctrl-C, then stops it (exit 0)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bin', 'cli.ts'), 'run', '--demo', '--scale', '0.001', '--keep', '--backup-dir', path.join(work, 'keep-s3')], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += String(d)));
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d) => {
        stdout += String(d);
        const m = /psql '([^']+)'/.exec(stdout);
        if (m && stdout.includes('Press Ctrl-C')) resolve(m[1]!);
      });
      child.on('exit', () => reject(new Error(`exited early:\n${stdout}\n${stderr}`)));
    });
    const bags = await withTestClient(url, async (c) => Number((await c.query('SELECT count(*) AS n FROM tracetrack.bag')).rows[0].n));
    expect(bags).toBeGreaterThan(0);
    const listed = await cli(['rejects', '--target', url, '--format', 'jsonl']);
    expect(listed.code).toBe(0);
    expect(listed.stdout.trim().split('\n').length).toBeGreaterThan(0);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    expect(stdout).toContain('Demo: stopping the embedded PostgreSQL');
    const port = Number(new URL(url).port);
    const refused = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port }, () => { socket.destroy(); resolve(false); });
      socket.on('error', () => resolve(true));
    });
    expect(refused).toBe(true);
    expect(readdirSync(path.join(work, 'keep-s3')).length).toBeGreaterThan(0);
  });
});
