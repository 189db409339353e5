import { describe, expect, it } from 'vitest';
import { fingerprintHashExpr } from '../../lambdas/core/verify';
import type { Plan } from '../../lambdas/core/planner';
import { sourceFingerprints } from '../../lambdas/engine/cutover';
import { fingerprintRows } from '../../lambdas/engine/verify-checks';
import { readRowColumns } from '../../lambdas/io/catalog';
import { createTestDatabase, withTestClient } from '../support/pg';

/**
 * The source fingerprint a cutover compares with Verify's (runs without capture): hashed typed on PostgreSQL 14+
 * (fingerprintHashExpr), it must still see every change the row's text saw, including those between equal values:
 * numeric's scale, a float's negative zero, json's spacing, case under a case-insensitive collation.
 */
describe('source fingerprints', () => {
  it('typed and as text, see every change of a row, also between equal values; an unchanged table hashes alike', async () => {
    const db = await createTestDatabase('fp');
    try {
      await withTestClient(db.url, async (c) => {
        const icu = Number((await c.query(`SELECT count(*)::int AS n FROM pg_collation WHERE collprovider = 'i'`)).rows[0].n) > 0;
        if (icu) await c.query(`CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false)`);
        await c.query(`CREATE DOMAIN weight_kg AS numeric`);
        await c.query(`CREATE TABLE "Fp Rows" (
          id int4 PRIMARY KEY, n numeric, f float8, j json, jb jsonb, t text, v varchar(20), ci text ${icu ? 'COLLATE nocase' : ''},
          ts timestamp, tz timestamptz, d date, b bool, u uuid, by bytea, w weight_kg, arr numeric[], big int8, small int2)`);
        await c.query(`INSERT INTO "Fp Rows" VALUES
          (1, 1.0, 0, '{"a":1}', '{"a":1}', 'x', 'Bag', 'Bag', '2024-05-01 10:00:00', '2024-05-01 10:00:00+00', '2024-05-01', true,
           '00000000-0000-0000-0000-000000000001', '\\x01', 2.0, '{1.0}', 9007199254740993, 7),
          (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)`);
        const columns = await readRowColumns(c, 'public', 'Fp Rows');
        expect(columns.map((x) => x.type)).toEqual(['int4', 'numeric', 'float8', 'json', 'jsonb', 'text', 'varchar', 'text', 'timestamp', 'timestamptz', 'date', 'bool', 'uuid', 'bytea', 'weight_kg', '_numeric', 'int8', 'int2']);
        // Typed where the value is the value; the rest by its text, bytewise.
        expect(fingerprintHashExpr('s', columns)).toContain('s."id", (s."n"::text COLLATE "C"), (s."f"::text COLLATE "C")');
        const both = async () => ({ typed: await fingerprintRows(c, 'public', 'Fp Rows', true), text: await fingerprintRows(c, 'public', 'Fp Rows', false) });
        const before = await both();
        expect(before.typed).toMatchObject({ rows: 2, typed: true });
        expect(before.text).toMatchObject({ rows: 2 });
        expect(before.text.typed).toBeUndefined();
        expect(before.typed.hash).not.toBe(before.text.hash);
        const again = await both();
        expect([again.typed.hash, again.text.hash]).toEqual([before.typed.hash, before.text.hash]);
        // A cutover hashes each table as its verification did: typed, or as text (a verification recorded before the typed form).
        const plan = { tables: [{ sources: [{ table: 'Fp Rows' }] }] } as unknown as Plan;
        const atCutover = async (typed: boolean) => (await sourceFingerprints(c, 'public', plan, [{ table: 'Fp Rows', rows: 2, hash: '0', xmax: '0', ...(typed ? { typed } : {}) }]))[0]!;
        expect(await atCutover(true)).toMatchObject({ table: 'Fp Rows', rows: 2, hash: before.typed.hash, typed: true });
        expect(await atCutover(false)).toMatchObject({ table: 'Fp Rows', rows: 2, hash: before.text.hash });

        const changes = [
          `n = 1.00`, `f = '-0'`, `j = '{"a": 1}'`, `jb = '{"a":2}'`, `t = 'y'`, `v = 'bag'`, `ts = ts + interval '1 microsecond'`,
          `tz = tz + interval '1 second'`, `d = d + 1`, `b = false`, `u = '00000000-0000-0000-0000-000000000002'`, `by = '\\x02'`,
          `w = 2.00`, `arr = '{1.00}'`, `big = big + 1`, `small = 8`, ...(icu ? [`ci = 'bag'`] : []),
        ];
        const missed: string[] = [];
        for (const change of changes) {
          await c.query('BEGIN');
          await c.query(`UPDATE "Fp Rows" SET ${change} WHERE id = 1`);
          const after = await both();
          await c.query('ROLLBACK');
          if (after.typed.hash === before.typed.hash) missed.push(`typed: ${change}`);
          if (after.text.hash === before.text.hash) missed.push(`text: ${change}`);
        }
        await c.query('BEGIN');
        await c.query(`UPDATE "Fp Rows" SET t = '' WHERE id = 2`);
        const emptyForNull = await both();
        await c.query('ROLLBACK');
        if (emptyForNull.typed.hash === before.typed.hash) missed.push("typed: NULL → ''");
        expect(missed).toEqual([]);
        expect(changes.length).toBeGreaterThanOrEqual(icu ? 17 : 16);
      });
    } finally {
      await db.drop();
    }
  });
});
