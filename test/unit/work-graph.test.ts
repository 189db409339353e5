import { describe, expect, it } from 'vitest';
import type { Catalog, ColumnInfo, TableInfo } from '../../lambdas/core/catalog';
import { EMPTY_OVERRIDES } from '../../lambdas/core/mapping-file';
import { planMigration, type Plan } from '../../lambdas/core/planner';
import {
  graphOptionsOf, hashingCompanions, defersPasswordHashing, offsetNeedsMaxKey, parseIndexesStep, parsePasswordsStep, parseStageStep, parseTablePartStep, partRange, passwordSteps, planFinalizeJobs, planWaves, planWorkItems, resolveWaves, splitKeys, stepReads, tableParts, withEarlyIndexItems,
} from '../../lambdas/core/work-graph';
import { renderIndexes, TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';

/** Hand-built legacy catalogs (as in planner.test.ts): pure, no database. */
function table(name: string, columns: (string | [string, string])[], rowEstimate = 10): TableInfo {
  const col = (spec: string | [string, string], ordinal: number): ColumnInfo => {
    const [n, udt] = typeof spec === 'string' ? [spec, spec === 'id' || spec.endsWith('_id') ? 'int4' : 'text'] : spec;
    return { name: n, dataType: udt, udtName: udt, nullable: n !== 'id', defaultExpr: null, ordinal };
  };
  return { schema: 'public', name, columns: columns.map((c, i) => col(c, i + 1)), primaryKey: ['id'], foreignKeys: [], rowEstimate, hasRows: true, minKey: 1, maxKey: 10 };
}
const ts = (n: string): [string, string] => [n, 'timestamp'];
const SHAPE_A = [
  table('user', ['id', 'name', 'email', 'password', 'role', 'area', ts('created_at')], 10),
  table('bag', ['id', 'qr_code', 'bag_name', ['children_count', 'int4'], 'parent_bag_id', 'owner_id', 'area', 'weight', 'status', ts('created_at')], 1000),
  table('scan', ['id', ts('created_at'), 'parent_id', 'child_id', 'scanner_id'], 3000),
  table('bill', ['id', 'bill_id', 'description', ['bag_count', 'int4'], 'status', 'created_by_id', ts('created_at')], 50),
  table('bill_bag', ['id', 'bill_id', 'bag_id', ts('created_at')], 1000),
];
const planOf = (...tables: TableInfo[]): Plan => {
  const catalog: Catalog = { schema: 'public', serverVersion: '16.0', tables };
  const p = planMigration(catalog, { targetSchema: 'tracetrack', overrides: { ...EMPTY_OVERRIDES } });
  expect(p.problems).toEqual([]);
  return p;
};

describe('the migration work graph', () => {
  it('derives the dependencies from the target foreign keys: a table waits for the tables it references', () => {
    const items = planWorkItems({ steps: ['prepare', 'user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'passwords:1/2', 'passwords:2/2', 'finalize'] });
    const after = Object.fromEntries(items.map((i) => [i.step, [...i.after].sort()]));
    expect(after).toEqual({
      prepare: [],
      user: ['prepare'],
      bag: ['prepare', 'user'],
      link: ['bag', 'prepare'],
      bill: ['prepare', 'user'],
      bill_bag: ['bag', 'bill', 'prepare'],
      scan: ['bag', 'prepare', 'user'],
      'passwords:1/2': ['prepare', 'user'],
      'passwords:2/2': ['prepare', 'user'],
      // The last hashing part runs beside finalize, which does not wait for it.
      finalize: ['bag', 'bill', 'bill_bag', 'link', 'passwords:1/2', 'prepare', 'scan', 'user'],
    });
    // Every foreign key of the target is a dependency (where both tables are in the plan).
    for (const item of items.filter((i) => i.step in TARGET_TABLE_DDL)) {
      for (const fk of TARGET_TABLE_DDL[item.step as keyof typeof TARGET_TABLE_DDL].foreignKeys) {
        if (fk.ref !== item.step) expect(item.after).toContain(fk.ref);
      }
    }
  });

  it.each([
    // The first hashing part beside bag, the last beside finalize (each started after the steps: startRank); the indexes
    // of bag and bill beside scan (user's wait for finalize: the last hashing part writes users in that wave).
    [['prepare', 'user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'passwords:1/2', 'passwords:2/2', 'finalize'], false,
      [['prepare'], ['user'], ['bag', 'bill', 'passwords:1/2'], ['link', 'bill_bag', 'scan', 'indexes:bag', 'indexes:bill'], ['finalize', 'passwords:2/2']]],
    [['prepare', 'user', 'bag', 'link', 'scan', 'promotionrequest', 'audit_log', 'finalize'], true,
      [['prepare'], ['user'], ['bag'], ['link', 'scan', 'promotionrequest', 'audit_log', 'indexes:user', 'indexes:bag'], ['finalize']]],
    // A plan without users: bags depend on prepare only.
    [['prepare', 'bag', 'scan', 'finalize'], false, [['prepare'], ['bag'], ['scan', 'indexes:bag'], ['finalize']]],
    // Nothing loads after bag: its indexes stay in finalize rather than add a wave.
    [['prepare', 'bag', 'finalize'], false, [['prepare'], ['bag'], ['finalize']]],
  ])('groups %j into waves (stage: %s)', (steps, stage, waves) => {
    expect(planWaves({ steps }, { stage })).toEqual(waves);
  });

  it.each([
    ['shape A', () => planOf(...SHAPE_A)],
    ['shapes A and E merged', () => planOf(...SHAPE_A, table('users', ['id', 'username', 'email', 'password_hash', 'role']), table('bags', ['id', 'qr_code', 'customer_name', 'weight', 'status', 'parent_bag_id', 'is_parent']))],
  ])('every dependency of an item is in an earlier wave, cross-database too (%s)', (_, planFn) => {
    const plan = planFn();
    for (const stage of [false, true]) {
      const items = planWorkItems(plan, { stage });
      const { waves } = resolveWaves(items);
      const waveOf = new Map(waves.flatMap((w, i) => w.map((s) => [s, i] as const)));
      for (const item of items) for (const d of item.after) expect(waveOf.get(d)!).toBeLessThan(waveOf.get(item.step)!);
      const staged = stage ? [...new Set(plan.tables.flatMap((t) => t.sources.map((x) => `stage:${x.table}`)))] : [];
      expect(waves.flat().sort()).toEqual([...plan.steps, ...staged].sort());
    }
  });

  it('cross-database: each source table is staged by its own item, and a step waits only for the staging of what it reads', () => {
    const plan = planOf(...SHAPE_A);
    const items = planWorkItems(plan, { stage: true });
    const after = Object.fromEntries(items.map((i) => [i.step, [...i.after].filter((d) => d.startsWith('stage:')).sort()]));
    // prepare reads the bags only (QR codes, bag roles from bag.parent_bag_id); every id is kept, so no offset needs a max key.
    expect(after.prepare).toEqual(['stage:bag']);
    expect(after.user).toEqual(['stage:user']);
    expect(after.bag).toEqual(['stage:bag']);
    expect(after.link).toEqual(['stage:bag']); // links derived from bag.parent_bag_id
    expect(after.scan).toEqual(['stage:scan']);
    expect(after.bill_bag).toEqual(['stage:bill_bag']);
    for (const p of plan.steps.filter((s) => parsePasswordsStep(s))) expect(after[p]).toEqual(['stage:user']);
    expect(after.finalize).toEqual(['stage:bag', 'stage:bill', 'stage:bill_bag', 'stage:scan', 'stage:user']);
    // Only what prepare reads is staged before it; the rest beside it (prepare's one connection leaves a core idle).
    const waves = planWaves(plan, { stage: true });
    const waveOf = (s: string) => waves.findIndex((w) => w.includes(s));
    expect(waves[0]).toEqual(['stage:bag']);
    // ... the largest first (row estimates), so that the longest does not start last.
    expect(waves[1]).toEqual(['prepare', 'stage:scan', 'stage:bill_bag', 'stage:bill', 'stage:user']);
    for (const s of waves.flat().filter((x) => parseStageStep(x))) {
      const readers = items.filter((i) => i.after.includes(s)).map((i) => waveOf(i.step));
      expect(waveOf(s)).toBe(Math.min(waveOf('prepare'), Math.min(...readers) - 1));
    }
    // In a wave the migration's own items come first (the Map starts them in order, up to the concurrency).
    expect(waves[1]!.findIndex((x) => parseStageStep(x))).toBeGreaterThan(waves[1]!.indexOf('prepare'));
  });

  it('cross-database, merged sources: prepare waits for the sources its id map and offsets read', () => {
    const plan = planOf(...SHAPE_A, table('users', ['id', 'username', 'email', 'password_hash', 'role']), table('bags', ['id', 'qr_code', 'customer_name', 'weight', 'status', 'parent_bag_id', 'is_parent']));
    expect(plan.tables.find((t) => t.target === 'bag')!.merged).toBe(true);
    expect(stepReads(plan, 'prepare').sort()).toEqual(['bag', 'bags', 'user', 'users']);
    expect(stepReads(plan, 'bag').sort()).toEqual(['bag', 'bags']);
    expect(stepReads(plan, 'finalize')).toEqual([]);
  });

  it.each([
    // [sources (key or null), merged, derived links, needs per source]
    [['id'], false, 0, [false]],
    [['id', 'id'], true, 0, [true, false]],
    [['id', null], false, 0, [true, false]],
    [[null, 'id'], false, 0, [false, false]],
    [['id'], false, 1, [true]],
    [[], false, 1, []],
  ] as const)('prepare needs the max key of sources %j (merged %s, %i derived links): %j', (keys, merged, derived, needs) => {
    const table = { sources: keys.map((key) => ({ key })), merged, derivedLinks: Array.from({ length: derived }, () => ({})) } as unknown as Parameters<typeof offsetNeedsMaxKey>[0];
    expect(keys.map((_, i) => offsetNeedsMaxKey(table, i))).toEqual(needs);
  });

  it.each([['stage:scan', 'scan'], ['stage:bill_bag', 'bill_bag'], ['stage', null], ['stage:', null], ['scan', null]])('reads the staged table of %s', (step, t) => {
    expect(parseStageStep(step)).toBe(t);
  });

  it('builds a table\'s indexes early only after every item that writes the table, and finalize waits for them', () => {
    const items = withEarlyIndexItems(planWorkItems({ steps: ['prepare', 'user', 'bag', 'link', 'scan', 'passwords:1/2', 'finalize'] }));
    const after = Object.fromEntries(items.map((i) => [i.step, [...i.after].sort()]));
    // passwords:1/2 writes users beside bag, so user's indexes come after it (in the wave of scan).
    expect(after['indexes:user']).toEqual(['passwords:1/2', 'user']);
    expect(after['indexes:bag']).toEqual(['bag']);
    expect(after.finalize).toEqual(expect.arrayContaining(['indexes:user', 'indexes:bag']));
    expect(items.map((i) => i.step)).not.toContain('indexes:scan');
    expect([parseIndexesStep('indexes:bag'), parseIndexesStep('indexes:nope'), parseIndexesStep('bag')]).toEqual(['bag', null, null]);
  });

  it.each([
    ['passwords:1/2', { part: 1, through: 1, parts: 2 }], ['passwords:3/3', { part: 3, through: 3, parts: 3 }], ['passwords:2-3/3', { part: 2, through: 3, parts: 3 }], ['passwords:3-2/3', null], ['passwords:2-4/3', null], ['passwords:3/2', null], ['passwords', null], ['user', null],
  ])('reads the hashing part of %s', (step, part) => {
    expect(parsePasswordsStep(step)).toEqual(part);
  });

  it('plans a hashing step beside bag, one beside scan, one beside finalize; each but the last hashes beside its wave', () => {
    expect(passwordSteps()).toEqual(['passwords:1/3', 'passwords:2/3', 'passwords:3/3']);
    expect(passwordSteps([1, 2])).toEqual(['passwords:1/3', 'passwords:2-3/3']);
    const waves = planWaves({ steps: ['prepare', 'user', 'bag', 'scan', ...passwordSteps(), 'finalize'] });
    expect(waves).toEqual([['prepare'], ['user'], ['bag', 'passwords:1/3'], ['scan', 'passwords:2/3', 'indexes:bag'], ['finalize', 'passwords:3/3']]);
    expect(hashingCompanions(waves, 'passwords:1/3')).toEqual(['bag']);
    expect(hashingCompanions(waves, 'passwords:2/3')).toEqual(['scan', 'indexes:bag']);
    // The last hashes what is left; so does a step in none of the waves, and one of a run planned with buckets (2-3/4: not the last).
    expect(hashingCompanions(waves, 'passwords:3/3')).toBeNull();
    expect(hashingCompanions(waves, 'passwords:1/2')).toBeNull();
    expect(hashingCompanions([['bag', 'passwords:1/4'], ['scan', 'passwords:2-3/4'], ['finalize', 'passwords:4/4']], 'passwords:2-3/4')).toEqual(['scan']);
    expect(hashingCompanions(waves, 'bag')).toBeNull();
    expect(graphOptionsOf({ crossDatabase: true, live: false, batchSize: 500, concurrency: 3 })).toEqual({ stage: true, live: false, batchSize: 500, concurrency: 3 });
    expect(graphOptionsOf({ batchSize: 500 })).toEqual({ stage: false, live: false, batchSize: 500, concurrency: 1 });
  });

  it('cuts the largest table without other unique keys into key-range parts, at least PART_BATCHES batches each, no more than the concurrency', () => {
    const plan = planOf(...SHAPE_A.map((t) => ({ ...t, rowEstimate: t.rowEstimate * 1000 }))); // scan 3 M, bag and bill_bag 1 M
    const options = { batchSize: 200_000, concurrency: 4 };
    expect(tableParts(plan, 'scan', options)).toBe(2);
    expect(tableParts(plan, 'scan', { ...options, batchSize: 100_000 })).toBe(4);
    expect(tableParts(plan, 'scan', { ...options, batchSize: 100_000, concurrency: 3 })).toBe(3);
    expect(tableParts(plan, 'scan', { ...options, live: true })).toBe(1);
    expect(tableParts(plan, 'scan', { concurrency: 4 })).toBe(1);
    // Unique keys besides the id (bag's QR code, bill_bag's pair) or derived links (link): the first batch wins, so never cut.
    for (const t of ['bag', 'bill_bag', 'link', 'user'] as const) expect(tableParts(plan, t, { ...options, batchSize: 1000 })).toBe(1);
    const waves = planWaves(plan, options);
    // The wave's Map starts the parts first, then the other steps, the hashing, the index builds.
    expect(waves.find((w) => w.includes('scan:1/2'))).toEqual(['scan:1/2', 'scan:2/2', 'link', 'bill_bag', 'passwords:2/3', 'indexes:bag', 'indexes:bill']);
    expect(waves.flat()).not.toContain('scan');
    // What waits for the table waits for every part; the parts wait for what the table did.
    const items = planWorkItems(plan, options);
    expect(items.find((i) => i.step === 'finalize')!.after).toEqual(expect.arrayContaining(['scan:1/2', 'scan:2/2']));
    expect(items.find((i) => i.step === 'scan:2/2')!.after).toEqual(items.find((i) => i.step === 'scan:1/2')!.after);
    expect(stepReads(plan, 'scan:2/2')).toEqual(['scan']);
  });

  it.each([
    ['scan:2/2', { table: 'scan', part: 2, parts: 2 }], ['scan:3/4', { table: 'scan', part: 3, parts: 4 }], ['scan:1/1', null], ['scan:3/2', null], ['bags:1/2', null], ['passwords:1/3', null], ['scan', null],
  ])('reads the table part of %s', (step, part) => {
    expect(parseTablePartStep(step)).toEqual(part);
  });

  it('splits keys evenly between the smallest and largest, and every key falls in exactly one part', () => {
    expect(splitKeys(1, 166, 3)).toEqual([56, 111]);
    expect(splitKeys(5, 6, 4)).toEqual([5]);
    expect(splitKeys(7, 7, 2)).toEqual([]);
    expect(splitKeys(null, null, 2)).toEqual([]);
    for (const [split, parts] of [[[56, 111], 3], [[5], 4], [[], 2]] as const) {
      const ranges = Array.from({ length: parts }, (_, i) => partRange(split, i + 1));
      for (const key of [-1, 0, 5, 6, 55, 56, 57, 111, 112, 10 ** 12]) {
        expect(ranges.filter((r) => r && (r.lo === null || key > r.lo) && (r.hi === null || key <= r.hi))).toHaveLength(1);
      }
      expect(ranges[0]!.lo).toBeNull();
      expect(ranges.filter((r) => r !== null).at(-1)!.hi).toBeNull();
    }
  });

  it('refuses a cycle', () => {
    expect(() => resolveWaves([{ step: 'a', after: ['b'] }, { step: 'b', after: ['a'] }])).toThrow(/cycle/);
  });

  it('finalize: table jobs first, then every foreign key NOT VALID at once, then one validation per table', () => {
    const jobs = planFinalizeJobs();
    const fk = jobs.find((j) => j.kind === 'foreign-keys')!;
    expect(fk.after).toEqual(jobs.filter((j) => j.kind === 'table').map((j) => j.name));
    expect(jobs.filter((j) => j.kind === 'validate').map((j) => j.name)).toEqual(
      Object.entries(TARGET_TABLE_DDL).filter(([, d]) => d.foreignKeys.length).map(([t]) => `validate:${t}`),
    );
    for (const j of jobs.filter((x) => x.kind === 'validate')) expect(j.after).toEqual(jobs.filter((x) => x.kind === 'vacuum').map((x) => x.name));
  });

  it('finalize starts the tables with the most rows first (derived links count their bag rows)', () => {
    const source = (table: string, rowEstimate: number) => ({ table, rowEstimate });
    const plan = {
      tables: [
        { target: 'user', sources: [source('users', 10)], derivedLinks: [] },
        { target: 'bag', sources: [source('bags', 1_000)], derivedLinks: [] },
        { target: 'link', sources: [], derivedLinks: [{ fromSource: 'bags' }] },
        { target: 'scan', sources: [source('scans', 3_000)], derivedLinks: [] },
        { target: 'bill_bag', sources: [source('bill_bags', 900)], derivedLinks: [] },
      ],
    } as never;
    const jobs = planFinalizeJobs(plan);
    expect(jobs.filter((j) => j.kind === 'table').map((j) => j.name).slice(0, 5)).toEqual(['scan', 'bag', 'link', 'bill_bag', 'user']);
    // The largest table's index builds first, in two jobs (every other index each), its table job after them.
    const builds = renderIndexes('s', 'scan').length;
    expect(jobs.slice(0, 2)).toEqual([
      { name: 'scan:indexes-1/2', kind: 'indexes', table: 'scan', indexes: [0, 2], after: [] },
      { name: 'scan:indexes-2/2', kind: 'indexes', table: 'scan', indexes: [1, 3], after: [] },
    ]);
    expect(builds).toBe(4);
    expect(jobs.find((j) => j.name === 'scan')!.after).toEqual(['scan:indexes-1/2', 'scan:indexes-2/2']);
    expect(jobs.filter((j) => j.kind === 'indexes' && j.table !== 'scan')).toEqual([]);
    // No row estimates: no split.
    expect(planFinalizeJobs().filter((j) => j.kind === 'indexes')).toEqual([]);
    expect(jobs.filter((j) => j.kind === 'validate').map((j) => j.name).slice(0, 3)).toEqual(['validate:scan', 'validate:bag', 'validate:link']);
    // Every table is vacuumed once every table job is done (their summaries' UPDATEs) and the keys are added, and the
    // validations, which read both sides from their indexes, wait for all of them.
    const vacuums = jobs.filter((j) => j.kind === 'vacuum');
    expect(vacuums.map((j) => j.name)).toEqual(['vacuum:scan', 'vacuum:bag', 'vacuum:link', 'vacuum:bill_bag', 'vacuum:user', 'vacuum:bill', 'vacuum:promotionrequest', 'vacuum:audit_log']);
    for (const v of vacuums) expect(v.after).toEqual(['foreign-keys']);
    expect(jobs.find((j) => j.name === 'foreign-keys')!.after).toEqual(['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log']);
    for (const j of jobs.filter((x) => x.kind === 'validate')) expect(j.after).toEqual(vacuums.map((v) => v.name));
  });

  it.each([
    [false, { key: 'id', idStrategy: 'keep' }, true],
    [true, { key: 'id', idStrategy: 'keep' }, false],
    [false, { key: null, idStrategy: 'keep' }, false],
    [false, { key: 'id', idStrategy: 'remap' }, false],
  ] as const)('defers the plaintext hashing (live %s, %j): %s', (live, source, expected) => {
    const columns = [{ target: 'password_hash', source: 'password', sourceType: 'text', kind: 'password', passwordSource: 'plaintext-column' }] as const;
    expect(defersPasswordHashing(live, { ...source, columns: [...columns] })).toBe(expected);
  });
});
