import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { renderFailures, type VerificationResult } from '../../lambdas/core/verify';
import type { Plan } from '../../lambdas/core/planner';
import { verifyRun } from '../../lambdas/engine/verify';
import { loadFixture, runEngine } from '../support/engine';
import { createTestDatabase, withTestClient } from '../support/pg';
import { werkzeugCheck } from '../support/werkzeug';

/**
 * Every source shape end to end on a real PostgreSQL: analyse → migrate → verify, then each
 * dirty row of the fixture's expect file checked row by row against the target and the reject store.
 */

const SCHEMA = 'tracetrack';
const RUN_ID = 'shape-run';
const RUN_TIME = '2026-01-01T00:00:00';

interface DirtyRow {
  readonly table: string;
  readonly id?: number;
  readonly expect: 'migrated' | 'rejected' | 'derived' | 'not-migrated';
  readonly reason_contains?: string;
  readonly password?: 'copied' | 'plaintext-rehashed' | 'placeholder-needs-reset';
  readonly login_with?: string;
  readonly target?: Record<string, unknown>;
  readonly derived_from?: string;
  readonly child_id?: number;
  readonly parent_id?: number;
  readonly count?: number;
}

interface ExpectFile {
  readonly shape: string;
  readonly source_tables: Record<string, number>;
  readonly targets: Record<string, { migrated: number; rejected: number; derived?: number }>;
  readonly ids_kept: boolean;
  readonly retired_tables?: string[];
  readonly dirty_rows: DirtyRow[];
}

function readExpect(shape: string): ExpectFile {
  return JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', `shape-${shape}.expect.json`), 'utf8')) as ExpectFile;
}

const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
const q = (table: string) => `${ident(SCHEMA)}.${ident(table)}`;

const SCRYPT_SHAPE = /^scrypt:32768:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}$/;

function targetOf(plan: Plan, sourceTable: string): string {
  const t = plan.tables.find((x) => x.sources.some((s) => s.table === sourceTable));
  if (!t) throw new Error(`source table ${sourceTable} feeds no target table in the plan`);
  return t.target;
}

/** The target id of a source row: through the persistent id map where ids are remapped, else the id itself. */
async function targetIdOf(c: pg.ClientBase, plan: Plan, sourceTable: string, sourceId: number): Promise<number> {
  const target = plan.tables.find((x) => x.sources.some((s) => s.table === sourceTable))!;
  if (target.merged) {
    const r = await c.query(`SELECT target_id FROM ${q('_migration_id_map')} WHERE source_table = $1 AND source_key = $2`, [sourceTable, sourceId]);
    expect(r.rowCount, `${sourceTable} ${sourceId} has an id-map entry`).toBe(1);
    return Number(r.rows[0].target_id);
  }
  return sourceId;
}

async function targetRow(c: pg.ClientBase, table: string, id: number): Promise<Record<string, unknown> | null> {
  const r = await c.query(`SELECT to_jsonb(t) AS row FROM ${q(table)} t WHERE id = $1`, [id]);
  return r.rows[0]?.row ?? null;
}

async function sourceRow(c: pg.ClientBase, table: string, id: number): Promise<Record<string, unknown>> {
  const r = await c.query(`SELECT to_jsonb(s) AS row FROM public.${ident(table)} s WHERE id = $1`, [id]);
  return r.rows[0].row;
}

async function rejectOf(c: pg.ClientBase, sourceTable: string, key: number): Promise<{ reason: string; target_table: string } | null> {
  const r = await c.query(
    `SELECT reason, target_table FROM ${q('_migration_reject')} WHERE run_id = $1 AND source_table = $2 AND source_key = $3`,
    [RUN_ID, sourceTable, String(key)],
  );
  return r.rows[0] ?? null;
}

/** `"bags 1 (SB00001)"` or `"parent_bag 9 (SB00001_DUP_…)"`: a bag named by source table, id and QR. */
async function resolveBagRef(c: pg.ClientBase, plan: Plan, ref: string): Promise<{ id: number; qr: string }> {
  const m = /^(\S+) (\d+) \((.+)\)$/.exec(ref);
  if (!m) throw new Error(`cannot read bag reference "${ref}"`);
  return { id: await targetIdOf(c, plan, m[1]!, Number(m[2])), qr: m[3]! };
}

async function assertTargetValues(c: pg.ClientBase, plan: Plan, label: string, row: Record<string, unknown>, expected: Record<string, unknown>) {
  for (const [key, want] of Object.entries(expected)) {
    const at = `${label}.${key}`;
    if (key === 'qr_id_prefix') {
      const qr = String(row.qr_id);
      expect(qr.startsWith(want as string), `${at}: ${qr}`).toBe(true);
      // The suffix of a renamed duplicate is its own (new) target id.
      expect(qr, at).toBe(`${want}${row.id}`);
    } else if (key === 'reason_contains') {
      expect(String(row.reason), at).toContain(want);
    } else if (key === 'parent_bag' || key === 'child_bag') {
      const ref = await resolveBagRef(c, plan, want as string);
      expect(row[`${key}_id`], at).toBe(ref.id);
      const bag = await targetRow(c, 'bag', ref.id);
      if (ref.qr.endsWith('…')) expect(String(bag?.qr_id).startsWith(ref.qr.slice(0, -1)), `${at} qr ${bag?.qr_id}`).toBe(true);
      else expect(bag?.qr_id, at).toBe(ref.qr);
    } else if (want === '$migration_time') {
      expect(row[key], at).toBe(RUN_TIME);
    } else {
      expect(row[key], at).toEqual(want);
    }
  }
}

/** Every text-bearing value of every table in the target schema, as one searchable text per row. */
async function schemaContains(c: pg.ClientBase, needle: string): Promise<string[]> {
  const tables = await c.query<{ relname: string }>(
    `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')`,
    [SCHEMA],
  );
  const hits: string[] = [];
  for (const { relname } of tables.rows) {
    // The row's text form covers every column (jsonb row_data included).
    const r = await c.query(`SELECT count(*)::int AS n FROM ${q(relname)} t WHERE strpos(t::text, $1) > 0`, [needle]);
    if (r.rows[0].n > 0) hits.push(`${relname} (${r.rows[0].n} rows)`);
  }
  return hits;
}

async function checkPasswords(c: pg.ClientBase, plan: Plan, row: DirtyRow, target: Record<string, unknown>, verification: VerificationResult) {
  const label = `${row.table} ${row.id}`;
  const hash = String(target.password_hash);
  const source = await sourceRow(c, row.table, row.id!);
  const sourceValue = (source.password_hash ?? source.password) as string;
  const reset = verification.readiness.usersNeedingPasswordReset.map((u) => u.id);
  switch (row.password) {
    case 'copied':
      expect(hash, `${label}: hash copied verbatim`).toBe(sourceValue);
      expect(reset, label).not.toContain(target.id);
      break;
    case 'plaintext-rehashed':
      expect(hash, `${label}: werkzeug scrypt hash`).toMatch(SCRYPT_SHAPE);
      expect(hash).not.toBe(sourceValue);
      expect(reset, label).not.toContain(target.id);
      expect(await schemaContains(c, sourceValue), `plaintext of ${label} in the target schema`).toEqual([]);
      break;
    case 'placeholder-needs-reset':
      expect(hash, `${label}: placeholder kept`).toBe(sourceValue);
      expect(reset, `${label} listed for a password reset`).toContain(target.id);
      break;
  }
  if (row.login_with !== undefined) expect(werkzeugCheck(hash, row.login_with), `${label} logs in with "${row.login_with}"`).toBe(true);
  void plan;
}

const SHAPES = ['a', 'b', 'c', 'd', 'e', 'ae'] as const;

async function migrateShape(shape: string, fn: (c: pg.Client, r: Awaited<ReturnType<typeof runEngine>>, v: VerificationResult) => Promise<void>) {
  const db = await createTestDatabase('eng');
  try {
    await loadFixture(db.url, shape);
    await withTestClient(db.url, async (c) => {
      const r = await runEngine(c, { runId: RUN_ID, runTime: RUN_TIME });
      expect(r.interrupted).toBe(false);
      const v = await verifyRun({ client: c, run: r.run, plan: r.plan });
      await fn(c, r, v);
    });
  } finally {
    await db.drop();
  }
}

describe('engine on every source shape', () => {
  it.each(SHAPES)('shape %s: migrates, verifies, and every dirty row has its expected outcome', async (shape) => {
    const expected = readExpect(shape);
    await migrateShape(shape, async (c, { plan }, verification) => {
        expect(verification.passed, `verification failed:\n${renderFailures(verification.checks)}`).toBe(true);

        // Totals per target table equal the expect file (and the target holds exactly migrated + derived rows).
        for (const [table, want] of Object.entries(expected.targets)) {
          const got = verification.tables[table] ?? { migrated: 0, rejected: 0, derived: 0 };
          expect({ table, migrated: got.migrated, rejected: got.rejected, derived: got.derived }).toEqual({
            table, migrated: want.migrated, rejected: want.rejected, derived: want.derived ?? 0,
          });
          const n = await c.query(`SELECT count(*)::int AS n FROM ${q(table)}`);
          expect({ table, rows: n.rows[0].n }).toEqual({ table, rows: want.migrated + (want.derived ?? 0) });
          const rj = await c.query(`SELECT count(*)::int AS n FROM ${q('_migration_reject')} WHERE run_id = $1 AND target_table = $2`, [RUN_ID, table]);
          expect({ table, rejects: rj.rows[0].n }).toEqual({ table, rejects: want.rejected });
        }
        for (const retired of expected.retired_tables ?? []) expect(plan.retiredTables).toContain(retired);

        for (const row of expected.dirty_rows) {
          const label = `${row.table} ${row.id ?? row.derived_from ?? ''}${row.child_id !== undefined ? ` child ${row.child_id}` : ''}`;
          if (row.expect === 'not-migrated') {
            expect(plan.retiredTables, label).toContain(row.table);
            continue;
          }
          if (row.derived_from) {
            const sourceLabel = `${row.derived_from} (derived link)`;
            const fromSource = row.derived_from.split('.')[0]!;
            if (row.count !== undefined) {
              expect(verification.tables.link?.sources[sourceLabel]?.migrated, `${sourceLabel} derived`).toBe(row.count);
              continue;
            }
            const reject = await rejectOf(c, sourceLabel, row.child_id!);
            if (row.expect === 'rejected') {
              expect(reject, `${label}: in the reject store`).not.toBeNull();
              expect(reject!.reason, label).toContain(row.reason_contains);
              expect(reject!.target_table).toBe('link');
            } else {
              expect(reject, `${label}: not rejected`).toBeNull();
              const child = await targetIdOf(c, plan, fromSource, row.child_id!);
              const parent = await targetIdOf(c, plan, fromSource, row.parent_id!);
              const link = await c.query(`SELECT parent_bag_id FROM ${q('link')} WHERE child_bag_id = $1`, [child]);
              expect(link.rows, label).toEqual([{ parent_bag_id: parent }]);
            }
            continue;
          }
          const target = targetOf(plan, row.table);
          const reject = await rejectOf(c, row.table, row.id!);
          const tid = await targetIdOf(c, plan, row.table, row.id!);
          const migrated = await targetRow(c, target, tid);
          if (row.expect === 'rejected') {
            expect(reject, `${label}: in the reject store`).not.toBeNull();
            expect(reject!.reason, `${label}: reason`).toContain(row.reason_contains);
            expect(reject!.target_table).toBe(target);
            if (expected.ids_kept) expect(migrated, `${label}: not in the target`).toBeNull();
            continue;
          }
          expect(reject, `${label}: not rejected (${reject?.reason})`).toBeNull();
          expect(migrated, `${label}: in ${target} as id ${tid}`).not.toBeNull();
          if (row.target) await assertTargetValues(c, plan, label, migrated!, row.target);
          if (row.password) await checkPasswords(c, plan, row, migrated!, verification);
        }

        // Sequences: a new row without an id inserts in every target table (rolled back).
        await c.query('BEGIN');
        try {
          const ins = async (table: string, cols: string, vals: string, params: unknown[] = []) => {
            const max = await c.query(`SELECT COALESCE(max(id), 0)::int AS m FROM ${q(table)}`);
            const r = await c.query(`INSERT INTO ${q(table)} ${cols} VALUES ${vals} RETURNING id`, params);
            expect(r.rows[0].id, `${table}: new id past the largest`).toBeGreaterThan(max.rows[0].m);
            return Number(r.rows[0].id);
          };
          const user = await ins('user', '(username, email, password_hash)', `('seq-test', 'seq@x.test', '!')`);
          const parent = await ins('bag', '(qr_id, type)', `('SEQTEST-P', 'parent')`);
          const child = await ins('bag', '(qr_id, type)', `('SEQTEST-C', 'child')`);
          await ins('link', '(parent_bag_id, child_bag_id)', '($1, $2)', [parent, child]);
          const bill = await ins('bill', '(bill_id)', `('SEQTEST-BILL')`);
          await ins('bill_bag', '(bill_id, bag_id)', '($1, $2)', [bill, parent]);
          await ins('scan', '(parent_bag_id, user_id)', '($1, $2)', [parent, user]);
          await ins('promotionrequest', '(user_id, reason)', `($1, 'seq')`, [user]);
          await ins('audit_log', '(action, entity_type)', `('seq', 'test')`);
        } finally {
          await c.query('ROLLBACK');
        }
    });
  });

  // Fixture README decision 6: derived-link candidates come only from migrated bags; a rejected child (bags 5
  // and 6, rejected for their weight, both with a parent_bag_id) is covered by its own rejection, not again as a link.
  it('shape e: derived-link candidates are taken only from migrated bags (rejected bags 5, 6 are not rejected again as links)', async () => {
    await migrateShape('e', async (c, _r, v) => {
      const derived = await c.query(
        `SELECT source_key FROM ${q('_migration_reject')} WHERE run_id = $1 AND source_table = 'bags.parent_bag_id (derived link)' ORDER BY source_key::int`,
        [RUN_ID],
      );
      expect(derived.rows.map((r) => Number(r.source_key))).toEqual([9, 11]);
      expect(v.tables.link!.rejected).toBe(readExpect('e').targets.link!.rejected);
    });
  });
});

describe('duplicate QR codes renamed in prepare', () => {
  it('refuses, naming it, a renamed code that another bag already has (the unique QR index would reject it), and writes nothing', async () => {
    const db = await createTestDatabase('qrclash');
    try {
      await loadFixture(db.url, 'a');
      await withTestClient(db.url, async (c) => {
        // Bag 3 ('sb00001 ') folds to bag 1's SB00001 and is renamed SB00001_DUP_3: a bag that already has that code clashes.
        await c.query(`INSERT INTO bag (id, qr_code, created_at) VALUES (900, 'sb00001_dup_3', '2024-03-01 08:00:00'), (901, 'SB00002_DUP_9', '2024-03-01 08:00:00')`);
        await expect(runEngine(c, { runId: 'clash' })).rejects.toThrow(
          /Renaming duplicate QR codes would produce codes that other bags already have: SB00001_DUP_3\. Fix those QR codes in the source \(or map them in a mapping file\) and rerun\./,
        );
        const renamed = await c.query(`SELECT count(*)::int AS n FROM ${q('_mig_qr_rename')}`);
        expect(renamed.rows[0].n).toBe(0);
        const done = await c.query(`SELECT count(*)::int AS n FROM ${q('_migration_checkpoint')} WHERE run_id = 'clash' AND step = 'prepare'`);
        expect(done.rows[0].n).toBe(0);
        // Without the clashing bag the same data migrates, bag 3 renamed.
        await c.query(`DELETE FROM bag WHERE id = 900`);
        await runEngine(c, { runId: 'clash-2' });
        const bag3 = await c.query(`SELECT qr_id FROM ${q('bag')} WHERE id = 3`);
        expect(bag3.rows[0].qr_id).toBe('SB00001_DUP_3');
      });
    } finally {
      await db.drop();
    }
  });
});
