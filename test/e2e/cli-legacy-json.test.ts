import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../support/pg';
import { loadFixture } from '../support/engine';

const ROOT = path.join(__dirname, '..', '..');
const work = mkdtempSync(path.join(tmpdir(), 'tracetrack-legacy-json-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function findFiles(dir: string, pattern: RegExp): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) out.push(...findFiles(full, pattern));
    else if (pattern.test(full)) out.push(full);
  }
  return out;
}

describe('run --legacy-json-backup (the seed scripts\' single-file backup)', () => {
  it('also writes rds_backup_YYYYMMDD_HHMMSS.json with every row of every source table', async () => {
    const db = await createTestDatabase('legjson');
    await loadFixture(db.url, 'a');
    const backupDir = path.join(work, 's3');
    const result = await new Promise<{ code: number; stderr: string }>((resolve) => {
      execFile(
        process.execPath,
        ['--import', 'tsx', path.join(ROOT, 'bin', 'cli.ts'), 'run', '--source', db.url, '--backup-dir', backupDir, '--run-id', 'legacy-1', '--legacy-json-backup'],
        { cwd: ROOT, timeout: 150_000, maxBuffer: 16 * 1024 * 1024 },
        (err, _stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stderr }),
      );
    });
    expect(result.code, result.stderr).toBe(0);
    // s3rver keeps each object's body in `<key>._S3rver_object`, once per run.
    const files = findFiles(backupDir, /runs\/legacy-1\/rds_backup_\d{8}_\d{6}\.json\._S3rver_object$/);
    expect(files).toHaveLength(1);
    const backup = JSON.parse(readFileSync(files[0]!, 'utf8')) as Record<string, unknown[]>;
    expect(Object.keys(backup).sort()).toEqual(['bag', 'bill', 'bill_bag', 'scan', 'user']);
    expect(backup.bag).toHaveLength(17);
    expect(backup.scan).toHaveLength(14);
    expect(backup.user).toHaveLength(12);
  });
});
