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

describe('the migration\'s sessions', () => {
  it('run without JIT compilation (on a server built with LLVM it cost 0.4-1.0 s per batch statement)', async () => {
    const { connect, parseDatabaseUrl } = await import('../../lambdas/io/pg');
    const db = await createTestDatabase();
    const client = await connect(parseDatabaseUrl(db.url));
    try {
      expect((await client.query('SHOW jit')).rows[0].jit).toBe('off');
    } finally {
      await client.end();
      await db.drop();
    }
  });
});
