import type pg from 'pg';

/**
 * The application writing to a shape-A legacy database (lib/runner/demo-seed.ts) while it is migrated:
 * one short transaction per call, a deterministic mix by round number — new bags with children and scans,
 * reweighed and reparented bags, deleted scans / bill_bag rows / bags, a primary-key update, sign-ups with a
 * plaintext password, a bag that becomes bad and one that is fixed, a lower-case duplicate QR code.
 */
export const WRITER_OPS = 9;

const CHILD = (i: number) => `(SELECT id FROM bag WHERE parent_bag_id IS NOT NULL AND id < 1000000 ORDER BY id
   OFFSET (${(i * 37) % 9973} % GREATEST(1, (SELECT count(*) FROM bag WHERE parent_bag_id IS NOT NULL AND id < 1000000))) LIMIT 1)`;
const PARENT = (i: number) => `(SELECT id FROM bag WHERE qr_code ~ '^SB[0-9]{5}$' ORDER BY id
   OFFSET (${(i * 13) % 997} % GREATEST(1, (SELECT count(*) FROM bag WHERE qr_code ~ '^SB[0-9]{5}$'))) LIMIT 1)`;

export function writerStatements(i: number): string[] {
  switch (i % WRITER_OPS) {
    case 0:
      return [
        `INSERT INTO bag (id, qr_code, bag_name, children_count, parent_bag_id, owner_id, area, weight, status, created_at)
         SELECT m + 1, 'SB' || lpad((80000 + ${i % 10000})::text, 5, '0') || '', 'Live lot ${i}', 0, NULL, 2, 'north', 21, 'pending', timestamp '2026-03-01' + ${i} * interval '1 second'
           FROM (SELECT max(id) AS m FROM bag) x`,
        `INSERT INTO bag (id, qr_code, bag_name, parent_bag_id, owner_id, area, weight, status, created_at)
         SELECT m + g, 'CBL' || lpad(${i}::text, 6, '0') || '-' || g, NULL, m, 2, 'north', 1.25, 'pending', timestamp '2026-03-01' + ${i} * interval '1 second'
           FROM (SELECT max(id) AS m FROM bag) x, generate_series(1, 2) g`,
        `INSERT INTO scan (id, created_at, parent_id, child_id, scanner_id)
         SELECT (SELECT max(id) FROM scan) + 1, timestamp '2026-03-01' + ${i} * interval '1 second', parent_bag_id, id, 2 FROM bag WHERE id = (SELECT max(id) FROM bag)`,
      ];
    case 1:
      return [`UPDATE bag SET weight = weight + 0.5 WHERE id = ${CHILD(i)}`];
    case 2:
      return [`UPDATE bag SET parent_bag_id = ${PARENT(i)} WHERE id = ${CHILD(i)}`];
    case 3:
      return [`DELETE FROM scan WHERE id = (SELECT id FROM scan ORDER BY id OFFSET ${(i * 11) % 97} LIMIT 1)`];
    case 4:
      return [
        `INSERT INTO "user" (id, name, email, password, role, area, created_at)
         SELECT max(id) + 1, 'signup_${i}', 'signup_${i}@tracetrack.example', 'plain-pass-${i}', 'dispatcher', 'north', timestamp '2026-03-01' + ${i} * interval '1 second' FROM "user"`,
      ];
    case 5:
      return [`UPDATE bag SET id = (SELECT max(id) + 1 FROM bag) WHERE id = ${CHILD(i)}`];
    case 6:
      return [
        `DELETE FROM bill_bag WHERE id = (SELECT id FROM bill_bag ORDER BY id OFFSET ${(i * 7) % 53} LIMIT 1)`,
        `DELETE FROM bag WHERE id = ${CHILD(i + 1)}`,
      ];
    case 7:
      return [
        `UPDATE bag SET weight = -3 WHERE id = ${CHILD(i + 2)}`,
        `UPDATE bag SET weight = 1 WHERE id = (SELECT min(id) FROM bag WHERE weight < 0 AND weight <> -3)`,
      ];
    default:
      return [
        `INSERT INTO bag (id, qr_code, bag_name, parent_bag_id, owner_id, area, weight, status, created_at)
         SELECT (SELECT max(id) FROM bag) + 1, lower(qr_code), NULL, parent_bag_id, 2, 'north', 1, 'pending', timestamp '2026-03-01' + ${i} * interval '1 second'
           FROM bag WHERE id = ${CHILD(i + 3)}`,
      ];
  }
}

/** One writer transaction. */
export async function writeOnce(c: pg.ClientBase, i: number): Promise<void> {
  await c.query('BEGIN');
  try {
    for (const sql of writerStatements(i)) await c.query(sql);
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}
