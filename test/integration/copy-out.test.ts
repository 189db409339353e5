import { describe, expect, it } from 'vitest';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { copyOut } from '../../lambdas/io/copy-out';
import { createTestDatabase } from '../support/pg';

async function collect(client: pg.Client, stream: ReturnType<typeof copyTo>): Promise<{ bytes: Buffer; rows: number }> {
  const parts: Buffer[] = [];
  const copy = client.query(stream);
  await pipeline(copy, new Writable({ write: (c: Buffer, _e, cb) => (parts.push(Buffer.from(c)), cb()) }));
  return { bytes: Buffer.concat(parts), rows: copy.rowCount };
}

describe('COPY out through copyOut', () => {
  it('gives the bytes and row count pg-copy-streams gives, with notices between rows, and the connection stays usable', async () => {
    const db = await createTestDatabase();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      // Rows of 0 to ~2,000 bytes, so that messages straddle the socket's chunks; a notice every 5,000 rows.
      await client.query(`CREATE FUNCTION noisy(i int) RETURNS int LANGUAGE plpgsql AS $$ BEGIN IF i % 5000 = 0 THEN RAISE NOTICE 'row %', i; END IF; RETURN i; END $$`);
      const sql = `COPY (SELECT noisy(i) AS i, repeat(md5(i::text), (i * 7919) % 64) AS pad, CASE WHEN i % 11 = 0 THEN NULL ELSE E'tab\\there' END AS t FROM generate_series(1, 60000) i) TO STDOUT`;
      const theirs = await collect(client, copyTo(sql));
      const ours = await collect(client, copyOut(sql));
      expect(theirs.rows).toBe(60000);
      expect(ours.rows).toBe(60000);
      expect(ours.bytes.length).toBe(theirs.bytes.length);
      expect(ours.bytes.equals(theirs.bytes)).toBe(true);
      expect((await client.query('SELECT 41 + 1 AS n')).rows[0].n).toBe(42);
    } finally {
      await client.end();
      await db.drop();
    }
  });

  it('raises an error that comes after some rows, and the connection stays usable', async () => {
    const db = await createTestDatabase();
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const failing = collect(client, copyOut(`COPY (SELECT 1 / (50000 - i) FROM generate_series(1, 60000) i) TO STDOUT`));
      await expect(failing).rejects.toThrow(/division by zero/);
      expect((await client.query('SELECT 41 + 1 AS n')).rows[0].n).toBe(42);
    } finally {
      await client.end();
      await db.drop();
    }
  });
});
