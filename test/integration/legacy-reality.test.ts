import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { analyseSource } from '../../lambdas/engine/analyse';
import { cutoverRun } from '../../lambdas/engine/cutover';
import { preflightTask } from '../../lambdas/engine/tasks';
import { verifyRun } from '../../lambdas/engine/verify';
import { APP_INDEXES } from '../../lambdas/core/sql/target-ddl';
import { TARGET_TABLES } from '../../lambdas/core/rules';
import type { VerificationResult } from '../../lambdas/core/verify';
import { connect, parseDatabaseUrl } from '../../lambdas/io/pg';
import { readObjectText } from '../../lambdas/io/s3';
import { loadFixture, runEngine, withFixtureDatabase, type EngineRunOptions } from '../support/engine';
import { adminQuery, adminUrl, createTestDatabase, withTestClient } from '../support/pg';
import { useTestS3 } from '../support/s3';
import { runTasks, taskDeps } from '../support/tasks';
import { werkzeugCheck } from '../support/werkzeug';

/**
 * Real legacy databases where a migration could change data without a word (issue 11): names in other
 * cases and styles, row-level security, tables without a primary key, the real application's own table
 * names, the summaries it derives, its indexes, reports in target terms. Shape A plus one change each,
 * and two databases built from the application's own models of two eras.
 */

const SCHEMA = 'tracetrack';

const store = useTestS3();

interface Migrated {
  readonly c: pg.Client;
  readonly verification: VerificationResult;
  readonly plan: Awaited<ReturnType<typeof runEngine>>['plan'];
}

/** Shape `shape` changed by `sql`, migrated in-process and verified. */
async function migrateVariant<T>(shape: string, sql: string, fn: (m: Migrated) => Promise<T>, options: EngineRunOptions = {}): Promise<T> {
  return withFixtureDatabase(shape, async (c) => {
    if (sql) await c.query(sql);
    const { plan, run } = await runEngine(c, options);
    const verification = await verifyRun({ client: c, run, plan });
    return fn({ c, verification, plan });
  }, 'lr');
}

async function rows(c: pg.ClientBase, sql: string, values: unknown[] = []): Promise<Record<string, unknown>[]> {
  return (await c.query(sql, values)).rows;
}

const failed = (v: VerificationResult) => v.checks.filter((x) => !x.passed).map((x) => `${x.name}: ${x.detail}`);

describe('names in any case and style', () => {
  it('a "Weight" column is read as weight: values copied, the negative one still rejected', async () => {
    await migrateVariant('a', 'ALTER TABLE bag RENAME COLUMN weight TO "Weight"', async ({ c, verification, plan }) => {
      expect(failed(verification)).toEqual([]);
      const bags = await rows(c, `SELECT id, weight_kg FROM ${SCHEMA}.bag WHERE id IN (1, 14) ORDER BY id`);
      expect(bags).toEqual([{ id: 1, weight_kg: 25 }, { id: 14, weight_kg: 12.5 }]);
      const neg = await rows(c, `SELECT reason FROM ${SCHEMA}._migration_reject WHERE source_table = 'bag' AND source_key = '8'`);
      expect(String(neg[0]?.reason)).toContain('negative weight -2.5');
      expect(plan.decisions.find((d) => d.target === 'bag.weight_kg')?.decision).toContain('bag.Weight (name matched regardless of case and style: weight)');
    });
  });

  it('"qrCode" and "createdAt" are qr_code and created_at: QR codes and timestamps kept, no knock-on rejects', async () => {
    await migrateVariant('a', 'ALTER TABLE bag RENAME COLUMN qr_code TO "qrCode"; ALTER TABLE bag RENAME COLUMN created_at TO "createdAt"', async ({ c, verification }) => {
      expect(failed(verification)).toEqual([]);
      const bag1 = await rows(c, `SELECT qr_id, created_at::text AS created_at FROM ${SCHEMA}.bag WHERE id = 1`);
      expect(bag1).toEqual([{ qr_id: 'SB00001', created_at: '2024-01-01 08:00:00' }]);
      // As in shape A: 15 bags and 9 bill_bag rows migrate.
      expect(verification.tables.bag!.migrated).toBe(15);
      expect(verification.tables.bill_bag!.migrated).toBe(9);
    });
  });

  it('two columns that fold to one alias are an analysis error naming both', async () => {
    await withFixtureDatabase('a', async (c) => {
      await c.query(`ALTER TABLE bag ADD COLUMN "QR_Code" text`);
      const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: SCHEMA });
      expect(plan.problems.join('\n')).toMatch(/"qr_code" and "QR_Code"/);
    }, 'lr');
  });

  it('columns that hold data and map to nothing are warnings the run prints, not only the analysis', async () => {
    const db = await createTestDatabase('lr');
    try {
      await loadFixture(db.url, 'a');
      await withTestClient(db.url, (c) => c.query(`ALTER TABLE bag ADD COLUMN remarks text, ADD COLUMN never_used text; UPDATE bag SET remarks = 'fragile' WHERE id = 1`));
      const lines: string[] = [];
      await runTasks(taskDeps(store.current, db.url, db.url, { log: (l) => lines.push(l) }), { runId: 'unmapped-1' });
      const printed = lines.filter((l) => l.includes('warning:')).join('\n');
      expect(printed).toContain('"remarks"');
      expect(printed).not.toContain('never_used');
      const report = JSON.parse((await readObjectText(store.current.s3, store.current.bucket, 'runs/unmapped-1/report.json'))!);
      expect(report.unmappedColumnsWithData).toEqual([{ table: 'bag', columns: ['remarks'] }]);
    } finally {
      await db.drop();
    }
  });
});

describe('row-level security', () => {
  it('Preflight refuses a table whose policies hide rows from the role, and no session can read part of a table', async () => {
    const db = await createTestDatabase('lr');
    const role = `mig_${randomBytes(4).toString('hex')}`;
    try {
      await loadFixture(db.url, 'a');
      await adminQuery(`CREATE ROLE ${role} LOGIN PASSWORD 'rls-test'`);
      await withTestClient(db.url, (c) =>
        c.query(`GRANT CREATE ON DATABASE "${db.name}" TO ${role};
                 GRANT USAGE ON SCHEMA public TO ${role}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role};
                 ALTER TABLE bag ENABLE ROW LEVEL SECURITY; CREATE POLICY some_bags ON bag FOR SELECT USING (id <= 11);
                 ALTER TABLE scan ENABLE ROW LEVEL SECURITY; CREATE POLICY some_scans ON scan FOR SELECT USING (id <= 6)`),
      );
      const url = new URL(db.url);
      url.username = role;
      url.password = 'rls-test';
      const roleUrl = url.toString();
      await expect(preflightTask({ input: { runId: 'rls-1' } }, taskDeps(store.current, roleUrl, roleUrl))).rejects.toMatchObject({
        name: 'PermissionError',
        message: expect.stringMatching(/Row-level security would hide rows of "bag", "scan".*BYPASSRLS/s),
      });
      // Every session of the migration runs with row_security=off: a filtered read fails instead of returning 11 of 17.
      const client = await connect(parseDatabaseUrl(roleUrl));
      try {
        await expect(client.query('SELECT count(*) FROM public.bag')).rejects.toMatchObject({ code: '42501' });
      } finally {
        await client.end();
      }
      // With the privilege to see every row, the run migrates all 17 bags.
      await adminQuery(`ALTER ROLE ${role} BYPASSRLS`);
      await runTasks(taskDeps(store.current, roleUrl, roleUrl), { runId: 'rls-2' });
      const counted = await withTestClient(db.url, (c) => rows(c, `SELECT verification->'tables'->'bag'->>'migrated' AS m, verification->'tables'->'bag'->>'rejected' AS r FROM ${SCHEMA}._migration_run WHERE run_id = 'rls-2'`));
      expect(counted).toEqual([{ m: '15', r: '2' }]);
    } finally {
      await db.drop();
      await adminQuery(`DROP ROLE IF EXISTS ${role}`);
    }
  });
});

describe('tables without a primary key', () => {
  it('NULL and duplicate ids become rejected rows with reasons; Verify accounts for every row', async () => {
    const sql = `ALTER TABLE scan DROP CONSTRAINT scan_pkey; ALTER TABLE scan ALTER COLUMN id DROP NOT NULL;
                 INSERT INTO scan (id, created_at, parent_id, child_id, scanner_id) VALUES
                   (NULL, '2024-02-01 10:00:00', 1, 4, 3), (NULL, '2024-02-02 10:00:00', 2, 6, 3), (3, '2024-02-03 10:00:00', 1, 5, 3)`;
    await migrateVariant('a', sql, async ({ c, verification }) => {
      expect(failed(verification)).toEqual([]);
      const rej = await rows(c, `SELECT source_key, reason FROM ${SCHEMA}._migration_reject WHERE source_table = 'scan' AND (source_key LIKE 'NULL#%' OR source_key LIKE '3#%') ORDER BY source_key`);
      expect(rej).toEqual([
        { source_key: '3#1', reason: 'duplicate id 3 (2 rows)' },
        { source_key: '3#2', reason: 'duplicate id 3 (2 rows)' },
        { source_key: 'NULL#1', reason: 'id is NULL (a row without an id)' },
        { source_key: 'NULL#2', reason: 'id is NULL (a row without an id)' },
      ]);
      expect(verification.tables.scan).toMatchObject({ migrated: 11, rejected: 6 });
      expect(await rows(c, `SELECT count(*)::int AS n FROM ${SCHEMA}.scan WHERE id = 3`)).toEqual([{ n: 0 }]);
    });
  });

  it('across databases, rows without an id are staged too (and rejected): nothing is lost in the copy', async () => {
    const src = await createTestDatabase('lr');
    const tgt = await createTestDatabase('lr');
    try {
      await loadFixture(src.url, 'a');
      await withTestClient(src.url, (c) => c.query(`ALTER TABLE scan DROP CONSTRAINT scan_pkey; ALTER TABLE scan ALTER COLUMN id DROP NOT NULL;
        INSERT INTO scan (id, created_at, parent_id, child_id, scanner_id) VALUES (NULL, '2024-02-01 10:00:00', 1, 4, 3)`));
      await runTasks(taskDeps(store.current, src.url, tgt.url, { timeBudgetMs: 1 }), { runId: 'cross-null', batchSize: 4 });
      const rec = await withTestClient(tgt.url, (c) => rows(c, `SELECT verification FROM ${SCHEMA}._migration_run WHERE run_id = 'cross-null'`));
      const v = rec[0]!.verification as VerificationResult;
      expect(failed(v)).toEqual([]);
      expect(v.tables.scan).toMatchObject({ migrated: 12, rejected: 3 });
    } finally {
      await src.drop();
      await tgt.drop();
    }
  });

  it('a table whose rows all lack an id is read and rejected, not skipped', async () => {
    const sql = `ALTER TABLE bill_bag DROP CONSTRAINT bill_bag_pkey; ALTER TABLE bill_bag ALTER COLUMN id DROP NOT NULL; UPDATE bill_bag SET id = NULL`;
    await migrateVariant('a', sql, async ({ verification }) => {
      expect(failed(verification)).toEqual([]);
      expect(verification.tables.bill_bag).toMatchObject({ migrated: 0, rejected: 12 });
    });
  });

  it('plaintext passwords of a table without a primary key are hashed and log in (id column and no id at all)', async () => {
    await migrateVariant('a', `ALTER TABLE "user" DROP CONSTRAINT user_pkey CASCADE`, async ({ c, verification }) => {
      expect(failed(verification)).toEqual([]);
      const u = await rows(c, `SELECT password_hash FROM ${SCHEMA}."user" WHERE id = 3`);
      expect(werkzeugCheck(String(u[0]!.password_hash), 'hunter2')).toBe(true);
    });
    await withFixtureDatabase('a', async (c) => {
      await c.query(`DROP TABLE bag, scan, bill, bill_bag; CREATE TABLE staff (name text, email text, password text);
                     DROP TABLE "user"; ALTER TABLE staff RENAME TO "user";
                     INSERT INTO "user" VALUES ('kiran', 'kiran@example.org', 'kiran-pass'), ('lata', 'lata@example.org', 'lata-pass')`);
      const { plan, run } = await runEngine(c);
      expect(plan.tables[0]!.sources[0]!.keyStrategy).toBe('single-batch');
      const v = await verifyRun({ client: c, run, plan });
      expect(failed(v)).toEqual([]);
      const users = await rows(c, `SELECT username, password_hash FROM ${SCHEMA}."user" ORDER BY username`);
      expect(users.map((u) => werkzeugCheck(String(u.password_hash), `${u.username}-pass`))).toEqual([true, true]);
    }, 'lr');
  });

  it('a reference into a table whose ids are generated is refused, not resolved to whichever row got the number', async () => {
    await withFixtureDatabase('a', async (c) => {
      await c.query(`ALTER TABLE "user" DROP CONSTRAINT user_pkey CASCADE; ALTER TABLE "user" DROP COLUMN id`);
      const { plan } = await analyseSource(c, { sourceSchema: 'public', targetSchema: SCHEMA });
      expect(plan.problems.join('\n')).toContain('bag.owner_id references user, which has no integer id column');
    }, 'lr');
  });
});

describe("the real application's databases", () => {
  const LOGINS: Record<string, Record<string, string>> = {
    'era-admin-employee': { admin: 'admin-1234', ravi: 'employee-pass', meena: 'employee-pass', bill_desk: 'biller-era', ops: 'Ops Ünïcode 🚚' },
    'era-split-bags': { boss: 'parent-era-admin', scanner: 'scanner-pass', veteran: 'old-user' },
  };

  it.each(Object.keys(LOGINS))('%s: after run and cutover every user logs in, summaries are the application\'s, QR lookups use an index', async (era) => {
    const db = await createTestDatabase('era');
    // A transaction elsewhere on the server, older than the whole run and open past the cutover (a report, a
    // backup, another application): the indexes finalize builds must still serve the application's lookups.
    const elder = new pg.Client({ connectionString: adminUrl() });
    await elder.connect();
    try {
      await elder.query('BEGIN');
      await elder.query('SELECT txid_current()');
      await loadFixture(db.url, era);
      await runTasks(taskDeps(store.current, db.url), { runId: `${era}-1` });
      await withTestClient(db.url, async (c) => {
        const rec = await rows(c, `SELECT status, verification FROM ${SCHEMA}._migration_run WHERE run_id = $1`, [`${era}-1`]);
        expect(failed(rec[0]!.verification as VerificationResult)).toEqual([]);
        expect(rec[0]!.status).toBe('completed');
        await cutoverRun({ client: c, targetSchema: SCHEMA, runId: `${era}-1` });
        // The application's login: exact username, werkzeug check_password_hash, verified TRUE.
        const users = await rows(c, `SELECT username, password_hash, verified FROM public."user" ORDER BY id`);
        expect(users.map((u) => u.username).sort()).toEqual(Object.keys(LOGINS[era]!).sort());
        for (const u of users) {
          expect({ user: u.username, ok: werkzeugCheck(String(u.password_hash), LOGINS[era]![String(u.username)]!), verified: u.verified }).toEqual({ user: u.username, ok: true, verified: true });
        }
        const bills = await rows(c, `SELECT b.id, b.linked_parent_count AS stored, (SELECT count(*)::int FROM public.bill_bag x WHERE x.bill_id = b.id) AS counted FROM public.bill b`);
        for (const b of bills) expect(b.stored).toBe(b.counted);
        const parents = await rows(c, `SELECT p.id, p.child_count, p.weight_kg, p.status, (SELECT count(*)::int FROM public.link l WHERE l.parent_bag_id = p.id) AS links
                                         FROM public.bag p WHERE p.type = 'parent' ORDER BY p.id`);
        expect(parents.length).toBe(3);
        for (const p of parents) {
          // Neither era stored weights: 1 kg per child. The split era stored no status either; the
          // admin/employee era's own status values are copied (and counted as disagreeing, below).
          expect(p.weight_kg).toBe(p.links);
          if (era === 'era-split-bags') expect([p.child_count, p.status]).toEqual([p.links, Number(p.links) >= 30 ? 'completed' : 'pending']);
        }
        await c.query('BEGIN');
        await c.query('SET LOCAL enable_seqscan = off');
        const plan = JSON.stringify((await c.query(`EXPLAIN (FORMAT JSON) SELECT * FROM public.bag WHERE qr_id = $1`, ['SB10001'])).rows[0]);
        await c.query('ROLLBACK');
        const indexes = (await c.query(`SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'bag' ORDER BY 1`)).rows;
        expect({ plan, indexes }).toMatchObject({ plan: expect.stringContaining('idx_bag_qr_id') });
        expect(plan).not.toContain('Seq Scan');
        // No index the migration built is barred from older snapshots (pg_index.indcheckxmin).
        const barred = await c.query(`SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                                       WHERE n.nspname = 'public' AND i.indcheckxmin ORDER BY 1`);
        expect(barred.rows).toEqual([]);
      });
    } finally {
      await elder.end().catch(() => undefined);
      await db.drop();
    }
  });

  it('admin/employee era: promotion_request is migrated; the stale child_count is copied and counted as disagreeing', async () => {
    const db = await createTestDatabase('era');
    try {
      await loadFixture(db.url, 'era-admin-employee');
      await runTasks(taskDeps(store.current, db.url), { runId: 'era-pr' });
      await withTestClient(db.url, async (c) => {
        expect(await rows(c, `SELECT user_id, reason, status FROM ${SCHEMA}.promotionrequest ORDER BY id`)).toEqual([
          { user_id: 2, reason: 'Runs the night shift', status: 'approved' },
          { user_id: 3, reason: 'Requested role: admin', status: 'pending' },
        ]);
        const v = (await rows(c, `SELECT verification FROM ${SCHEMA}._migration_run WHERE run_id = 'era-pr'`))[0]!.verification as VerificationResult;
        expect(v.readiness.summariesDisagreeing['bag.child_count']).toEqual({ count: 1, sample: [{ id: 2, stored: '5', derived: '3' }] });
        expect(v.readiness.summariesDisagreeing['bag.status']).toMatchObject({ count: 3 });
        expect(v.readiness.counts['summaryDisagrees:bag.status']).toBe(3);
        expect(await rows(c, `SELECT child_count FROM ${SCHEMA}.bag WHERE id = 2`)).toEqual([{ child_count: 5 }]);
        expect(v.checks.find((x) => x.name === 'derived:bill.linked_parent_count')?.passed).toBe(true);
      });
      // --recompute-summaries: every summary follows the application's rule.
      await runTasks(taskDeps(store.current, db.url), { runId: 'era-pr2', targetSchema: 'tt_recomputed', recomputeSummaries: true });
      await withTestClient(db.url, async (c) => {
        expect(await rows(c, `SELECT child_count FROM tt_recomputed.bag WHERE id = 2`)).toEqual([{ child_count: 3 }]);
        const v = (await rows(c, `SELECT verification FROM tt_recomputed._migration_run WHERE run_id = 'era-pr2'`))[0]!.verification as VerificationResult;
        expect(v.checks.find((x) => x.name === 'derived:bag.child_count')?.passed).toBe(true);
        expect(v.readiness.summariesDisagreeing['bag.child_count']).toBeUndefined();
      });
    } finally {
      await db.drop();
    }
  });
});

describe('what the application derives, and its indexes', () => {
  it('bill summaries the source lacks are computed; Verify fails when one is wrong', async () => {
    await migrateVariant('a', '', async ({ c, verification, plan }) => {
      expect(failed(verification)).toEqual([]);
      const bills = await rows(c, `SELECT b.linked_parent_count AS stored, (SELECT count(*)::int FROM ${SCHEMA}.bill_bag x WHERE x.bill_id = b.id) AS counted FROM ${SCHEMA}.bill b`);
      expect(bills.some((b) => Number(b.counted) > 0)).toBe(true);
      for (const b of bills) expect(b.stored).toBe(b.counted);
      await c.query(`UPDATE ${SCHEMA}.bill SET linked_parent_count = 0 WHERE id = 1`);
      const again = await verifyRun({ client: c, run: { runId: 'test-run', sourceSchema: 'public', targetSchema: SCHEMA, runTime: '2026-01-01T00:00:00', batchSize: 7 }, plan });
      expect(failed(again).join('\n')).toContain('derived:bill.linked_parent_count: 1 rows differ');
    });
  });

  it('the target has an index serving every index the application declares', async () => {
    await migrateVariant('a', '', async ({ c }) => {
      const idx = await rows(c, `SELECT t.relname AS tbl, ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY k(n, o)
                                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) AS cols
                                    FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
                                   WHERE n.nspname = $1`, [SCHEMA]);
      const missing: string[] = [];
      for (const table of TARGET_TABLES) {
        for (const wanted of APP_INDEXES[table]) {
          const served = idx.some((i) => i.tbl === table && wanted.every((col, k) => (i.cols as string[])[k] === col));
          if (!served) missing.push(`${table}(${wanted.join(', ')})`);
        }
      }
      expect(missing).toEqual([]);
    });
  });
});

describe('reports in target terms', () => {
  it('a reason about a merged source names the source id and the target id', async () => {
    await migrateVariant('ae', '', async ({ c }) => {
      const r = await rows(c, `SELECT reason FROM ${SCHEMA}._migration_reject WHERE source_table = 'links' AND source_key = '9'`);
      expect(String(r[0]?.reason)).toMatch(/bag 404 \(target id \d+\) does not exist/);
    });
  });

  it('readiness counts are exact and its bags are the target ids of the rejected links', async () => {
    const many = `INSERT INTO bag (id, qr_code, parent_bag_id, owner_id, created_at)
                  SELECT 1000 + g, 'CBX' || g, 999, 3, '2024-03-01 08:00:00' FROM generate_series(1, 250) g`;
    await migrateVariant('a', many, async ({ verification }) => {
      expect(verification.readiness.counts.bagsWithRejectedParentLink).toBe(251);
      expect(verification.readiness.bagsWithRejectedParentLink).toHaveLength(200);
    });
    // Two children of the merged `bags` source whose parent does not exist: their target ids are offset.
    const orphans = `INSERT INTO bags (id, qr_code, weight, status, parent_bag_id, is_parent, created_at) VALUES
                       (50, 'CE00050', '1kg', 'pending', 777, false, '2024-02-01 08:00:00'), (51, 'CE00051', '1kg', 'pending', 778, false, '2024-02-01 08:00:00')`;
    await migrateVariant('ae', orphans, async ({ c, verification }) => {
      const expected = await rows(c, `SELECT DISTINCT m.target_id::int AS id FROM ${SCHEMA}._migration_reject r
                                         JOIN ${SCHEMA}._migration_id_map m ON m.source_table = split_part(r.source_table, '.', 1) AND m.source_key = r.source_key::bigint
                                        WHERE r.source_table LIKE '%(derived link)' ORDER BY 1`);
      expect(expected.length).toBeGreaterThanOrEqual(2);
      expect(expected.every((x) => Number(x.id) > 51)).toBe(true);
      expect(verification.readiness.bagsWithRejectedParentLink).toEqual(expected.map((x) => x.id));
    });
  });

  it('a scrypt hash with hex of the wrong length is not checkable: its user is listed for a reset', async () => {
    const sql = `ALTER TABLE "user" RENAME COLUMN password TO password_hash; UPDATE "user" SET password_hash = left(password_hash, 60) WHERE id = 12`;
    await migrateVariant('a', sql, async ({ verification }) => {
      expect(verification.readiness.usersNeedingPasswordReset.map((u) => u.id)).toContain(12);
    });
  });
});
