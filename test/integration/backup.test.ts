import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gunzipSync, gzipSync } from 'node:zlib';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { createS3Client } from '../../lambdas/io/s3';
import pg from 'pg';
import { createTestDatabase } from '../support/pg';
import { startTestS3, type TestS3 } from '../support/s3';
import { readCatalog, readTableInfo } from '../../lambdas/io/catalog';
import { backupTable, finalizeBackup } from '../../lambdas/io/backup';
import { listObjectKeys, readObjectText } from '../../lambdas/io/s3';
import { writeLegacyJsonBackup } from '../../lambdas/io/legacy-json-backup';
import { findLatestRunId, readBackupManifest, restoreTables } from '../../lambdas/io/restore';
import { partDataKey, tableDirKey } from '../../lambdas/core/backup-keys';
import { parseBackupManifest, type BackupManifest } from '../../lambdas/core/backup-manifest';
import type { TableInfo } from '../../lambdas/core/catalog';
import { RestoreError } from '../../lambdas/core/errors';
import { resetRuntime } from '../../lambdas/io/runtime';
import type { RunContext } from '../../lambdas/core/contract';

const SRC = 'src';
const WEIRD = 'Weird "Table"; name';
const PREFIX = 'tt/';

let db: Awaited<ReturnType<typeof createTestDatabase>>;
let s3env: TestS3;
let client: pg.Client;

async function bytesOf(key: string): Promise<Buffer> {
  const out = await s3env.s3.send(new GetObjectCommand({ Bucket: s3env.bucket, Key: key }));
  return Buffer.from(await out.Body!.transformToByteArray());
}
async function putBytes(key: string, body: Buffer): Promise<void> {
  await s3env.s3.send(new PutObjectCommand({ Bucket: s3env.bucket, Key: key, Body: body }));
}

/** Invokes backupTable like the workflow's loop does; returns the number of invocations. */
async function backupUntilDone(runId: string, table: TableInfo, opts: { partRows?: number; budgetMs?: number } = {}) {
  let cursor: string | null = null;
  let invocations = 0;
  let partsWritten = 0;
  for (;;) {
    invocations += 1;
    const r = await backupTable({
      client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId, table, cursor,
      deadlineMs: Date.now() + (opts.budgetMs ?? 60_000), partRows: opts.partRows,
    });
    partsWritten += r.partsWritten;
    if (r.done) return { invocations, partsWritten, rows: r.rows };
    cursor = r.cursor;
    expect(invocations).toBeLessThan(10_000);
  }
}

async function backupSchema(runId: string, partRows = 1000): Promise<BackupManifest> {
  const catalog = await readCatalog(client, SRC);
  for (const table of catalog.tables) await backupUntilDone(runId, table, { partRows });
  const { manifest } = await finalizeBackup({
    s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId, expectedTables: catalog.tables.map((t) => t.name),
  });
  return manifest;
}

/** Rows of a that b lacks plus rows of b that a lacks (EXCEPT ALL both ways), column by column and as row text. */
async function differences(schemaA: string, schemaB: string, table: string): Promise<number> {
  const info = await readTableInfo(client, schemaA, table);
  const cols = info.columns
    .map((c) => (c.udtName === 'json' ? `${pg.escapeIdentifier(c.name)}::text` : pg.escapeIdentifier(c.name)))
    .join(', ');
  const a = `${pg.escapeIdentifier(schemaA)}.${pg.escapeIdentifier(table)}`;
  const b = `${pg.escapeIdentifier(schemaB)}.${pg.escapeIdentifier(table)}`;
  const { rows } = await client.query(
    `SELECT (SELECT count(*) FROM (SELECT ${cols} FROM ${a} EXCEPT ALL SELECT ${cols} FROM ${b}) x)
          + (SELECT count(*) FROM (SELECT ${cols} FROM ${b} EXCEPT ALL SELECT ${cols} FROM ${a}) y)
          + (SELECT count(*) FROM (SELECT ROW(x.*)::text FROM ${a} x EXCEPT ALL SELECT ROW(x.*)::text FROM ${b} x) z)
          + (SELECT count(*) FROM (SELECT ROW(x.*)::text FROM ${b} x EXCEPT ALL SELECT ROW(x.*)::text FROM ${a} x) w) AS n`,
  );
  return Number(rows[0].n);
}

beforeAll(async () => {
  db = await createTestDatabase('bk');
  s3env = await startTestS3();
  client = new pg.Client({ connectionString: db.url });
  client.on('error', () => undefined);
  await client.connect();
  await client.query(`
    CREATE SCHEMA src;
    CREATE TABLE src.kitchen_sink (
      id serial PRIMARY KEY,
      t text, vc varchar(20), ch char(3),
      n numeric(30,10), n2 numeric, i2 smallint, i8 bigint, r real, d double precision,
      b boolean, ts timestamp, tstz timestamptz, dt date, tm time, iv interval,
      j json, jb jsonb, by bytea, arr text[], u uuid,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    INSERT INTO src.kitchen_sink (t, vc, ch, n, n2, i2, i8, r, d, b, ts, tstz, dt, tm, iv, j, jb, by, arr, u) VALUES
      (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
      ('', '', '', 0, 0, 0, 0, 0, 0, false, '2024-01-01', '2024-01-01 00:00:00+00', '2024-01-01', '00:00', '0', '""', '""', '', '{}', '00000000-0000-0000-0000-000000000000'),
      (E'tab\\there\\nnew line\\r\\nCRLF', 'ünïcødé ✓', 'äb ', 12345678901234567890.0123456789, 'NaN', -32768, -9223372036854775808, 3.4028235e38, 1.0000000000000002, true,
       '1999-12-31 23:59:59.999999', '2030-06-15 12:34:56.789+05:30', '0001-01-01 BC', '23:59:59.999999', '1 year 2 mons 3 days 04:05:06.7',
       '{ "a" : [1, 2.50, "x\\ty"],  "emoji": "😀" }', '{"b": {"c": null}, "a": 1}', '\\x00ff5c0a09'::bytea, ARRAY['a,b', 'c"d', NULL, '', 'e\\f'], gen_random_uuid()),
      (E'back\\\\slash \\\\N and literal \\\\.', E'emoji 😀👍🏽', 'x', -0.0000000001, 1e-20, 32767, 9223372036854775807, 'Infinity', '-Infinity', NULL,
       'infinity', '-infinity', 'infinity', '00:00:00', '-1 days +02:00', '[]', '[1, "😀", {"k": "v\\n"}]', decode(repeat('ab', 300), 'hex'), ARRAY['😀'], NULL),
      ('\\N', 'NULL', 'N', 1.5, 2.5, 1, 1, 'NaN', 'NaN', true, '2000-02-29 12:00', '2000-02-29 12:00-08', '2000-02-29', '12:00', '1 microsecond', 'null', 'null', '\\x5c4e', ARRAY[]::text[], NULL);

    CREATE TABLE src.${pg.escapeIdentifier(WEIRD)} ("Mixed Col" text, "semi;colon" int, "quote""d" jsonb);
    INSERT INTO src.${pg.escapeIdentifier(WEIRD)} VALUES ('A', 1, '{"x": "y"}'), ('A', 1, '{"x": "y"}'), (NULL, NULL, NULL), ('', 0, '{}');

    CREATE TABLE src.composite (code text, seq int, note text, PRIMARY KEY (code, seq));
    INSERT INTO src.composite SELECT 'c' || (i % 7), i, repeat('n', i % 5) FROM generate_series(1, 50) i;

    CREATE TABLE src.empty_one (id int PRIMARY KEY, v text);

    CREATE TABLE src.multi (id bigint PRIMARY KEY, v text, parent bigint REFERENCES src.multi(id));
    INSERT INTO src.multi SELECT i * 3, md5(i::text), NULLIF(((i - 1) * 3), 0) FROM generate_series(1, 2500) i;
  `);
});

afterAll(async () => {
  await client?.end();
  await s3env?.stop();
  await db?.drop();
});

describe('backup and restore', () => {
  it('round-trips every table exactly, and restoring twice is safe', async () => {
    const manifest = await backupSchema('roundtrip');
    expect(manifest.tables.map((t) => t.name).sort()).toEqual([WEIRD, 'composite', 'empty_one', 'kitchen_sink', 'multi'].sort());
    expect(manifest.sourceSchema).toBe(SRC);
    expect(manifest.tables.find((t) => t.name === 'multi')!.parts).toHaveLength(3);
    expect(manifest.tables.find((t) => t.name === WEIRD)!.parts).toHaveLength(1);
    expect(manifest.tables.find((t) => t.name === 'empty_one')!.rows).toBe(0);
    // Sequence defaults are not carried over; other defaults are.
    const sink = manifest.tables.find((t) => t.name === 'kitchen_sink')!;
    expect(sink.ddl).not.toMatch(/nextval/);
    expect(sink.ddl).toMatch(/"created_at" timestamp with time zone DEFAULT now\(\) NOT NULL/);
    // No row data in the manifest.
    const manifestText = await readObjectText(s3env.s3, s3env.bucket, `${PREFIX}runs/roundtrip/backup/manifest.json`);
    expect(manifestText).not.toContain('ünïcødé');
    expect(manifestText).not.toContain('md5');
    expect(parseBackupManifest(manifestText!, 'test')).toEqual(manifest);

    for (let round = 0; round < 2; round += 1) {
      const result = await restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'roundtrip' });
      expect(result.schema).toBe('restored_roundtrip');
      expect(result.tables.map((t) => t.rows).reduce((a, b) => a + b, 0)).toBe(5 + 4 + 50 + 0 + 2500);
      for (const t of manifest.tables) expect(await differences(SRC, 'restored_roundtrip', t.name), t.name).toBe(0);
    }
    const pk = await client.query(
      `SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = '"restored_roundtrip"."composite"'::regclass AND i.indisprimary ORDER BY a.attname`,
    );
    expect(pk.rows.map((r) => r.attname)).toEqual(['code', 'seq']);

    // Only chosen tables, into a named schema.
    const one = await restoreTables({
      client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'roundtrip', tables: [WEIRD], schema: 'Other Schema',
    });
    expect(one.tables).toEqual([{ name: WEIRD, rows: 4, parts: 1 }]);
    expect(await differences(SRC, 'Other Schema', WEIRD)).toBe(0);
    expect(await findLatestRunId(s3env.s3, s3env.bucket, PREFIX)).toBe('roundtrip');
    await expect(restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'roundtrip', schema: SRC }))
      .rejects.toThrow(/would drop and replace live tables/);
    await expect(restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'nope' }))
      .rejects.toThrow(/Run nope has no backup manifest/);
    await expect(restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'roundtrip', tables: ['missing'] }))
      .rejects.toThrow(/has no table "missing"/);
  });

  it('backs up in one session\'s date, time zone, interval, float and bytea styles and restores in others to the same values', async () => {
    // A TraceTrack role set up in India: IST is also the abbreviation of Israel's time (+02), SQL style writes
    // day-first dates, extra_float_digits 0 rounds floats, escape bytea and sql_standard intervals read back
    // differently. The backup and the restore each pin their own session's settings for the COPY.
    const session = async (options: string) => {
      const c = new pg.Client({ connectionString: db.url, options });
      await c.connect();
      return c;
    };
    const india = await session('-c DateStyle=SQL,DMY -c TimeZone=Asia/Kolkata -c IntervalStyle=sql_standard -c extra_float_digits=0 -c bytea_output=escape');
    const newYork = await session('-c DateStyle=German -c TimeZone=America/New_York -c IntervalStyle=iso_8601 -c extra_float_digits=-15 -c bytea_output=escape');
    try {
      const table = await readTableInfo(india, SRC, 'kitchen_sink');
      const r = await backupTable({ client: india, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'styles', table, cursor: null, deadlineMs: Date.now() + 60_000 });
      expect(r).toMatchObject({ done: true, rows: 5 });
      await finalizeBackup({ s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'styles', expectedTables: ['kitchen_sink'] });
      const data = gunzipSync(await bytesOf(partDataKey(PREFIX, 'styles', 'kitchen_sink', 1))).toString('utf8');
      expect(data).toContain('\t2030-06-15 07:04:56.789+00\t');
      expect(data).toContain('\t1.0000000000000002\t');
      await restoreTables({ client: newYork, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'styles', schema: 'restored_styles' });
      expect(await differences(SRC, 'restored_styles', 'kitchen_sink')).toBe(0);
      // The sessions keep their own settings afterwards (SET LOCAL: the transaction's only).
      expect((await india.query('SHOW TimeZone')).rows[0].TimeZone).toBe('Asia/Kolkata');
      expect((await newYork.query('SHOW DateStyle')).rows[0].DateStyle).toBe('German, DMY');
    } finally {
      await india.end();
      await newYork.end();
    }
  });

  it('resumes under a tiny time budget to the same parts as a one-shot backup, never writing a part twice', async () => {
    const table = await readTableInfo(client, SRC, 'multi');
    const oneShot = await backupUntilDone('oneshot', table, { partRows: 100 });
    expect(oneShot).toEqual({ invocations: 1, partsWritten: 25, rows: 2500 });

    // Budget already spent: each invocation writes exactly one part.
    let cursor: string | null = null;
    let invocations = 0;
    let written = 0;
    for (;;) {
      invocations += 1;
      // A lost result (Lambda retried with the stale cursor) after the 5th invocation: parts 1-5 are skipped.
      const r = await backupTable({
        client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'tiny', table,
        cursor: invocations === 6 ? null : cursor, deadlineMs: Date.now() - 1, partRows: 100,
      });
      expect(r.partsWritten).toBeLessThanOrEqual(1);
      written += r.partsWritten;
      if (r.done) {
        expect(r.rows).toBe(2500);
        break;
      }
      cursor = r.cursor;
    }
    expect(invocations).toBe(25);
    expect(written).toBe(25);
    const again = await backupTable({
      client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'tiny', table, cursor: null, deadlineMs: 0, partRows: 100,
    });
    expect(again).toEqual({ done: true, cursor: null, rows: 2500, partsWritten: 0 });

    const records = async (runId: string) => {
      const keys = await listObjectKeys(s3env.s3, s3env.bucket, tableDirKey(PREFIX, runId, 'multi'));
      const names = keys.map((k) => k.slice(k.lastIndexOf('/') + 1));
      expect(new Set(names).size).toBe(names.length);
      expect(names.filter((n) => n.endsWith('.copy.gz'))).toHaveLength(25);
      return JSON.parse((await readObjectText(s3env.s3, s3env.bucket, `${tableDirKey(PREFIX, runId, 'multi')}table.json`))!);
    };
    const a = await records('oneshot');
    const b = await records('tiny');
    expect(b.sha256).toBe(a.sha256);
    expect(b.rows).toBe(2500);
    expect(b.parts).toBe(25);
  });

  it('writes a table\'s parts two at a time on a second connection, to the same content as one at a time', async () => {
    await client.query(`CREATE TABLE src.dense (id bigint PRIMARY KEY, v text); INSERT INTO src.dense SELECT i, md5(i::text) FROM generate_series(1, 3000) i; ANALYZE src.dense`);
    const table = await readTableInfo(client, SRC, 'dense');
    const opened: pg.Client[] = [];
    const connect = async () => {
      const c = new pg.Client({ connectionString: db.url });
      await c.connect();
      opened.push(c);
      return { client: c, release: () => c.end() };
    };
    const run = (runId: string, more: object, cursor: string | null = null, deadlineMs = Date.now() + 60_000) =>
      backupTable({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId, table, cursor, deadlineMs, partRows: 250, ...more });
    expect(await run('lanes-1', {})).toMatchObject({ done: true, rows: 3000, partsWritten: 12 });
    expect(await run('lanes-2', { connect, partConcurrency: 2 })).toMatchObject({ done: true, rows: 3000, partsWritten: 12 });
    expect(opened).toHaveLength(1);
    // A table of one part opens no second connection.
    await client.query(`CREATE TABLE src.one_part (id int PRIMARY KEY); INSERT INTO src.one_part SELECT generate_series(1, 10); ANALYZE src.one_part`);
    const onePart = await readTableInfo(client, SRC, 'one_part');
    expect(await backupTable({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'lanes-2', table: onePart, cursor: null, deadlineMs: Date.now() + 60_000, partRows: 250, connect, partConcurrency: 2 }))
      .toMatchObject({ done: true, rows: 10, partsWritten: 1 });
    expect(opened).toHaveLength(1);
    const record = async (runId: string) => JSON.parse((await readObjectText(s3env.s3, s3env.bucket, `${tableDirKey(PREFIX, runId, 'dense')}table.json`))!);
    expect((await record('lanes-2')).sha256).toBe((await record('lanes-1')).sha256);

    // Past the deadline a call writes the one part it must (no second lane starts one), and says where to go on.
    let cursor: string | null = null;
    let calls = 0;
    for (let done = false; !done; calls += 1) {
      const r = await run('lanes-2-tiny', { connect, partConcurrency: 2 }, cursor, Date.now() - 1);
      expect(r.partsWritten).toBe(1);
      ({ done, cursor } = r);
    }
    expect(calls).toBe(12);
    expect((await record('lanes-2-tiny')).sha256).toBe((await record('lanes-1')).sha256);

    // A resumed part keeps the range its neighbours were written with: part 3 lost, rerun with other part sizes.
    const dir = tableDirKey(PREFIX, 'lanes-1', 'dense');
    for (const key of await listObjectKeys(s3env.s3, s3env.bucket, dir)) {
      if (/\/(table\.json|part-0*3\.json)$/.test(key)) await s3env.s3.send(new DeleteObjectCommand({ Bucket: s3env.bucket, Key: key }));
    }
    expect(await run('lanes-1', { connect, partConcurrency: 2, partRows: 400 })).toMatchObject({ done: true, rows: 3000, partsWritten: 1 });
    const part3 = JSON.parse((await readObjectText(s3env.s3, s3env.bucket, `${dir}part-00003.json`))!);
    expect(part3.keyRange).toEqual({ after: '500', through: '750' });
    expect((await record('lanes-1')).sha256).toBe((await record('lanes-2')).sha256);
  });

  it('backs up and restores 200,000 rows with bounded memory', async () => {
    await client.query(`CREATE TABLE src.big (id int PRIMARY KEY, payload text, n numeric, at timestamptz)`);
    await client.query(
      `INSERT INTO src.big SELECT i, repeat(md5(i::text), 24), i / 7.0, timestamptz '2020-01-01' + i * interval '1 second'
         FROM generate_series(1, 200000) i`,
    );
    const table = await readTableInfo(client, SRC, 'big');
    let peak = 0;
    const sample = () => { peak = Math.max(peak, process.memoryUsage().rss); };
    const baseline = process.memoryUsage().rss;
    const timer = setInterval(sample, 20);
    const started = Date.now();
    try {
      const result = await backupUntilDone('big', table, { partRows: 80_000 });
      expect(result.rows).toBe(200_000);
      const backupMs = Date.now() - started;
      const { manifest } = await finalizeBackup({ s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'big', expectedTables: ['big'] });
      const big = manifest.tables[0]!;
      expect(big.parts).toHaveLength(3);
      sample();
      const afterBackup = peak;
      const restoreStarted = Date.now();
      const restored = await restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'big' });
      expect(restored.tables[0]!.rows).toBe(200_000);
      const restoreMs = Date.now() - restoreStarted;
      sample();
      console.log(
        `[big] ${(big.bytes / 1e6).toFixed(1)} MB uncompressed in ${big.parts.length} parts; backup ${backupMs} ms, restore ${restoreMs} ms; ` +
        `RSS baseline ${(baseline / 1e6).toFixed(0)} MB, peak after backup ${(afterBackup / 1e6).toFixed(0)} MB, peak ${(peak / 1e6).toFixed(0)} MB, growth ${((peak - baseline) / 1e6).toFixed(0)} MB`,
      );
      // More data than the allowed growth: holding a table (or a part) in memory would fail the test.
      expect(big.bytes).toBeGreaterThan(150e6);
      expect(peak - baseline).toBeLessThan(150e6);
    } finally {
      clearInterval(timer);
    }
    expect(await differences(SRC, 'restored_big', 'big')).toBe(0);
  });

  it('detects a corrupted, a truncated and a rewritten part on restore, and rolls the table back', async () => {
    const table = await readTableInfo(client, SRC, 'multi');
    await backupUntilDone('damaged', table, { partRows: 1000 });
    await finalizeBackup({ s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'damaged' });
    const restore = () => restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: PREFIX, runId: 'damaged', schema: 'dmg' });
    await restore();
    await client.query(`INSERT INTO dmg.multi (id, v) VALUES (-1, 'marker')`);

    const key = partDataKey(PREFIX, 'damaged', 'multi', 2);
    const original = await bytesOf(key);
    const expectRestoreError = async (pattern: RegExp) => {
      const err = await restore().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(RestoreError);
      expect((err as Error).name).toBe('RestoreError');
      expect((err as Error).message).toMatch(/table "multi" of run damaged/);
      expect((err as Error).message).toMatch(/part 2 of 3/);
      expect((err as Error).message).toMatch(/another run's backup/);
      expect((err as Error).message).toMatch(pattern);
      // Rolled back: the earlier restore, marker row included, is still there.
      const marker = await client.query(`SELECT count(*)::int AS n FROM dmg.multi WHERE id = -1`);
      expect(marker.rows[0].n).toBe(1);
    };

    const corrupted = Buffer.from(original);
    for (let i = 200; i < 260; i += 1) corrupted[i] = corrupted[i]! ^ 0x5a;
    await putBytes(key, corrupted);
    await expectRestoreError(/gzip data is damaged|corrupted|rejected the data/);

    await putBytes(key, original.subarray(0, Math.floor(original.length / 2)));
    await expectRestoreError(/gzip data is damaged or cut short/);

    // Valid gzip, one character changed: only the checksum can tell.
    const text = gunzipSync(original).toString('utf8');
    const altered = text.replace(/\t[0-9a-f]{32}\t/, (m) => m.replace(/[0-9a-f](?=\t$)/, (c) => (c === '0' ? '1' : '0')));
    expect(altered).not.toBe(text);
    await putBytes(key, gzipSync(Buffer.from(altered, 'utf8')));
    await expectRestoreError(/corrupted or truncated \(its data has sha256 [0-9a-f]{64}, the manifest says/);

    await putBytes(key, original);
    await restore();
    expect(await differences(SRC, 'dmg', 'multi')).toBe(0);
  });

  it('writes the legacy single-file JSON backup with every row', async () => {
    const tables = ['kitchen_sink', WEIRD, 'composite', 'empty_one', 'multi'];
    // The local S3 ignores SSE, so observe the real requests' headers instead.
    const s3 = createS3Client({ endpoint: s3env.endpoint, localServer: true });
    const sse: string[] = [];
    s3.middlewareStack.add((next) => async (args) => {
      const headers = (args.request as { headers?: Record<string, string> }).headers ?? {};
      sse.push(`${headers['x-amz-server-side-encryption']}:${headers['x-amz-server-side-encryption-aws-kms-key-id']}`);
      return next(args);
    }, { step: 'finalizeRequest' });
    const { key, rows } = await writeLegacyJsonBackup({
      client, s3, bucket: s3env.bucket, prefix: PREFIX, schema: SRC, tables, at: new Date('2025-03-04T05:06:07Z'),
      kmsKeyId: 'alias/tracetrack-test',
    });
    s3.destroy();
    expect(sse.length).toBeGreaterThan(0);
    expect(sse[0]).toBe('aws:kms:alias/tracetrack-test');
    expect(key).toBe(`${PREFIX}rds_backup_20250304_050607.json`);
    const parsed = JSON.parse((await readObjectText(s3env.s3, s3env.bucket, key))!) as Record<string, Record<string, unknown>[]>;
    expect(Object.keys(parsed)).toEqual(tables);
    expect(parsed.kitchen_sink).toHaveLength(5);
    expect(parsed[WEIRD]).toHaveLength(4);
    expect(parsed.composite).toHaveLength(50);
    expect(parsed.empty_one).toEqual([]);
    expect(parsed.multi).toHaveLength(2500);
    expect(rows).toBe(5 + 4 + 50 + 2500);
    expect(parsed.kitchen_sink[0]!.t).toBeNull();
    expect(parsed.kitchen_sink[1]!.t).toBe('');
    expect(parsed.kitchen_sink[2]!.t).toBe('tab\there\nnew line\r\nCRLF');
    expect(parsed.kitchen_sink[3]!.vc).toBe('emoji 😀👍🏽');
    expect(parsed.kitchen_sink[2]!.j).toEqual({ a: [1, 2.5, 'x\ty'], emoji: '😀' });
    expect(parsed[WEIRD]![0]).toEqual({ 'Mixed Col': 'A', 'semi;colon': 1, 'quote"d': { x: 'y' } });
    expect(parsed.multi.map((r) => r.id)).toEqual(Array.from({ length: 2500 }, (_, i) => (i + 1) * 3));
  });

  it('runs through the BackupTable and FinalizeBackup handlers; the newest finished run restores', async () => {
    const saved = { ...process.env };
    process.env.SOURCE_DATABASE_URL = db.url;
    process.env.BACKUP_BUCKET = s3env.bucket;
    process.env.BACKUP_PREFIX = 'handlers';
    process.env.S3_ENDPOINT = s3env.endpoint;
    process.env.S3_LOCAL_SERVER = 'true';
    process.env.TIME_BUDGET_MS = '1';
    resetRuntime();
    try {
      const { handler: backup } = await import('../../lambdas/handlers/backup-table');
      const { handler: finalize } = await import('../../lambdas/handlers/finalize-backup');
      const run = { runId: 'via-handlers', sourceSchema: SRC, prefix: 'runs/via-handlers/' } as RunContext;
      const tables = (await readCatalog(client, SRC)).tables.map((t) => t.name);
      let total = 0;
      for (const table of tables) {
        let cursor: string | null = null;
        for (;;) {
          const r = await backup({ run, table, cursor });
          expect(r.table).toBe(table);
          if (r.done) { total += r.rows; break; }
          cursor = r.cursor;
        }
      }
      const fin = await finalize({ run });
      expect(fin).toEqual({ manifestKey: 'handlers/runs/via-handlers/backup/manifest.json', tables: tables.length, rows: total });
      const manifest = await readBackupManifest(s3env.s3, s3env.bucket, 'handlers/', 'via-handlers');
      expect(manifest.tables).toHaveLength(tables.length);
      const runId = await findLatestRunId(s3env.s3, s3env.bucket, 'handlers/');
      expect(runId).toBe('via-handlers');
      const restored = await restoreTables({ client, s3: s3env.s3, bucket: s3env.bucket, prefix: 'handlers/', runId: runId!, tables: ['kitchen_sink'], schema: 'via_handlers' });
      expect(restored.runId).toBe('via-handlers');
      expect(await differences(SRC, 'via_handlers', 'kitchen_sink')).toBe(0);
    } finally {
      process.env = saved;
      resetRuntime();
    }
  });
});
