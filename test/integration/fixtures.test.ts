import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createTestDatabase, withTestClient } from '../support/pg';
import {
  checkPasswordWerkzeug,
  classifyPasswordValue,
} from '../../lambdas/io/password';
import { BCRYPT_HASH_PATTERN, WERKZEUG_HASH_PATTERN } from '../../lambdas/core/rules';
import { checkableHashSql } from '../../lambdas/core/sql/values';
import { seedLegacyShapeA } from '../../lib/runner/demo-seed';

/** The fixtures are test data; these tests prove the data itself is what the expect files say. */

const FIXTURES = join(__dirname, '..', 'fixtures');

interface DirtyRow {
  readonly table: string;
  readonly id?: number;
  readonly expect: 'migrated' | 'rejected' | 'not-migrated';
  readonly password?: 'copied' | 'plaintext-rehashed' | 'placeholder-needs-reset';
  readonly login_with?: string;
}

interface ExpectFile {
  readonly shape: string;
  readonly fixture: string;
  readonly source_tables: Record<string, number>;
  readonly targets: Record<string, { migrated: number; rejected: number; derived?: number }>;
  readonly dirty_rows: DirtyRow[];
}

const shapes = readdirSync(FIXTURES)
  .filter((f) => /^shape-[a-z]+\.sql$/.test(f))
  .map((f) => f.replace(/\.sql$/, ''))
  .sort();

function readExpect(shape: string): ExpectFile {
  return JSON.parse(readFileSync(join(FIXTURES, `${shape}.expect.json`), 'utf8')) as ExpectFile;
}

async function loadFixture(shape: string) {
  const db = await createTestDatabase('fx');
  await withTestClient(db.url, (c) => c.query(readFileSync(join(FIXTURES, `${shape}.sql`), 'utf8')));
  return db;
}

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;

describe('source-shape fixtures', () => {
  it('covers shapes A to E and A+E together', () => {
    expect(shapes).toEqual(['shape-a', 'shape-ae', 'shape-b', 'shape-c', 'shape-d', 'shape-e']);
  });

  it.each(shapes)('%s loads into a fresh database and holds exactly the tables and row counts of its expect file', async (shape) => {
    const expected = readExpect(shape);
    expect(expected.fixture).toBe(`${shape}.sql`);
    const db = await loadFixture(shape);
    try {
      await withTestClient(db.url, async (c) => {
        const tables = await c.query<{ relname: string }>(
          `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1`,
        );
        expect(tables.rows.map((r) => r.relname).sort()).toEqual(Object.keys(expected.source_tables).sort());
        for (const [table, count] of Object.entries(expected.source_tables)) {
          const { rows } = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.${ident(table)}`);
          expect({ table, n: rows[0]!.n }).toEqual({ table, n: count });
          expect(count).toBeGreaterThanOrEqual(['location', 'alembic_version'].includes(table) ? 1 : 10);
          expect(count).toBeLessThanOrEqual(40);
        }
        // Every dirty row named by id exists in its source table.
        for (const row of expected.dirty_rows) {
          if (row.id === undefined || !(row.table in expected.source_tables)) continue;
          const { rowCount } = await c.query(`SELECT 1 FROM public.${ident(row.table)} WHERE id = $1`, [row.id]);
          expect({ table: row.table, id: row.id, found: rowCount }).toEqual({ table: row.table, id: row.id, found: 1 });
        }
        // Sequences are past the largest id, so the fixture behaves like a live database.
        for (const table of Object.keys(expected.source_tables)) {
          const seq = await c.query<{ seq: string | null }>(
            `SELECT pg_get_serial_sequence($1, 'id') AS seq FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $2 AND column_name = 'id'`,
            [`public.${ident(table)}`, table],
          );
          const name = seq.rows[0]?.seq;
          if (!name) continue;
          const { rows } = await c.query<{ last: string; max: number | null }>(
            `SELECT (SELECT last_value FROM ${name}) AS last, (SELECT max(id) FROM public.${ident(table)}) AS max`,
          );
          expect(Number(rows[0]!.last)).toBeGreaterThanOrEqual(rows[0]!.max ?? 0);
        }
      });
    } finally {
      await db.drop();
    }
  });

  it.each(shapes)('%s: each target total adds up and each werkzeug hash logs in with its documented password', async (shape) => {
    const expected = readExpect(shape);
    for (const [table, t] of Object.entries(expected.targets)) {
      expect({ table, ok: t.migrated >= 0 && t.rejected >= 0 }).toEqual({ table, ok: true });
    }
    const db = await loadFixture(shape);
    try {
      await withTestClient(db.url, async (c) => {
        for (const row of expected.dirty_rows.filter((r) => r.login_with !== undefined && r.id !== undefined)) {
          const { rows } = await c.query<{ j: Record<string, string | null> }>(
            `SELECT row_to_json(t) AS j FROM public.${ident(row.table)} t WHERE id = $1`,
            [row.id],
          );
          const value = rows[0]!.j.password_hash ?? rows[0]!.j.password ?? null;
          const kind = classifyPasswordValue(value);
          if (row.password === 'copied') {
            expect({ id: row.id, kind }).toMatchObject({ id: row.id, kind: expect.stringMatching(/^werkzeug-/) });
            expect({ id: row.id, ok: await checkPasswordWerkzeug(value!, row.login_with!) }).toEqual({ id: row.id, ok: true });
          } else if (row.password === 'plaintext-rehashed') {
            expect({ id: row.id, value }).toEqual({ id: row.id, value: row.login_with });
          }
        }
      });
    } finally {
      await db.drop();
    }
  });

  it('PostgreSQL `~` with the exported regexes, and the SQL the migration uses (checkableHashSql), classify every fixture password like classifyPasswordValue', async () => {
    const db = await createTestDatabase('fx');
    try {
      await withTestClient(db.url, async (c) => {
        const values: string[] = [];
        for (const shape of shapes) {
          const sql = readFileSync(join(FIXTURES, `${shape}.sql`), 'utf8');
          for (const m of sql.matchAll(/'((?:scrypt|pbkdf2|\$2)[^']*)'/g)) values.push(m[1]!);
        }
        const scrypt = values.find((v) => v.startsWith('scrypt:'))!;
        const [head, digits] = [scrypt.slice(0, scrypt.lastIndexOf('$') + 1), scrypt.slice(scrypt.lastIndexOf('$') + 1)];
        // The scrypt key's digit count, which checkableHashSql checks by length instead of the pattern's {128}.
        values.push(head + digits.slice(1), head + digits + 'a', head + digits.toUpperCase(), `${head}${digits}$`, head.replace(/[$][^$]*[$]$/, '$$') + digits);
        values.push('hunter2', 'RESET', '!', 'correct horse', '', 'scrypt:', 'pbkdf2:sha256$abc$9d94', 'pbkdf2:sha256$abc$');
        const { rows } = await c.query<{ v: string; werkzeug: boolean; bcrypt: boolean; checkable: boolean }>(
          `SELECT v, v ~ $2 AS werkzeug, v ~ $3 AS bcrypt, ${checkableHashSql('v')} AS checkable FROM unnest($1::text[]) AS v`,
          [values, WERKZEUG_HASH_PATTERN, BCRYPT_HASH_PATTERN],
        );
        expect(rows.length).toBeGreaterThan(20);
        for (const r of rows) {
          const kind = classifyPasswordValue(r.v);
          const werkzeug = kind === 'werkzeug-scrypt' || kind === 'werkzeug-pbkdf2';
          expect({ v: r.v, werkzeug: r.werkzeug, bcrypt: r.bcrypt, checkable: r.checkable }).toEqual({ v: r.v, werkzeug, bcrypt: kind === 'bcrypt', checkable: werkzeug || kind === 'bcrypt' });
        }
        expect(rows.filter((r) => r.v.startsWith(head) && !r.checkable)).toHaveLength(4);
      });
    } finally {
      await db.drop();
    }
  });
});

describe('seedLegacyShapeA', () => {
  it('generates a shape-A database server-side at scale 0.002 with proportional counts and dirty rows', async () => {
    const db = await createTestDatabase('seed');
    try {
      await withTestClient(db.url, async (c) => {
        const summary = await seedLegacyShapeA(c, { scale: 0.002 });
        expect(summary.rows).toEqual({ user: 20, bag: 2000, scan: 6000, bill: 100, bill_bag: 2000 });
        for (const [table, n] of Object.entries(summary.rows)) {
          const { rows } = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM public.${ident(table)}`);
          expect({ table, n: rows[0]!.n }).toEqual({ table, n });
        }
        for (const [kind, n] of Object.entries(summary.dirty)) expect({ kind, positive: n > 0 }).toEqual({ kind, positive: true });

        const dup = await c.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM (SELECT upper(btrim(qr_code)) FROM bag GROUP BY 1 HAVING count(*) > 1) d`,
        );
        expect(dup.rows[0]!.n).toBe(summary.dirty.duplicateQr);
        const neg = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM bag WHERE weight < 0`);
        expect(neg.rows[0]!.n).toBe(summary.dirty.negativeWeight);
        const orphan = await c.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM bag b WHERE b.parent_bag_id IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM bag p WHERE p.id = b.parent_bag_id)`,
        );
        expect(orphan.rows[0]!.n).toBe(summary.dirty.orphanParent);
        const users = await c.query<{ password: string; name: string }>(`SELECT name, password FROM "user" ORDER BY id`);
        const kinds = users.rows.map((u) => classifyPasswordValue(u.password));
        expect(kinds.filter((k) => k === 'other')).toHaveLength(summary.dirty.plaintextPassword);
        expect(kinds.filter((k) => k === 'werkzeug-scrypt').length).toBeGreaterThan(users.rows.length / 2);
        const hashed = users.rows.find((u) => classifyPasswordValue(u.password) === 'werkzeug-scrypt')!;
        expect(await checkPasswordWerkzeug(hashed.password, summary.demoPassword)).toBe(true);
        const idx = await c.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%_pkey'`,
        );
        expect(idx.rows[0]!.n).toBeGreaterThan(0);
      });
    } finally {
      await db.drop();
    }
  });
});
