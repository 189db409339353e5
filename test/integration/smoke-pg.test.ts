import { describe, expect, it } from 'vitest';
import { createTestDatabase, withTestClient } from '../support/pg';

describe('test harness', () => {
  it('gives each test a real PostgreSQL database of its own', async () => {
    const db = await createTestDatabase();
    const version = await withTestClient(db.url, async (c) => (await c.query('SHOW server_version_num')).rows[0].server_version_num);
    expect(Number(version)).toBeGreaterThanOrEqual(120000);
    await db.drop();
  });
});
