import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cli, ROOT, runIdOf } from '../support/cli';
import { adminQuery, createTestDatabase, withTestClient } from '../support/pg';

/**
 * The rough edges of issue 14, as an operator meets them: each failure's message says what failed and
 * the next command, with the documented exit status; and doing what the message says works.
 */

const SHAPE_A = readFileSync(path.join(ROOT, 'test', 'fixtures', 'shape-a.sql'), 'utf8');
const MYSTERY = `CREATE TABLE mystery (id int PRIMARY KEY, what text); INSERT INTO mystery VALUES (1, 'x'), (2, 'y');`;

let work: string;
beforeAll(() => {
  work = mkdtempSync(path.join(tmpdir(), 'tracetrack-edges-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

async function fixtureDb(prefix: string, extraSql = '') {
  const db = await createTestDatabase(prefix);
  await withTestClient(db.url, async (c) => {
    await c.query(SHAPE_A);
    if (extraSql) await c.query(extraSql);
  });
  return db;
}

/** A login role of its own (roles are cluster-wide: a random name), dropped with `drop`. */
async function loginRole(prefix: string, dbUrl: string, setup: (role: string) => string) {
  const role = `${prefix}_${randomBytes(4).toString('hex')}`;
  const password = `pw_${randomBytes(6).toString('hex')}`;
  await adminQuery(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
  await withTestClient(dbUrl, (c) => c.query(setup(role)));
  const url = new URL(dbUrl);
  url.username = role;
  url.password = password;
  return {
    role,
    url: url.toString(),
    drop: async () => {
      await withTestClient(dbUrl, (c) => c.query(`DROP OWNED BY ${role} CASCADE`)).catch(() => undefined);
      await adminQuery(`DROP ROLE IF EXISTS ${role}`);
    },
  };
}

async function runStatus(url: string, runId: string): Promise<string> {
  return withTestClient(url, async (c) => (await c.query(`SELECT status FROM tracetrack._migration_run WHERE run_id = $1`, [runId])).rows[0]?.status);
}

describe('a failed run and the lease', () => {
  it('the run the refusal message suggests (--skip-table, no --run-id) starts; a lease of a run that is not recorded as failed names it, its state and the abandon command', async () => {
    const db = await fixtureDb('edge_lease', MYSTERY);
    const s3 = path.join(work, 'lease-s3');
    try {
      const failed = await cli(['run', '--source', db.url, '--backup-dir', s3]);
      expect(failed.code).toBe(1);
      expect(failed.stderr).toMatch(/failed in step Analyse with PlanError/);
      const first = runIdOf(failed.stdout);
      expect(await runStatus(db.url, first)).toBe('failed');

      // Exactly what the message suggests: the table skipped, a new run (no --run-id).
      const next = await cli(['run', '--source', db.url, '--backup-dir', s3, '--skip-table', 'mystery']);
      expect(next.stderr).toBe('');
      expect(next.code).toBe(0);
      expect(runIdOf(next.stdout)).not.toBe(first);

      // In AWS nothing records a failed execution: its run still says "running" and holds the lease.
      const stuck = await cli(['run', '--source', db.url, '--backup-dir', s3, '--run-id', 'stuck-1']);
      expect(stuck.code).toBe(1);
      await withTestClient(db.url, async (c) => {
        await c.query(`UPDATE tracetrack._migration_run SET status = 'running' WHERE run_id = 'stuck-1'`);
        await c.query(`UPDATE tracetrack._migration_lease SET expires_at = now() + interval '30 minutes'`);
      });
      const refused = await cli(['run', '--source', db.url, '--backup-dir', s3, '--skip-table', 'mystery', '--run-id', 'after-1']);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/failed in step Preflight with LeaseHeldError/);
      expect(refused.stderr).toContain('Run stuck-1 holds the lease of schema "tracetrack" (state running, last step');
      expect(refused.stderr).toContain('tracetrack-migrate abandon --target <URL> --target-schema tracetrack --run-id stuck-1');
      const nextLine = refused.stderr.split('\n').find((l) => l.startsWith('Next:'))!;
      expect(nextLine).toContain('--run-id stuck-1');
      expect(nextLine).not.toContain('after-1');

      const abandoned = await cli(['abandon', '--target', db.url, '--run-id', 'stuck-1']);
      expect(abandoned.stderr).toBe('');
      expect(abandoned.code).toBe(0);
      expect(abandoned.stdout).toContain('run stuck-1 (was running) is abandoned');
      expect(await runStatus(db.url, 'stuck-1')).toBe('abandoned');
      const after = await cli(['run', '--source', db.url, '--backup-dir', s3, '--skip-table', 'mystery', '--run-id', 'after-1']);
      expect(after.stderr).toBe('');
      expect(after.code).toBe(0);

      const usage = await cli(['abandon', '--target', db.url]);
      expect(usage.code).toBe(2);
      expect(usage.stderr).toMatch(/--run-id/);
    } finally {
      await db.drop();
    }
  });
});

describe('roles the migration cannot use as they are', () => {
  it('a read-only role fails Preflight with advice about read-only roles (exit 1)', async () => {
    const db = await fixtureDb('edge_ro');
    const ro = await loginRole('ro', db.url, (r) => `GRANT CREATE ON DATABASE "${db.name}" TO ${r}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${r}; ALTER ROLE ${r} SET default_transaction_read_only = on`);
    try {
      const r = await cli(['run', '--source', ro.url, '--backup-dir', path.join(work, 'ro-s3')]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/failed in step Preflight with PermissionError/);
      expect(r.stderr).toContain(`Role "${ro.role}" runs read-only transactions (default_transaction_read_only is on for it)`);
      expect(r.stderr).toContain(`ALTER ROLE "${ro.role}" SET default_transaction_read_only = off`);
      expect(r.stderr).toContain('--target');
      expect(r.stderr).not.toContain(new URL(ro.url).password);
    } finally {
      await ro.drop();
      await db.drop();
    }
  });

  it('--cutover by a role that does not own the legacy tables fails in Preflight, before any backup, saying ALTER TABLE … OWNER TO (exit 1)', async () => {
    const db = await fixtureDb('edge_own');
    const mig = await loginRole('mig', db.url, (r) => `GRANT CREATE ON DATABASE "${db.name}" TO ${r}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${r}`);
    const s3 = path.join(work, 'own-s3');
    try {
      const r = await cli(['run', '--source', mig.url, '--backup-dir', s3, '--cutover', '--run-id', 'own-1']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/failed in step Preflight with PermissionError/);
      expect(r.stderr).toContain(`ALTER TABLE "public"."user" OWNER TO "${mig.role}";`);
      expect(r.stderr).toContain(`ALTER TABLE "public"."bag" OWNER TO "${mig.role}";`);
      expect(r.stderr).toMatch(/Ownership cannot be granted/);
      // Nothing was backed up.
      const runDir = path.join(s3, 'tracetrack-backups');
      const objects = existsSync(runDir) ? readdirSync(runDir, { recursive: true }).map(String) : [];
      expect(objects.filter((o) => o.includes('own-1/backup'))).toEqual([]);
      // Without --cutover the same role migrates.
      const plain = await cli(['run', '--source', mig.url, '--backup-dir', s3, '--run-id', 'own-2']);
      expect(plain.stderr).toBe('');
      expect(plain.code).toBe(0);
    } finally {
      await mig.drop();
      await db.drop();
    }
  });

  it("a role-level statement_timeout shorter than a batch does not apply (the tool sets its own); when the server cancels a statement, the message names both settings (exit 1)", async () => {
    const db = await fixtureDb('edge_st');
    const slow = await loginRole('st', db.url, (r) => `ALTER ROLE ${r} SUPERUSER; ALTER ROLE ${r} SET statement_timeout = '1ms'`);
    const s3 = path.join(work, 'st-s3');
    try {
      const ok = await cli(['run', '--source', slow.url, '--backup-dir', s3]);
      expect(ok.stderr).toBe('');
      expect(ok.code).toBe(0);
      const cancelled = await cli(['run', '--source', slow.url, '--backup-dir', s3, '--run-id', 'st-2'], { env: { TRACETRACK_STATEMENT_TIMEOUT_MS: '1' } });
      expect(cancelled.code).toBe(1);
      expect(cancelled.stderr).toContain('[57014]');
      expect(cancelled.stderr).toContain('This session ran with statement_timeout = 1ms');
      expect(cancelled.stderr).toContain(`role "${slow.role}" has statement_timeout=1ms (ALTER ROLE … SET)`);
      expect(cancelled.stderr).toContain('TRACETRACK_STATEMENT_TIMEOUT_MS');
    } finally {
      await slow.drop();
      await db.drop();
    }
  });
});
