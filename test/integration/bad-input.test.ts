import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { adminQuery, createTestDatabase, withTestClient } from '../support/pg';
import { useTestS3 } from '../support/s3';
import { runTasks, taskDeps } from '../support/tasks';
import { loadFixture } from '../support/engine';
import { parseDatabaseUrl } from '../../lambdas/io/pg';
import { analyseTask, preflightTask, type TaskDeps } from '../../lambdas/engine/tasks';
import type { Plan } from '../../lambdas/core/planner';

/**
 * Bad input on a real PostgreSQL and local S3: each is refused with a named error whose message says
 * what is wrong and what to do, and nothing is changed in the target.
 */

const store = useTestS3();

const deps = (sourceUrl: string, targetUrl = sourceUrl, extra: Partial<TaskDeps> = {}) => taskDeps(store.current, sourceUrl, targetUrl, extra);

async function schemaExists(url: string, schema = 'tracetrack'): Promise<boolean> {
  return withTestClient(url, async (c) => (await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount === 1);
}

/** No target table was created (the run record may exist: preflight records the run before analysis). */
async function noTargetTables(url: string): Promise<void> {
  const r = await withTestClient(url, (c) => c.query(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'tracetrack' AND tablename NOT LIKE '\\_%'`));
  expect(r.rows[0].n).toBe(0);
}

async function caught(p: Promise<unknown>): Promise<Error & { retryable?: boolean }> {
  const err = await p.then(() => null, (e: unknown) => e as Error & { retryable?: boolean });
  expect(err, 'expected a refusal').not.toBeNull();
  return err!;
}

function withPassword(url: string, user: string, password: string, database?: string): string {
  const u = new URL(url);
  u.username = encodeURIComponent(user);
  u.password = encodeURIComponent(password);
  if (database) u.pathname = `/${database}`;
  return u.toString();
}

async function createRole(password: string): Promise<string> {
  const role = `tt_role_${randomBytes(4).toString('hex')}`;
  await adminQuery(`CREATE ROLE ${role} LOGIN PASSWORD '${password.replace(/'/g, "''")}'`);
  return role;
}

const PASSWORD = 'S3cr3t-P@ss-xyz';

describe('connection settings', () => {
  it.each([
    ['not a URL', 'definitely not a url', /not a valid URL[\s\S]*postgres:\/\/USER:PASSWORD@HOST:PORT\/DATABASE/],
    ['unencoded "/" in the password', `postgres://u:Pass/word-xyz@db.example:5432/tt`, /not a valid URL \(not shown, it may contain a password\)/],
    ['port not a number', `postgres://u:${encodeURIComponent(PASSWORD)}@db.example:54x/tt`, /not a valid URL/],
    ['wrong scheme', `mysql://u:${PASSWORD}@db.example/tt`, /must start with postgres:\/\//],
    ['no database', `postgres://u:${PASSWORD}@db.example:5432`, /needs a host and a database name/],
    ['no host', `postgres://u:${PASSWORD}@/tt`, /needs a host and a database name|not a valid URL/],
    ['bad sslmode', `postgres://u:${PASSWORD}@db.example/tt?sslmode=maybe`, /sslmode=maybe; use one of disable/],
  ])('a malformed URL (%s) is a ConnectionConfigError that never echoes the password', (_label, url, expected) => {
    let err: Error | undefined;
    try {
      parseDatabaseUrl(url, 'source database URL');
    } catch (e) {
      err = e as Error;
    }
    expect(err?.name).toBe('ConnectionConfigError');
    expect(err!.message).toMatch(expected);
    expect(err!.message).not.toContain(PASSWORD);
    expect(err!.message).not.toContain(encodeURIComponent(PASSWORD));
    expect(err!.message).not.toContain('Pass/word');
  });

  // An unparseable URL is never echoed (a libpq keyword string, or a password with unencoded '/' and '@',
  // would otherwise show the password or its tail).
  it.each([
    ['a libpq keyword string', `host=db.example user=u password=${PASSWORD} dbname=tt`],
    ['a password with unencoded "/" and "@"', `postgres://migrator:S3cr/et-P@ss-xyz@db.example:5432/tt`],
  ])('an unparseable connection string (%s) never echoes any part of the password', (_label, url) => {
    let message = '';
    try {
      parseDatabaseUrl(url, 'source database URL');
    } catch (e) {
      expect((e as Error).name).toBe('ConnectionConfigError');
      message = (e as Error).message;
    }
    expect(message).toMatch(/not a valid URL/);
    expect(message).not.toMatch(/S3cr|P@ss|ss-xyz/);
  });

  it('a wrong password → ConnectionConfigError (authentication failed), password not in the message; nothing created', async () => {
    const db = await createTestDatabase('bpw');
    await loadFixture(db.url, 'a');
    const role = await createRole(PASSWORD);
    const wrong = 'Wr0ng-P@ss-abc';
    const err = await caught(preflightTask({ input: { runId: 'badpw' } }, deps(withPassword(db.url, role, wrong))));
    expect(err.name).toBe('ConnectionConfigError');
    expect(err.retryable).toBe(false);
    expect(err.message).toMatch(/authentication failed \[28P01\][\s\S]*Check the user name and password/);
    expect(err.message).toContain(role);
    expect(err.message).not.toContain(wrong);
    expect(err.message).not.toContain(PASSWORD);
    expect(await schemaExists(db.url)).toBe(false);
  });

  it('a refused port fails fast with a named error naming the host and port', async () => {
    const started = Date.now();
    const err = await caught(preflightTask({ input: { runId: 'refused' } }, deps(`postgres://u:${encodeURIComponent(PASSWORD)}@127.0.0.1:1/tt`)));
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(['TransientDatabaseError', 'ConnectionConfigError']).toContain(err.name);
    expect(err.message).toContain('127.0.0.1:1/tt');
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(err.message).not.toContain(PASSWORD);
  });

  it('a host that accepts but never answers times out within 30 s with a ConnectionConfigError saying to check reachability', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => { sockets.push(s); s.on('error', () => undefined); });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      const started = Date.now();
      const err = await caught(preflightTask({ input: { runId: 'hang' } }, deps(`postgres://u:${encodeURIComponent(PASSWORD)}@127.0.0.1:${port}/tt`)));
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(err.name).toBe('ConnectionConfigError');
      expect(err.message).toMatch(/timed out[\s\S]*reachable/);
      expect(err.message).not.toContain(PASSWORD);
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 60_000);

  it('a missing database → ConnectionConfigError naming it and saying to check the database name', async () => {
    const db = await createTestDatabase('bmiss');
    const url = new URL(db.url);
    url.pathname = '/no_such_db_here';
    const err = await caught(preflightTask({ input: { runId: 'missing' } }, deps(url.toString())));
    expect(err.name).toBe('ConnectionConfigError');
    expect(err.message).toMatch(/3D000[\s\S]*no_such_db_here[\s\S]*Check the database name/);
  });

  it('a role without CREATE on the target → PermissionError at preflight, with the GRANT to run; nothing created', async () => {
    const db = await createTestDatabase('bperm');
    await loadFixture(db.url, 'a');
    const role = await createRole(PASSWORD);
    await withTestClient(db.url, (c) => c.query(`GRANT CONNECT ON DATABASE "${db.name}" TO ${role}; GRANT USAGE ON SCHEMA public TO ${role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`));
    const url = withPassword(db.url, role, PASSWORD);
    const err = await caught(preflightTask({ input: { runId: 'noperm' } }, deps(url)));
    expect(err.name).toBe('PermissionError');
    expect(err.message).toMatch(/may not create schema "tracetrack"[\s\S]*GRANT CREATE ON DATABASE/);
    expect(err.message).not.toContain(PASSWORD);
    expect(await schemaExists(db.url)).toBe(false);
    // A source table it may not read is named too.
    await withTestClient(db.url, (c) => c.query(`REVOKE SELECT ON bill FROM ${role}`));
    const err2 = await caught(preflightTask({ input: { runId: 'noperm' } }, deps(url)));
    expect(err2.name).toBe('PermissionError');
    expect(err2.message).toMatch(/may not read "bill"[\s\S]*GRANT SELECT/);
  });
});

describe('mapping and source problems', () => {
  async function putMapping(key: string, text: string): Promise<void> {
    await store.current.s3.send(new PutObjectCommand({ Bucket: store.current.bucket, Key: key, Body: text }));
  }

  it('an invalid mapping file lists every problem at once; no target table is created', async () => {
    const db = await createTestDatabase('bmap');
    await loadFixture(db.url, 'a');
    const key = `mappings/${randomBytes(3).toString('hex')}.json`;
    await putMapping(key, JSON.stringify({ tables: { sacks: 'bagz' }, columns: { bagz: {} }, colour: 'red', skipTables: 'x' }));
    const d = deps(db.url);
    const { run } = await preflightTask({ input: { runId: 'badmap', mappingKey: key } }, d);
    const err = await caught(analyseTask({ run }, d));
    expect(err.name).toBe('MappingError');
    expect(err.message).toMatch(/unknown key "colour"/);
    expect(err.message).toMatch(/"bagz" is not a target table/);
    expect(err.message).toMatch(/skipTables/);
    expect(err.message).toContain(key);
    await noTargetTables(db.url);
    // Not JSON at all, and a missing file.
    await putMapping(key, '{ "tables": ');
    await expect(analyseTask({ run }, d)).rejects.toMatchObject({ name: 'MappingError', message: expect.stringMatching(/not valid JSON[\s\S]*Fix the file/) });
    const missing = { ...run, mappingKey: 'mappings/nope.json' };
    await expect(analyseTask({ run: missing }, d)).rejects.toMatchObject({ name: 'InputError', message: expect.stringContaining('mappings/nope.json does not exist') });
    await noTargetTables(db.url);
  });

  it('an unknown table with rows → PlanError naming it; skipTables fixes it (the table is reported, not migrated)', async () => {
    const db = await createTestDatabase('bunk');
    await loadFixture(db.url, 'a');
    await withTestClient(db.url, (c) => c.query(`CREATE TABLE pallet_history (id int PRIMARY KEY, note text); INSERT INTO pallet_history VALUES (1, 'x')`));
    const d = deps(db.url);
    const { run } = await preflightTask({ input: { runId: 'unk-1' } }, d);
    const err = await caught(analyseTask({ run }, d));
    expect(err.name).toBe('PlanError');
    expect(err.message).toContain('"pallet_history" has rows');
    expect(err.message).toMatch(/skip/i);
    await noTargetTables(db.url);
    // The refused run is abandoned (its lease would expire); a new target schema runs with the table skipped.
    const ok = await runTasks(d, { runId: 'unk-2', skipTables: ['pallet_history'], targetSchema: 'tt_skip' });
    const plan = await withTestClient(db.url, async (c) => (await c.query(`SELECT plan FROM tt_skip._migration_run WHERE run_id = $1`, [ok.runId])).rows[0].plan as Plan);
    expect(plan.decisions).toContainEqual(expect.objectContaining({ source: 'pallet_history', decision: expect.stringContaining('skipped on request') }));
  });

  it.each([
    ['with an integer id column', 'ALTER TABLE bill_bag DROP CONSTRAINT bill_bag_pkey', /"id" column is used/],
    ['without any key', 'ALTER TABLE bill_bag DROP COLUMN id', /read in one batch/],
  ])('a source table without a primary key (%s) migrates and verifies; the plan says how it was read', async (_label, alter, decision) => {
    const db = await createTestDatabase('bnopk');
    await loadFixture(db.url, 'a');
    await withTestClient(db.url, (c) => c.query(alter));
    const run = await runTasks(deps(db.url), { runId: 'nopk', batchSize: 3 });
    await withTestClient(db.url, async (c) => {
      const rec = (await c.query(`SELECT status, plan, verification->>'passed' AS passed FROM tracetrack._migration_run WHERE run_id = $1`, [run.runId])).rows[0];
      expect(rec.passed).toBe('true');
      expect(rec.status).toBe('completed');
      const d = (rec.plan as Plan).decisions.filter((x) => x.source === 'bill_bag').map((x) => x.decision).join('\n');
      expect(d).toMatch(decision);
      const n = (await c.query(`SELECT (SELECT count(*) FROM tracetrack.bill_bag) + (SELECT count(*) FROM tracetrack._migration_reject WHERE target_table = 'bill_bag') AS n`)).rows[0].n;
      expect(Number(n)).toBe(12);
    });
  });

  it('table and column names with quotes, spaces, upper case and semicolons migrate and verify via a mapping file', async () => {
    const db = await createTestDatabase('bweird');
    await loadFixture(db.url, 'a');
    const TABLE = 'Weird "Bags"; --';
    const QR = 'QR "Code"';
    const NAME = 'Bag;Name DROP';
    await withTestClient(db.url, (c) =>
      c.query(`ALTER TABLE bag RENAME COLUMN qr_code TO "QR ""Code"""; ALTER TABLE bag RENAME COLUMN bag_name TO "Bag;Name DROP"; ALTER TABLE bag RENAME TO "Weird ""Bags""; --"`),
    );
    const key = `mappings/${randomBytes(3).toString('hex')}.json`;
    await putMapping(key, JSON.stringify({
      tables: { [TABLE]: 'bag' },
      columns: { bag: { qr_id: [QR], name: [NAME] } },
      references: { 'scan.parent_id': TABLE, 'scan.child_id': TABLE, 'bill_bag.bag_id': TABLE, [`${TABLE}.parent_bag_id`]: TABLE },
    }));
    const run = await runTasks(deps(db.url), { runId: 'weird', batchSize: 4, mappingKey: key });
    await withTestClient(db.url, async (c) => {
      const rec = (await c.query(`SELECT verification->>'passed' AS passed FROM tracetrack._migration_run WHERE run_id = $1`, [run.runId])).rows[0];
      expect(rec.passed).toBe('true');
      const bags = await c.query(`SELECT id, qr_id, name FROM tracetrack.bag ORDER BY id`);
      expect(bags.rows.find((b) => b.id === 14)).toMatchObject({ qr_id: 'SB00003', name: '📦 Zoë Ülker' });
      expect(bags.rowCount).toBe(15);
      // The legacy tables are untouched (no injected statement ran).
      const legacy = await c.query(`SELECT count(*)::int AS n FROM public."Weird ""Bags""; --"`);
      expect(legacy.rows[0].n).toBe(17);
    });
  });

  it('1 MB text, emoji and control characters migrate byte-exactly; a 1 MB bag name (VARCHAR(100)) is rejected with a reason', async () => {
    const db = await createTestDatabase('btext');
    await loadFixture(db.url, 'a');
    const big = 'x'.repeat(1024 * 1024 - 5) + '😀\\\t\n';
    const controls = 'ctl \u0001 tab\t nl\n cr\r back\\slash \\N "quote" \'apos\' 🚚📦 Zoë 北京';
    await withTestClient(db.url, async (c) => {
      await c.query(`ALTER TABLE bag ALTER COLUMN bag_name TYPE text`);
      await c.query(`UPDATE bill SET description = $1 WHERE id = 1`, [big]);
      await c.query(`UPDATE bill SET description = $1 WHERE id = 2`, [controls]);
      await c.query(`UPDATE bag SET bag_name = $1 WHERE id = 1`, [controls]);
      await c.query(`UPDATE bag SET bag_name = $1 WHERE id = 9`, [big]);
    });
    const run = await runTasks(deps(db.url), { runId: 'text', batchSize: 5 });
    await withTestClient(db.url, async (c) => {
      expect((await c.query(`SELECT verification->>'passed' AS p FROM tracetrack._migration_run`)).rows[0].p).toBe('true');
      const bills = await c.query(`SELECT id, description FROM tracetrack.bill WHERE id IN (1, 2) ORDER BY id`);
      expect(bills.rows[0].description).toBe(big);
      expect(bills.rows[1].description).toBe(controls);
      const bag1 = await c.query(`SELECT name FROM tracetrack.bag WHERE id = 1`);
      expect(bag1.rows[0].name).toBe(controls);
      expect(Buffer.from(bag1.rows[0].name, 'utf8').equals(Buffer.from(controls, 'utf8'))).toBe(true);
      expect((await c.query(`SELECT 1 FROM tracetrack.bag WHERE id = 9`)).rowCount).toBe(0);
      const rej = await c.query(`SELECT reason FROM tracetrack._migration_reject WHERE run_id = $1 AND target_table = 'bag' AND source_key = '9'`, [run.runId]);
      expect(rej.rows[0]?.reason).toMatch(/name|100|long/i);
    });
  });

  it('timestamps far in the past and the future (0001-01-01, 9999-12-31 23:59:59) migrate exactly', async () => {
    const db = await createTestDatabase('bts');
    await loadFixture(db.url, 'a');
    await withTestClient(db.url, (c) =>
      c.query(`UPDATE bag SET created_at = '0001-01-01 00:00:00' WHERE id = 1;
               UPDATE bag SET created_at = '9999-12-31 23:59:59' WHERE id = 2;
               UPDATE scan SET created_at = '0001-01-01 00:00:00' WHERE id = 1;
               UPDATE scan SET created_at = '9999-12-31 23:59:59.999999' WHERE id = 4;
               UPDATE bill SET created_at = '0001-01-01 00:00:00' WHERE id = 1;
               UPDATE bill SET created_at = '9999-12-31 23:59:59' WHERE id = 2;
               UPDATE "user" SET created_at = '0001-01-01' WHERE id = 1`),
    );
    await runTasks(deps(db.url), { runId: 'ts', batchSize: 5 });
    await withTestClient(db.url, async (c) => {
      expect((await c.query(`SELECT verification->>'passed' AS p FROM tracetrack._migration_run`)).rows[0].p).toBe('true');
      const q = async (sql: string) => (await c.query(sql)).rows.map((r) => r.t);
      expect(await q(`SELECT created_at::text AS t FROM tracetrack.bag WHERE id IN (1, 2) ORDER BY id`)).toEqual(['0001-01-01 00:00:00', '9999-12-31 23:59:59']);
      expect(await q(`SELECT timestamp::text AS t FROM tracetrack.scan WHERE id IN (1, 4) ORDER BY id`)).toEqual(['0001-01-01 00:00:00', '9999-12-31 23:59:59.999999']);
      expect(await q(`SELECT created_at::text AS t FROM tracetrack.bill WHERE id IN (1, 2) ORDER BY id`)).toEqual(['0001-01-01 00:00:00', '9999-12-31 23:59:59']);
      expect(await q(`SELECT created_at::text AS t FROM tracetrack."user" WHERE id = 1`)).toEqual(['0001-01-01 00:00:00']);
    });
  });
});
