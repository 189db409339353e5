import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import pg from 'pg';
import { adminQuery, createTestDatabase, withTestClient } from '../support/pg';
import { useTestS3 } from '../support/s3';
import { fixtureSql } from '../support/engine';
import { parseDatabaseUrl, parseRdsSecret } from '../../lambdas/io/pg';
import { hashPasswords } from '../../lambdas/io/password';
import { backupTable, finalizeBackup } from '../../lambdas/io/backup';
import { listObjectKeys } from '../../lambdas/io/s3';
import { readCatalog } from '../../lambdas/io/catalog';
import { migrateAllSteps } from '../support/tasks';
import { startLocalS3 } from '../../lib/runner/local-s3';
import {
  analyseTask,
  createSchemaTask,
  preflightTask,
  reportTask,
  verifyTask,
  type TaskDeps,
} from '../../lambdas/engine/tasks';
import type { RunContext } from '../../lambdas/core/contract';

/**
 * Nothing secret leaks: the database password and the legacy plaintext passwords appear in no log
 * line, error message, S3 object (other than the backup's data parts, which hold the source rows by
 * design), reject row, run record or report. TLS is on by default off loopback.
 */

const DB_PASSWORD = 'S3cr3t-P@ss-xyz';
const PLAINTEXTS = ['hunter2', 'correct horse'];
const SECRETS = [DB_PASSWORD, encodeURIComponent(DB_PASSWORD), ...PLAINTEXTS];

const store = useTestS3();
afterEach(() => {
  vi.restoreAllMocks();
});

function urlFor(base: string, user: string, password: string): string {
  const u = new URL(base);
  u.username = user;
  u.password = encodeURIComponent(password);
  return u.toString();
}

function expectNoSecret(text: string, where: string): void {
  for (const secret of SECRETS) expect(text.includes(secret), `${where} contains "${secret}"`).toBe(false);
}

async function objectBytes(key: string): Promise<Buffer> {
  const out = await store.current.s3.send(new GetObjectCommand({ Bucket: store.current.bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}

describe('no secret leaks', () => {
  it('a whole run (migration, backup, a failed verification, a wrong password) leaks neither the DB password nor legacy plaintext passwords', async () => {
    const db = await createTestDatabase('sec');
    const role = `tt_sec_${randomBytes(4).toString('hex')}`;
    await adminQuery(`CREATE ROLE ${role} LOGIN PASSWORD '${DB_PASSWORD}'`);
    await adminQuery(`ALTER DATABASE "${db.name}" OWNER TO ${role}`);
    const url = urlFor(db.url, role, DB_PASSWORD);
    await withTestClient(db.url, (c) => c.query(`ALTER SCHEMA public OWNER TO ${role}`));
    await withTestClient(url, async (c) => {
      await c.query(fixtureSql('a'));
      // A plaintext-password user that is rejected (duplicate email): its row lands in the reject store.
      await c.query(`INSERT INTO "user" (id, name, email, password, role, area, created_at) VALUES (13, 'dup_plain', 'north@tracetrack.example', 'correct horse', 'dispatcher', 'north', '2024-06-01')`);
    });

    const logged: string[] = [];
    const capture = (...args: unknown[]) => { logged.push(args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a, Object.getOwnPropertyNames(a ?? {})))).join(' ')); };
    for (const m of ['log', 'error', 'warn', 'info', 'debug'] as const) vi.spyOn(console, m).mockImplementation(capture);
    const progress: string[] = [];
    const errors: string[] = [];
    const d: TaskDeps = {
      source: async () => parseDatabaseUrl(url),
      target: async () => parseDatabaseUrl(url),
      s3: store.current.s3,
      bucket: store.current.bucket,
      prefix: 'sec/',
      timeBudgetMs: 600_000,
      hashPasswords: (p) => hashPasswords(p),
      log: (line) => logged.push(line),
      onProgress: (p) => progress.push(JSON.stringify(p)),
    };

    // The backup, as the workflow's BackupTable/FinalizeBackup do.
    const runId = 'sec-run';
    await withTestClient(url, async (c) => {
      const catalog = await readCatalog(c, 'public');
      for (const table of catalog.tables) {
        let cursor: string | null = null;
        for (;;) {
          const r = await backupTable({ client: c, s3: store.current.s3, bucket: store.current.bucket, prefix: 'sec/', runId, table, cursor, deadlineMs: Date.now() + 60_000 });
          if (r.done) break;
          cursor = r.cursor;
        }
      }
      await finalizeBackup({ s3: store.current.s3, bucket: store.current.bucket, prefix: 'sec/', runId, expectedTables: catalog.tables.map((t) => t.name) });
    });

    // The migration.
    const { run } = await preflightTask({ input: { runId, batchSize: 4 } }, d);
    const analysis = await analyseTask({ run }, d);
    await createSchemaTask({ run }, d);
    await migrateAllSteps(run, analysis.steps, d);
    await verifyTask({ run }, d);
    const report = await reportTask({ run }, d);
    expect(report.status).toBe('completed');

    // A run failing in verification (the target was tampered with) and a run with a wrong password.
    await withTestClient(url, (c) => c.query(`UPDATE tracetrack."user" SET username = 'tampered' WHERE id = 3; UPDATE tracetrack.bag SET name = 'tampered' WHERE id = 1`));
    const failedRun: RunContext = { ...run };
    const verr = await verifyTask({ run: failedRun }, d).then(() => null, (e: Error) => e);
    expect(verr?.name).toBe('VerificationFailedError');
    errors.push(verr!.message, String(verr!.stack), JSON.stringify(verr));
    const wrong = { ...d, source: async () => parseDatabaseUrl(urlFor(db.url, role, 'not-the-password')) };
    const perr = await preflightTask({ input: { runId: 'sec-wrong' } }, wrong).then(() => null, (e: Error) => e);
    expect(perr?.name).toBe('ConnectionConfigError');
    errors.push(perr!.message, String(perr!.stack), String((perr as Error & { cause?: Error }).cause?.message ?? ''));

    expect(logged.length).toBeGreaterThan(0);
    expectNoSecret(logged.join('\n'), 'the log');
    expectNoSecret(progress.join('\n'), 'progress events');
    expectNoSecret(errors.join('\n'), 'error messages');
    expectNoSecret(JSON.stringify(report), 'the report result');

    // Every S3 object except the backup's data parts (which hold the source rows by design).
    const keys = await listObjectKeys(store.current.s3, store.current.bucket, 'sec/');
    expect(keys.some((k) => k.endsWith('/manifest.json'))).toBe(true);
    expect(keys.some((k) => /part-\d+\.json$/.test(k))).toBe(true);
    expect(keys.some((k) => k.endsWith('report.json'))).toBe(true);
    expect(keys.some((k) => k.endsWith('rejects.jsonl.gz'))).toBe(true);
    let checked = 0;
    for (const key of keys) {
      if (/\/backup\/.+\.copy\.gz$/.test(key)) continue;
      const raw = await objectBytes(key);
      const text = key.endsWith('.gz') ? gunzipSync(raw).toString('utf8') : raw.toString('utf8');
      expectNoSecret(text, `s3://${key}`);
      checked += 1;
    }
    expect(checked).toBeGreaterThan(5);

    // The target: reject store, run record (plan, steps, verification), and the migrated users.
    await withTestClient(url, async (c) => {
      const rejects = await c.query(`SELECT row_to_json(r)::text AS j FROM tracetrack._migration_reject r`);
      expect(rejects.rows.some((r) => r.j.includes('dup_plain'))).toBe(true);
      expectNoSecret(rejects.rows.map((r) => r.j).join('\n'), 'the reject store');
      const rec = await c.query(`SELECT row_to_json(r)::text AS j FROM tracetrack._migration_run r`);
      expectNoSecret(rec.rows.map((r) => r.j).join('\n'), 'the run record');
      const users = await c.query(`SELECT row_to_json(u)::text AS j FROM tracetrack."user" u`);
      expectNoSecret(users.rows.map((r) => r.j).join('\n'), 'the migrated users');
      const checkpoints = await c.query(`SELECT row_to_json(x)::text AS j FROM tracetrack._migration_checkpoint x`);
      expectNoSecret(checkpoints.rows.map((r) => r.j).join('\n'), 'the checkpoints');
      // The staged/temporary password material is gone: no table in the target schema holds a plaintext.
      const tables = await c.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'tracetrack'`);
      for (const t of tables.rows) {
        const all = await c.query(`SELECT COALESCE(string_agg(x::text, '|'), '') AS j FROM tracetrack.${pg.escapeIdentifier(t.tablename)} x`);
        expectNoSecret(all.rows[0].j, `tracetrack.${t.tablename}`);
      }
    });
  }, 300_000);
});

describe('TLS and local storage defaults', () => {
  it('a non-loopback host defaults to sslmode verify-full; ?sslmode=disable|require is honoured; loopback defaults to disable', () => {
    expect(parseDatabaseUrl('postgres://u:p@db.cluster-x.eu-west-1.rds.amazonaws.com:5432/tt').sslmode).toBe('verify-full');
    expect(parseDatabaseUrl('postgres://u:p@10.0.0.5/tt').sslmode).toBe('verify-full');
    expect(parseDatabaseUrl('postgres://u:p@db.example/tt?sslmode=disable').sslmode).toBe('disable');
    expect(parseDatabaseUrl('postgres://u:p@db.example/tt?sslmode=require').sslmode).toBe('require');
    expect(parseDatabaseUrl('postgres://u:p@db.example/tt?sslmode=verify-ca').sslmode).toBe('verify-ca');
    expect(parseDatabaseUrl('postgres://u:p@127.0.0.1/tt').sslmode).toBe('disable');
    expect(parseDatabaseUrl('postgres://u:p@localhost/tt').sslmode).toBe('disable');
    expect(parseDatabaseUrl('postgres://u:p@[::1]/tt').sslmode).toBe('disable');
    // "localhost.evil.example" is not loopback.
    expect(parseDatabaseUrl('postgres://u:p@localhost.evil.example/tt').sslmode).toBe('verify-full');
    expect(parseRdsSecret(JSON.stringify({ host: 'db.example', username: 'u', password: 'p' }), 'source').sslmode).toBe('verify-full');
  });

  it('a verify-full connection to a server without TLS is refused, never silently downgraded', async () => {
    const db = await createTestDatabase('sectls');
    const u = new URL(db.url);
    u.searchParams.set('sslmode', 'require');
    const err = await preflightTask({ input: { runId: 'tls' } }, {
      source: async () => parseDatabaseUrl(u.toString()),
      target: async () => parseDatabaseUrl(u.toString()),
      s3: store.current.s3, bucket: store.current.bucket, prefix: '', timeBudgetMs: 1000, hashPasswords: (p) => hashPasswords(p),
    }).then(() => null, (e: Error) => e);
    expect(err, 'the embedded test server has no TLS: sslmode=require must fail').not.toBeNull();
    expect(err!.message).toMatch(/SSL|TLS/i);
  });

  it('local backup directories are created with mode 0700', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tracetrack-sec-'));
    const directory = join(root, 'nested', 'backups');
    const server = await startLocalS3({ directory, buckets: ['tt-sec-bucket'] });
    try {
      expect(statSync(directory).mode & 0o777).toBe(0o700);
      expect(statSync(join(root, 'nested')).mode & 0o777).toBe(0o700);
      expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:/);
    } finally {
      await server.stop();
      rmSync(root, { recursive: true, force: true });
    }
  });
});
