import { escapeIdentifier } from '../../lambdas/core/sql/ident';
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { denseKeyThrough, parseBackupCursor, renderBackupCursor, resolveSplitKey } from '../../lambdas/core/backup-cursor';
import { renderCreateTable, retargetCreateTable } from '../../lambdas/core/backup-ddl';
import { decodeKeySegment, encodeKeySegment, legacyBackupFileName, partDataKey } from '../../lambdas/core/backup-keys';
import { buildManifest, parseBackupManifest, renderJson, tableSha256Input, type BackupPartRecord, type BackupTableRecord } from '../../lambdas/core/backup-manifest';
import type { TableInfo } from '../../lambdas/core/catalog';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const table: TableInfo = {
  schema: 'legacy',
  name: 'Bag "x"',
  columns: [
    { name: 'id', dataType: 'integer', udtName: 'int4', nullable: false, defaultExpr: "nextval('legacy.bag_id_seq'::regclass)", ordinal: 1 },
    { name: 'qr', dataType: 'character varying(64)', udtName: 'varchar', nullable: true, defaultExpr: "'none'::character varying", ordinal: 2 },
    { name: 'At', dataType: 'timestamp with time zone', udtName: 'timestamptz', nullable: false, defaultExpr: 'now()', ordinal: 4 },
  ],
  primaryKey: ['id'],
  foreignKeys: [],
  rowEstimate: 10,
  hasRows: true,
  minKey: 1,
  maxKey: 10,
};

describe('backup manifest (pure)', () => {
  it.each(['plain', 'Upper Case', 'quo"te', 'semi;colon', '"', 'ü😀'])('quotes %s like pg.escapeIdentifier', (name) => {
    expect(escapeIdentifier(name)).toBe(pg.escapeIdentifier(name));
  });

  it.each([
    ['bag', 'bag'],
    ['Weird "Table"; name', 'Weird%20%22Table%22%3B%20name'],
    ['a/b.c', 'a%2Fb%2Ec'],
    ['ü', '%C3%BC'],
  ])('encodes table %s for keys as %s, reversibly', (name, encoded) => {
    expect(encodeKeySegment(name)).toBe(encoded);
    expect(decodeKeySegment(encoded)).toBe(name);
  });

  it('renders CREATE TABLE without sequence defaults, and retargets it', () => {
    const ddl = renderCreateTable(table, 'legacy');
    expect(ddl).toBe(
      'CREATE TABLE "legacy"."Bag ""x""" (\n' +
        '  "id" integer NOT NULL,\n' +
        `  "qr" character varying(64) DEFAULT 'none'::character varying,\n` +
        '  "At" timestamp with time zone DEFAULT now() NOT NULL,\n' +
        '  PRIMARY KEY ("id")\n)',
    );
    expect(retargetCreateTable(ddl, table.name, 'legacy', 'restored "r"')).toMatch(/^CREATE TABLE "restored ""r"""\."Bag ""x""" \(/);
    expect(() => retargetCreateTable(ddl, table.name, 'other', 'x')).toThrow(/RestoreError|does not start with/);
  });

  it('splits only on a single integer primary key', () => {
    expect(resolveSplitKey(table)).toBe('id');
    expect(resolveSplitKey({ ...table, primaryKey: ['qr'] })).toBeNull();
    expect(resolveSplitKey({ ...table, primaryKey: ['id', 'qr'] })).toBeNull();
    expect(resolveSplitKey({ ...table, primaryKey: [] })).toBeNull();
  });

  it('round-trips cursors and refuses foreign ones', () => {
    expect(parseBackupCursor(null, 't')).toEqual({ part: 1, after: null, rows: 0 });
    const c = { part: 3, after: '-9223372036854775808', rows: 1000 };
    expect(parseBackupCursor(renderBackupCursor(c), 't')).toEqual(c);
    expect(() => parseBackupCursor('{"part":0}', 't')).toThrow(/cursor for table "t"/);
    expect(() => parseBackupCursor('nope', 't')).toThrow(/InputError|cursor/);
  });

  it('names the legacy file in UTC', () => {
    expect(legacyBackupFileName(new Date('2024-12-31T23:59:58Z'))).toBe('rds_backup_20241231_235958.json');
  });

  it('builds a manifest from records, validates it, and lists every problem', () => {
    const part = (n: number, rows: number, data: string): BackupPartRecord => ({
      formatVersion: 1, runId: 'r1', table: table.name, part: n, key: partDataKey('', 'r1', table.name, n),
      rows, bytes: data.length, compressedBytes: 20, sha256: sha(data),
      keyRange: { after: n === 1 ? null : '5', through: n === 1 ? '5' : null }, readAt: '2024-01-01T00:00:00.000Z',
    });
    const parts = [part(1, 5, 'abc'), part(2, 5, 'def')];
    const record: BackupTableRecord = {
      formatVersion: 1, runId: 'r1', sourceSchema: 'legacy', serverVersion: '16.4', table: table.name,
      columns: [{ name: 'id', type: 'integer' }], primaryKey: ['id'], splitKey: 'id', ddl: renderCreateTable(table, 'legacy'),
      parts: 2, rows: 10, bytes: 6, sha256: sha(tableSha256Input(parts.map((p) => p.sha256))),
      readAt: '2024-01-01T00:00:00.000Z', completedAt: '2024-01-01T00:01:00.000Z',
    };
    const manifest = buildManifest({ runId: 'r1', tables: [record], parts: new Map([[table.name, [...parts].reverse()]]), sha256Hex: sha });
    expect(manifest.tables[0]!.parts.map((p) => p.key)).toEqual(parts.map((p) => p.key));
    expect(manifest.createdAt).toBe('2024-01-01T00:01:00.000Z');
    expect(parseBackupManifest(renderJson(manifest), 'm')).toEqual(manifest);

    expect(() => buildManifest({ runId: 'r1', tables: [record], parts: new Map([[table.name, [parts[0]!]]]), expectedTables: ['other'], sha256Hex: sha }))
      .toThrow(/"other" has not finished.*should have parts 1,2 but S3 holds part records 1/);

    const broken = JSON.parse(renderJson(manifest));
    broken.tables[0].rows = 11;
    broken.tables[0].parts[1].sha256 = 'zz';
    expect(() => parseBackupManifest(JSON.stringify(broken), 'm')).toThrow(/parts\[1\]\.sha256 must be a sha256/);
    expect(() => parseBackupManifest('{"formatVersion": 2}', 'm')).toThrow(/formatVersion 2/);
  });
});

describe('denseKeyThrough (part bounds without counting rows)', () => {
  const keys = { min: '1', max: '3000', rows: 3000 };
  it('steps partRows keys on where the key is dense, the last part open-ended', () => {
    expect(denseKeyThrough(null, keys, 250)).toBe('250');
    expect(denseKeyThrough('2500', keys, 250)).toBe('2750');
    expect(denseKeyThrough('2750', keys, 250)).toBeNull();
    // Half the ids missing: ranges twice as wide, never more than 2 × partRows keys.
    expect(denseKeyThrough(null, { min: '1', max: '6000', rows: 3000 }, 250)).toBe('500');
  });
  it('leaves sparse keys, unknown row counts and empty tables to the caller (or one part)', () => {
    expect(denseKeyThrough(null, { min: '1', max: '6001', rows: 3000 }, 250)).toBeUndefined();
    expect(denseKeyThrough(null, { min: '1', max: '3000', rows: -1 }, 250)).toBeUndefined();
    expect(denseKeyThrough(null, { min: '1', max: '3000', rows: 0 }, 250)).toBeUndefined();
    expect(denseKeyThrough(null, { min: null, max: null, rows: 0 }, 250)).toBeNull();
  });
});
