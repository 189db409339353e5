import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ColumnMapping, SourcePlan, TablePlan } from '../../lambdas/core/plan';
import type { TargetTable, ValueKind } from '../../lambdas/core/rules';
import { buildMappingSelect } from '../../lambdas/core/sql/mapping';
import { Params } from '../../lambdas/core/sql/ident';
import { TRANSFORMS } from '../../lambdas/core/transforms';
import { createTargetTables } from '../../lambdas/engine/migrate';
import { ensureInternalTables } from '../../lambdas/engine/runs';
import { connect, parseDatabaseUrl } from '../../lambdas/io/pg';
import { createTestDatabase } from '../support/pg';

/**
 * Every transform's input → output examples (lambdas/core/transforms.ts), run on PostgreSQL through the
 * transform's own SQL: one source row holding the example's value, mapped as a batch maps it.
 */

const TARGET = 'tracetrack';
const RUN_TIME = '2026-01-01T00:00:00';
/** The target table a kind's column lives in (some transforms depend on it: self references, bag type). */
/** The column's target name where the transform looks it up by name (the QR fold reads the `qr_id` mapping). */
const COLUMN_OF: Partial<Record<ValueKind, string>> = { qr: 'qr_id' };
const TABLE_OF: Partial<Record<ValueKind, TargetTable>> = { qr: 'bag', bag_type: 'bag', ref: 'bill', password: 'user', email: 'user', bill_business_id: 'bill', promotion_reason: 'promotionrequest' };

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let client: pg.Client;
beforeAll(async () => {
  db = await createTestDatabase('tx');
  client = await connect(parseDatabaseUrl(db.url));
  await client.query('CREATE SCHEMA src');
  await ensureInternalTables(client, TARGET);
  await createTargetTables(client, TARGET);
});
afterAll(async () => {
  await client?.end();
  await db?.drop();
});

const cases = Object.entries(TRANSFORMS).flatMap(([kind, t]) => t.examples.map((example, i) => ({ kind: kind as ValueKind, i, example })));

describe('value transforms, by their own examples', () => {
  it('every value kind has examples', () => {
    for (const [kind, t] of Object.entries(TRANSFORMS)) expect({ kind, examples: t.examples.length > 0 }).toEqual({ kind, examples: true });
  });

  it.each(cases)('$kind #$i: $example.input ($example.type) → $example.output', async ({ kind, i, example }) => {
    const table = `ex_${kind}_${i}`;
    await client.query(`CREATE TABLE src.${table} (id bigint PRIMARY KEY${example.type ? `, v ${example.type}` : ''})`);
    await client.query(`INSERT INTO src.${table} VALUES (1${example.type ? ', $1' : ''})`, example.type ? [example.input] : []);
    const udt = example.type ? String((await client.query(`SELECT typname FROM pg_type WHERE oid = $1::regtype`, [example.type])).rows[0].typname) : null;
    const column = COLUMN_OF[kind] ?? 'value';
    const m: ColumnMapping = { target: column, source: example.type ? 'v' : null, sourceType: udt, kind, ...(example.mapping ?? {}) };
    const source: SourcePlan = { table, key: 'id', keyStrategy: 'primary-key', idStrategy: 'keep', columns: [m], rowEstimate: 1 };
    const plan: TablePlan = { target: TABLE_OF[kind] ?? 'audit_log', sources: [source], merged: false, derivedLinks: [] };
    const params = new Params();
    const mapping = buildMappingSelect(plan, source, { sourceSchema: 'src', targetSchema: TARGET, offsets: {}, mode: 'load', runTime: RUN_TIME }, params, null, {
      keys: [1],
      hashes: ['scrypt:32768:8:1$example$hash'],
    });
    const row = (await client.query(`SELECT ${column}::text AS value, _reject FROM (${mapping.text}) x`, params.values)).rows[0];
    expect(row).toBeDefined();
    if (example.rejected) expect(String(row._reject)).toContain(example.rejected);
    else expect(outcome(row)).toEqual(outcome({ value: example.output, _reject: null }));
  });
});

function outcome(row: { value: unknown; _reject: unknown }): { value: unknown; reject: unknown } {
  return { value: row.value, reject: row._reject };
}
