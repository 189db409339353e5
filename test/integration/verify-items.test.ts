import pg from 'pg';
import { describe, expect, it } from 'vitest';
import type { VerificationResult } from '../../lambdas/core/verify';
import { assembleRun, planVerification, runVerifyItem, verifyRun, type VerifyOptions } from '../../lambdas/engine/verify';
import { runEngine, withFixtureDatabase } from '../support/engine';

/**
 * Verify as work items (issue 15): every item resumable from its stored cursor under a time budget, the verdict
 * assembled from the stored results. With a budget so small that every call does one chunk, the verdict is the
 * one of a single pass over everything, on a good target and on a deliberately broken one; a redrive or a second
 * invocation of a half-done item counts nothing twice.
 */

/** Buckets of 2 keys, chunks of 2, items of 4: every range item of a table with more than 4 keys has several chunks. */
const TINY = { bucketWidth: 2, chunkKeys: 2, itemKeys: 4 };
/** One item and one chunk per unit: the single pass over everything that Verify was before it had items. */
const WHOLE = { bucketWidth: 2, chunkKeys: 1e9, itemKeys: 1e9 };

/** Without the time and the fingerprints' transaction horizons (later verifications run in later transactions). */
const withoutTime = (v: VerificationResult) => ({ ...v, verifiedAt: '', sourceFingerprints: v.sourceFingerprints?.map((f) => ({ ...f, xmax: '' })) });

/** Every item run with a deadline already passed (one chunk per call), round-robin; the calls each item took. */
async function verifyWithTinyBudget(o: VerifyOptions): Promise<{ result: VerificationResult; calls: Map<string, number> }> {
  const { round, items } = await planVerification({ ...o, sizes: TINY });
  const calls = new Map<string, number>();
  let open = [...items];
  while (open.length) {
    const still: string[] = [];
    for (const ref of open) {
      const r = await runVerifyItem({ ...o, deadline: 0 }, ref);
      calls.set(ref, (calls.get(ref) ?? 0) + 1);
      if (!r.done) {
        expect(r.cursor).not.toBeNull();
        still.push(ref);
      }
    }
    open = still;
  }
  const { live: _live, ...result } = await assembleRun(o, round);
  return { result, calls };
}

async function breakTarget(c: pg.ClientBase): Promise<void> {
  const bags = (await c.query<{ id: number }>(`SELECT id FROM tracetrack.bag ORDER BY id`)).rows.map((r) => r.id);
  await c.query(`UPDATE tracetrack.bag SET name = 'changed after the migration' WHERE id = $1`, [bags[3]]);
  await c.query(`DELETE FROM tracetrack.scan WHERE id = (SELECT min(id) FROM tracetrack.scan)`);
  await c.query(`SELECT setval('tracetrack.scan_id_seq', 1000000)`);
  await c.query(`INSERT INTO tracetrack.scan (id, "timestamp", parent_bag_id, user_id) VALUES (999999, now(), $1, NULL)`, [bags[0]]);
  await c.query(`UPDATE tracetrack."user" SET verified = FALSE WHERE id = (SELECT min(id) FROM tracetrack."user")`);
}

describe('Verify as resumable work items', () => {
  it('a tiny time budget (several invocations per item) gives the verdict of a single pass, on a good and on a broken target', async () => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'items', batchSize: 3 });
      const o: VerifyOptions = { client: c, run: r.run, plan: r.plan, fingerprints: true };

      const single = await verifyRun({ ...o, sizes: WHOLE });
      expect(single.passed).toBe(true);
      const tiny = await verifyWithTinyBudget(o);
      expect(withoutTime(tiny.result)).toEqual(withoutTime(single));
      // The chunks really were spread over invocations: range items of the larger tables took several calls.
      const multi = [...tiny.calls.values()].filter((n) => n > 1);
      expect(multi.length).toBeGreaterThan(3);
      expect(Math.max(...tiny.calls.values())).toBeGreaterThan(1);

      await breakTarget(c);
      const broken = await verifyRun({ ...o, sizes: WHOLE });
      expect(broken.passed).toBe(false);
      const failed = broken.checks.filter((x) => !x.passed).map((x) => x.name);
      expect(failed).toEqual(expect.arrayContaining(['checksum:bag:bag', 'counts:scan:scan', 'checksum:scan:scan', 'extra:scan']));
      const brokenTiny = await verifyWithTinyBudget(o);
      expect(withoutTime(brokenTiny.result)).toEqual(withoutTime(broken));
      expect(brokenTiny.result.readiness.counts.usersNotVerified).toBe(1);
    }, 'vitems');
  });

  it('a redrive or a second invocation of a half-done item resumes from its stored cursor and counts nothing twice', async () => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'redrive', batchSize: 3 });
      const o: VerifyOptions = { client: c, run: r.run, plan: r.plan, sizes: TINY };
      const { live: _l, ...reference } = await (async () => {
        const { round, items } = await planVerification(o);
        for (const ref of items) await runVerifyItem({ ...o, deadline: Number.POSITIVE_INFINITY }, ref);
        return assembleRun(o, round);
      })();

      const { round, items } = await planVerification(o);
      // A range of the scan table between two others: two chunks.
      const scanNo = (await c.query(`SELECT item_no FROM tracetrack._migration_verify WHERE spec->>'kind' = 'range' AND spec->>'table' = 'scan' AND spec->>'lo' IS NOT NULL AND spec->>'hi' IS NOT NULL ORDER BY item_no LIMIT 1`)).rows[0].item_no;
      const scanItem = `${round}/${scanNo}`;
      expect(items).toContain(scanItem);
      // Half done: one chunk committed, then the invocation "dies" in its next chunk before committing.
      const first = await runVerifyItem({ ...o, deadline: 0 }, scanItem);
      expect(first.done).toBe(false);
      let failing = true;
      const dying = new Proxy(c, {
        get(target, prop, receiver) {
          if (prop !== 'query') return Reflect.get(target, prop, receiver);
          return (text: unknown, values?: unknown[]) => {
            if (failing && typeof text === 'string' && text.startsWith('UPDATE') && text.includes('_migration_verify')) {
              failing = false;
              return Promise.reject(Object.assign(new Error('the invocation was killed'), { code: '57P01' }));
            }
            return target.query(text as string, values);
          };
        },
      });
      await expect(runVerifyItem({ ...o, client: dying as pg.Client, deadline: 0 }, scanItem)).rejects.toThrow(/killed/);
      // The redrive and a duplicate invocation on another connection, at the same time.
      const other = new pg.Client({ connectionString: `postgres://${c.user}:${encodeURIComponent(String(c.password))}@${c.host}:${c.port}/${c.database}` });
      await other.connect();
      try {
        await Promise.all([
          runVerifyItem({ ...o, deadline: Number.POSITIVE_INFINITY }, scanItem).catch((e: { code?: string }) => { if (e.code !== '40001') throw e; }),
          runVerifyItem({ ...o, client: other, deadline: Number.POSITIVE_INFINITY }, scanItem).catch((e: { code?: string }) => { if (e.code !== '40001') throw e; }),
        ]);
        await runVerifyItem({ ...o, deadline: Number.POSITIVE_INFINITY }, scanItem);
      } finally {
        await other.end();
      }
      // Rerunning done items changes nothing either.
      for (const ref of items) await runVerifyItem({ ...o, deadline: Number.POSITIVE_INFINITY }, ref);
      for (const ref of items) expect((await runVerifyItem({ ...o, deadline: 0 }, ref)).done).toBe(true);
      const { live: _l2, ...again } = await assembleRun(o, round);
      expect(withoutTime(again)).toEqual(withoutTime(reference));

      // A new round supersedes the old one: its items are refused, and its verdict too.
      await planVerification(o);
      await expect(runVerifyItem({ ...o, deadline: 0 }, items[0]!)).rejects.toThrow(/started again since/);
      await expect(assembleRun(o, round)).rejects.toThrow(/no verification items of round/);
    }, 'vredrive');
  });

  it('the checks over target ids (orphans, summaries, passwords, readiness) fail on a broken target, chunk by chunk as in one pass', async () => {
    await withFixtureDatabase('a', async (c) => {
      const r = await runEngine(c, { runId: 'tgt', batchSize: 3 });
      const o: VerifyOptions = { client: c, run: r.run, plan: r.plan };
      const good = await verifyRun({ ...o, sizes: WHOLE });
      expect(good.passed).toBe(true);
      const rehashed = Number(good.checks.find((x) => x.name === 'passwords')?.data?.rehashed);
      expect(rehashed).toBeGreaterThan(0);
      // Breaks past the foreign keys (replica role): a scan of a missing user, in the last id range.
      await c.query(`SET session_replication_role = replica`);
      await c.query(`UPDATE tracetrack.scan SET user_id = 987654 WHERE id = (SELECT max(id) FROM tracetrack.scan)`);
      // And a bill_bag row of a bag id below every bag's (references are checked by the values they hold, in ranges of bag ids).
      const belowBags = (await c.query(`UPDATE tracetrack.bill_bag SET bag_id = -5 WHERE id = (SELECT min(id) FROM tracetrack.bill_bag) RETURNING id`)).rows[0].id;
      await c.query(`RESET session_replication_role`);
      // A parent's child count and a bill's total off by one; a scan that references no bag.
      await c.query(`UPDATE tracetrack.bag SET child_count = child_count + 1 WHERE id = (SELECT max(id) FROM tracetrack.bag WHERE type = 'parent')`);
      await c.query(`UPDATE tracetrack.bill SET linked_parent_count = linked_parent_count + 1 WHERE id = (SELECT max(id) FROM tracetrack.bill)`);
      // The last rehashed user gets another user's hash (it no longer accepts the legacy password), another keeps its plaintext.
      const users = (await c.query(`SELECT u.id, s.password AS plain FROM tracetrack."user" u JOIN public."user" s ON s.id = u.id WHERE s.password !~ '^(scrypt|pbkdf2)' AND s.password <> '' ORDER BY u.id`)).rows;
      expect(users.length).toBeGreaterThan(0);
      await c.query(`UPDATE tracetrack."user" SET password_hash = (SELECT password_hash FROM tracetrack."user" WHERE id <> $1 AND password_hash LIKE 'scrypt:%' ORDER BY id LIMIT 1) WHERE id = $1`, [users[0].id]);
      await c.query(`UPDATE tracetrack."user" SET password_hash = $2 WHERE id = $1`, [users.at(-1).id, users.at(-1).plain]);
      // A scan moved to another existing parent (its foreign key holds): the checksum, which resolves references through the target row, must see it.
      const moved = (await c.query(`UPDATE tracetrack.scan SET parent_bag_id = (SELECT min(id) FROM tracetrack.bag WHERE type = 'parent' AND id <> (SELECT parent_bag_id FROM tracetrack.scan WHERE id = (SELECT min(id) FROM tracetrack.scan WHERE parent_bag_id IS NOT NULL)))
                                      WHERE id = (SELECT min(id) FROM tracetrack.scan WHERE parent_bag_id IS NOT NULL) RETURNING id`)).rows[0].id;
      const broken = await verifyRun({ ...o, sizes: WHOLE });
      const failed = new Map(broken.checks.filter((x) => !x.passed).map((x) => [x.name, x.detail]));
      expect(failed.get('checksum:scan:scan')).toMatch(new RegExp(`differing keys e\\.g\\. ${moved}(,|$)`));
      expect(failed.get('orphans:scan.user_id')).toMatch(/^1 scan rows reference a missing user \(ids [0-9]+\)$/);
      expect(failed.get('orphans:bill_bag.bag_id')).toBe(`1 bill_bag rows reference a missing bag (ids ${belowBags})`);
      expect(failed.get('derived:bill.linked_parent_count')).toMatch(/^1 rows differ from the rule .*, e\.g\. ids [0-9]+: run the finalize step again$/);
      expect(failed.get('passwords')).toMatch(/^1 users of user hold their legacy plaintext password; user [0-9]+: the new hash does not accept the legacy password/);
      // A copied summary that disagrees is reported (readiness), not failed.
      expect(broken.readiness.summariesDisagreeing['bag.child_count']!.count).toBe(good.readiness.summariesDisagreeing['bag.child_count']!.count + 1);
      const tiny = await verifyWithTinyBudget(o);
      expect(withoutTime(tiny.result)).toEqual(withoutTime(broken));
    }, 'vtarget');
  });
});
