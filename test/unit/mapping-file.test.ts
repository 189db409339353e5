import { describe, expect, it } from 'vitest';
import { MappingError } from '../../lambdas/core/errors';
import { EMPTY_OVERRIDES, parseMappingFile, resolveMappingOverrides } from '../../lambdas/core/mapping-file';

/** Mapping files are untrusted until parsed; every problem is reported at once. */

function errorOf(fn: () => unknown): InstanceType<typeof MappingError> {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MappingError);
    return err as InstanceType<typeof MappingError>;
  }
  throw new Error('expected a MappingError');
}

describe('parseMappingFile', () => {
  it('parses a valid file', () => {
    const text = JSON.stringify({
      $schema: './mapping.schema.json',
      comment: 'site 7',
      tables: { legacy_sacks: 'bag', old_people: 'user' },
      columns: { bag: { qr_id: ['barcode', 'code'], name: 'label' }, user: { username: ['login'] } },
      references: { 'scans.bag_id': 'bags' },
      skipTables: ['tmp_import'],
    });
    expect(parseMappingFile(text)).toEqual({
      tables: { legacy_sacks: 'bag', old_people: 'user' },
      columns: { bag: { qr_id: ['barcode', 'code'], name: ['label'] }, user: { username: ['login'] } },
      references: { 'scans.bag_id': 'bags' },
      skipTables: ['tmp_import'],
    });
  });

  it('an empty object is the empty override set', () => {
    expect(parseMappingFile('{}')).toEqual(EMPTY_OVERRIDES);
  });

  it('invalid JSON is a MappingError naming the file', () => {
    const e = errorOf(() => parseMappingFile('{ "tables": ', 'mapping.json'));
    expect(e.name).toBe('MappingError');
    expect(e.retryable).toBe(false);
    expect(e.message).toContain('mapping.json is not valid JSON');
  });

  it.each([['[]'], ['"bag"'], ['null'], ['42']])('%s is not an object', (text) => {
    expect(errorOf(() => parseMappingFile(text)).message).toContain('must be a JSON object');
  });

  it('lists every problem at once in one MappingError', () => {
    const e = errorOf(() =>
      resolveMappingOverrides({
        tabels: {},
        tables: { legacy_sacks: 'sack', ok: 'bag' },
        columns: { bag: { qr: ['barcode'], name: [], status: ['state'] }, sack: { x: ['y'] } },
        references: { 'scans_bag_id': 'bags', 'scans.user_id': '' },
        skipTables: 'tmp_import',
      }),
    );
    const problems = [
      'unknown key "tabels"',
      'tables["legacy_sacks"]: "sack" is not a target table',
      'columns["bag"]["qr"]: bag has no column "qr"',
      'columns["bag"]["name"] must be a non-empty list',
      'columns["sack"]: not a target table',
      'references["scans_bag_id"]: the key must be "<source table>.<column>"',
      'references["scans.user_id"] must name a source table',
      '"skipTables" must be a list of table names',
    ];
    expect(e.message).toContain(`has ${problems.length} problems`);
    for (const p of problems) expect(e.message).toContain(p);
    expect(e.message.split('\n').filter((l) => l.startsWith('  - '))).toHaveLength(problems.length);
    expect(e.message).toContain('Fix them and run again.');
  });

  it.each([
    ['tables not an object', { tables: ['bag'] }, '"tables" must be an object'],
    ['columns not an object', { columns: 'bag' }, '"columns" must be an object'],
    ['columns of a table not an object', { columns: { bag: ['qr_id'] } }, 'columns["bag"] must be an object'],
    ['an alias that is empty text', { columns: { bag: { qr_id: [''] } } }, 'must be a non-empty list of source column names'],
    ['an alias that is not text', { columns: { bag: { qr_id: [7] } } }, 'must be a non-empty list of source column names'],
    ['references not an object', { references: [] }, '"references" must be an object'],
    ['a references key with two dots', { references: { 'a.b.c': 'bags' } }, 'the key must be'],
    ['skipTables with a non-text entry', { skipTables: ['a', 1] }, '"skipTables" must be a list'],
  ] as const)('refuses %s', (_n, raw, message) => {
    const e = errorOf(() => resolveMappingOverrides(raw));
    expect(e.message).toContain('has 1 problem:');
    expect(e.message).toContain(message);
  });
});
