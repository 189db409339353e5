import { describe, expect, it } from 'vitest';
import { acquireLease, ensureInternalTables, renewLease } from '../../lambdas/engine/runs';
import { createTestDatabase, withTestClient } from '../support/pg';

describe('the run lease', () => {
  it('a renewal keeps the holder that took the lease (the execution name stays readable in the lease row)', async () => {
    const db = await createTestDatabase('lease');
    try {
      await withTestClient(db.url, async (c) => {
        await ensureInternalTables(c, 'tracetrack');
        await acquireLease(c, 'tracetrack', 'run-1', 'exec-2026-12-01');
        await renewLease(c, 'tracetrack', 'run-1');
        const r = await c.query(`SELECT run_id, holder FROM tracetrack._migration_lease`);
        expect(r.rows).toEqual([{ run_id: 'run-1', holder: 'exec-2026-12-01' }]);
        await expect(acquireLease(c, 'tracetrack', 'run-2', 'exec-other')).rejects.toMatchObject({ name: 'LeaseHeldError', message: expect.stringContaining('Run run-1 holds the lease') });
      });
    } finally {
      await db.drop();
    }
  });
});
