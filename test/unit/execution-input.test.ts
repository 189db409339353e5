import { describe, expect, it } from 'vitest';
import { DEFAULT_BATCH_SIZE, DEFAULT_CONCURRENCY, resolveExecutionInput } from '../../lambdas/core/execution-input';

/** The execution input, parsed without a database: defaults, and every problem reported at once. */

const fallback = () => 'fallback-run';

describe('resolveExecutionInput', () => {
  it('fills the defaults', () => {
    expect(resolveExecutionInput({}, fallback)).toEqual({
      runId: 'fallback-run', sourceSchema: 'public', targetSchema: 'tracetrack', appSchema: 'public', tables: null, skipTables: [],
      batchSize: DEFAULT_BATCH_SIZE, concurrency: DEFAULT_CONCURRENCY, cutover: false, dryRun: false, legacyJsonBackup: false, recomputeSummaries: false, live: false, mappingKey: null,
      prefix: 'runs/fallback-run/',
    });
  });

  it.each([
    [{ runId: 'r1', cutover: true, batchSize: 5 }, { runId: 'r1', cutover: true, batchSize: 5, prefix: 'runs/r1/' }],
    [{ skipTables: ['tmp_import'], tables: ['user', 'bag'] }, { skipTables: ['tmp_import'], tables: ['user', 'bag'] }],
    [{ recomputeSummaries: true, sourceSchema: 'legacy', targetSchema: 'tt' }, { recomputeSummaries: true, sourceSchema: 'legacy', targetSchema: 'tt' }],
    [{ concurrency: 1 }, { concurrency: 1 }],
  ])('%j → %j', (input, expected) => {
    expect(resolveExecutionInput(input, fallback)).toMatchObject(expected);
  });

  it.each([
    [[], 'the input must be a JSON object'],
    [{ colour: 'red' }, 'unknown field "colour"'],
    [{ batchSize: 0 }, '"batchSize" must be a whole number'],
    [{ concurrency: 0 }, '"concurrency" must be a whole number from 1 to 64'],
    [{ concurrency: 2.5 }, '"concurrency" must be a whole number'],
    [{ tables: ['bags'] }, '"tables" has "bags", not a target table'],
    [{ cutover: 'yes' }, '"cutover" must be true or false'],
    [{ sourceSchema: 'x', targetSchema: 'x' }, '"targetSchema" must differ from "sourceSchema"'],
    [{ runId: '../etc' }, 'is not usable'],
    [{ targetSchema: 'a;b' }, '"targetSchema" must be a schema name'],
  ])('refuses %j: %s', (input, message) => {
    expect(() => resolveExecutionInput(input, fallback)).toThrow(expect.objectContaining({ name: 'InputError', message: expect.stringContaining(message) }));
  });

  it('takes the stack\'s concurrency when the input names none', () => {
    expect(resolveExecutionInput({}, fallback, 8).concurrency).toBe(8);
    expect(resolveExecutionInput({ concurrency: 2 }, fallback, 8).concurrency).toBe(2);
  });

  it('lists every problem at once', () => {
    expect(() => resolveExecutionInput({ batchSize: -1, cutover: 1, colour: 'red' }, fallback)).toThrow(/3 problem\(s\)/);
  });
});
