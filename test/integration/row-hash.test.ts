import { describe, expect, it } from 'vitest';
import { rowHashExpr } from '../../lambdas/core/verify';
import { createTestDatabase, withTestClient } from '../support/pg';

/**
 * The content checksum's row hash (core/verify.ts rowHashExpr), which Verify sums per bucket on both sides: typed
 * (PostgreSQL 14+, each column by its type's hash, seeded by position) and as the row's text. Every change of one
 * column, a NULL against an empty text, and two values swapped between columns must change it; an equal row must not.
 */
const BAG_COLUMNS = ['id', 'qr_id', 'type', 'name', 'child_count', 'parent_id', 'user_id', 'dispatch_area', 'status', 'weight_kg', 'created_at', 'updated_at'];
const USER_COLUMNS = ['id', 'username', 'email', 'role', 'verified', 'created_at'];

const BAG_BASE = `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`;
const BAG_VARIANTS = [
  BAG_BASE,
  `(2, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00002', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'child', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', '', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', NULL, 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 4, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, 1, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, NULL, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  // the user id moved to the parent column: same values, another place
  `(1, 'SB00001', 'parent', 'Rice', 3, 7, NULL, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'south', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  // name and status swapped
  `(1, 'SB00001', 'parent', 'north', 3, NULL, 7, 'north', 'Rice', 12.5, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.25, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', NULL, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00.000001', '2024-05-01 10:00:00')`,
  // the two timestamps swapped
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-02 10:00:00', '2024-05-01 10:00:00')`,
  `(1, 'SB00001', 'parent', 'Rice', 3, NULL, 7, 'north', 'north', 12.5, '2024-05-01 10:00:00', '2024-05-02 10:00:00')`,
];
const USER_VARIANTS = [
  `(1, 'ana', 'ana@x', 'admin', true, '2024-05-01 10:00:00')`,
  `(1, 'ana', 'ana@x', 'admin', false, '2024-05-01 10:00:00')`,
  `(1, 'ana', 'ana@x', 'admin', NULL, '2024-05-01 10:00:00')`,
  `(1, 'ana@x', 'ana', 'admin', true, '2024-05-01 10:00:00')`,
];

describe('the content checksum row hash', () => {
  it.each([true, false])('typed %s: every single change, NULL against empty, swapped values change it; an equal row does not', async (typed) => {
    const db = await createTestDatabase(`rowhash${typed ? 't' : 'x'}`);
    try {
      await withTestClient(db.url, async (c) => {
        const hashes = async (table: 'bag' | 'user', columns: string[], casts: string[], rows: string[]) => {
          const values = rows.map((r, i) => r.replace(/^\(/, `(${i}, `)).join(', ');
          const sql = `SELECT n, ${rowHashExpr('v', table, columns, typed)}::text AS h FROM (VALUES ${values}) AS v0(n, ${columns.map((x) => `"${x}"`).join(', ')})
                        CROSS JOIN LATERAL (SELECT ${columns.map((x, i) => `v0."${x}"::${casts[i]} AS "${x}"`).join(', ')}) v ORDER BY n`;
          return (await c.query(sql)).rows.map((r) => String(r.h));
        };
        const bag = await hashes('bag', BAG_COLUMNS, ['bigint', 'text', 'text', 'text', 'bigint', 'bigint', 'bigint', 'text', 'text', 'float8', 'timestamp', 'timestamp'], [...BAG_VARIANTS, BAG_BASE]);
        expect(bag.at(-1)).toBe(bag[0]);
        expect(new Set(bag.slice(0, -1)).size).toBe(BAG_VARIANTS.length);
        const user = await hashes('user', USER_COLUMNS, ['bigint', 'text', 'text', 'text', 'boolean', 'timestamp'], USER_VARIANTS);
        expect(new Set(user).size).toBe(USER_VARIANTS.length);
      });
    } finally {
      await db.drop();
    }
  });

  it('typed, each column is hashed by its type with its position as the seed, without building a record', () => {
    const expr = rowHashExpr('t', 'user', USER_COLUMNS, true);
    expect(expr).not.toContain('hash_record_extended');
    expect(expr).toContain('hashint8extended(t."id"::bigint, 1)');
    expect(expr).toContain('hashtextextended(t."username"::text, 2)');
    expect(expr).toContain('hashint4extended((t."verified"::boolean)::int, 5)');
    expect(expr).toContain('timestamp_hash_extended(t."created_at"::timestamp, 6)');
  });
});
