import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, ROOT } from '../support/cli';
import { createTestDatabase, withTestClient } from '../support/pg';

/**
 * Local I/O failures end as named errors with the path, never a raw Node stack: a backup directory on a
 * full disk (a small tmpfs filled up: needs root and mount, as CI has), and a --report nowhere.
 */

const expectA = JSON.parse(readFileSync(path.join(ROOT, 'test', 'fixtures', 'shape-a.expect.json'), 'utf8')) as { targets: Record<string, { migrated: number }> };

let work: string;
let mounted: string | null = null;
beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-io-'));
  const dir = path.join(work, 'small-disk');
  mkdirSync(dir);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir], { stdio: 'ignore' });
    mounted = dir;
  } catch {
    mounted = null;
  }
});
afterAll(() => {
  if (mounted) execFileSync('umount', ['-l', mounted], { stdio: 'ignore' });
  rmSync(work, { recursive: true, force: true });
});

describe('local I/O errors', () => {
  it('a full backup disk fails the run with LocalStorageError naming the path; the run is marked failed; after freeing space the same --run-id completes (exit 1, then 0)', async (ctx) => {
    if (!mounted) ctx.skip(); // no tmpfs here (not root, or no mount permission)
    const db = await createTestDatabase('io_full');
    try {
      await withTestClient(db.url, (c) => c.query(readFileSync(path.join(ROOT, 'test', 'fixtures', 'shape-a.sql'), 'utf8')));
      const backupDir = path.join(mounted!, 's3');
      // Fill the disk: s3rver's bucket directory exists, nothing else fits.
      const filler = path.join(mounted!, 'filler');
      try {
        writeFileSync(filler, Buffer.alloc(1024 * 1024));
      } catch {
        // ENOSPC: the disk is full, as wanted
      }
      const failed = await cli(['run', '--source', db.url, '--backup-dir', backupDir, '--run-id', 'full-1']);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/Run full-1 failed in step \w+ with LocalStorageError:/);
      expect(failed.stderr).toContain(`ENOSPC writing ${backupDir}/`);
      expect(failed.stderr).toMatch(/Next: Free space in .*--run-id full-1/);
      expect(failed.stderr + failed.stdout).not.toContain("Unhandled 'error' event");
      expect(await withTestClient(db.url, async (c) => (await c.query(`SELECT status FROM tracetrack._migration_run WHERE run_id = 'full-1'`)).rows[0]?.status)).toBe('failed');

      rmSync(filler, { force: true });
      const resumed = await cli(['run', '--source', db.url, '--backup-dir', backupDir, '--run-id', 'full-1']);
      expect(resumed.stderr).toBe('');
      expect(resumed.code).toBe(0);
      expect(await withTestClient(db.url, async (c) => Number((await c.query('SELECT count(*) AS n FROM tracetrack.bag')).rows[0].n))).toBe(expectA.targets.bag!.migrated);
    } finally {
      await db.drop();
    }
  });

  it('--report into a directory that does not exist is refused before anything starts (exit 2), naming the path', async () => {
    const r = await cli(['run', '--demo', '--report', path.join(work, 'nowhere', 'r.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--report: cannot write into ${path.join(work, 'nowhere')}: the directory does not exist (ENOENT)`);
    expect(r.stdout).not.toContain('embedded PostgreSQL');
  });
});
