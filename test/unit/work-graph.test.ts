import { describe, expect, it } from 'vitest';
import { defersPasswordHashing, parseIndexesStep, parsePasswordsStep, planFinalizeJobs, planWaves, planWorkItems, resolveWaves, withEarlyIndexItems } from '../../lambdas/core/work-graph';
import { TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';

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
      finalize: ['bag', 'bill', 'bill_bag', 'link', 'passwords:1/2', 'passwords:2/2', 'prepare', 'scan', 'user'],
    });
    // Every foreign key of the target is a dependency (where both tables are in the plan).
    for (const item of items.filter((i) => i.step in TARGET_TABLE_DDL)) {
      for (const fk of TARGET_TABLE_DDL[item.step as keyof typeof TARGET_TABLE_DDL].foreignKeys) {
        if (fk.ref !== item.step) expect(item.after).toContain(fk.ref);
      }
    }
  });

  it.each([
    // The first hashing part beside bag, the second beside scan; the indexes of bag and bill beside scan too
    // (user's wait for finalize: the second hashing part writes users in that wave).
    [['prepare', 'user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'passwords:1/2', 'passwords:2/2', 'finalize'], false,
      [['prepare'], ['user'], ['bag', 'bill', 'passwords:1/2'], ['link', 'bill_bag', 'scan', 'passwords:2/2', 'indexes:bag', 'indexes:bill'], ['finalize']]],
    [['prepare', 'user', 'bag', 'link', 'scan', 'promotionrequest', 'audit_log', 'finalize'], true,
      [['stage'], ['prepare'], ['user'], ['bag'], ['link', 'scan', 'promotionrequest', 'audit_log', 'indexes:user', 'indexes:bag'], ['finalize']]],
    // A plan without users: bags depend on prepare only.
    [['prepare', 'bag', 'scan', 'finalize'], false, [['prepare'], ['bag'], ['scan', 'indexes:bag'], ['finalize']]],
    // Nothing loads after bag: its indexes stay in finalize rather than add a wave.
    [['prepare', 'bag', 'finalize'], false, [['prepare'], ['bag'], ['finalize']]],
  ])('groups %j into waves (stage: %s)', (steps, stage, waves) => {
    expect(planWaves({ steps }, { stage })).toEqual(waves);
  });

  it('every dependency of an item is in an earlier wave', () => {
    const steps = ['prepare', 'user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log', 'passwords:1/2', 'passwords:2/2', 'finalize'];
    const items = planWorkItems({ steps }, { stage: true });
    const { waves } = resolveWaves(items);
    const waveOf = new Map(waves.flatMap((w, i) => w.map((s) => [s, i] as const)));
    for (const item of items) for (const d of item.after) expect(waveOf.get(d)!).toBeLessThan(waveOf.get(item.step)!);
    expect(waves.flat().sort()).toEqual(['stage', ...steps].sort());
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
    ['passwords:1/2', { part: 1, parts: 2 }], ['passwords:3/3', { part: 3, parts: 3 }], ['passwords:3/2', null], ['passwords', null], ['user', null],
  ])('reads the hashing part of %s', (step, part) => {
    expect(parsePasswordsStep(step)).toEqual(part);
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
    for (const j of jobs.filter((x) => x.kind === 'validate')) expect(j.after).toEqual(['foreign-keys']);
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
