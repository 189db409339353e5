import { createHash } from 'node:crypto';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { copyOut } from './copy-out';
import { denseKeyThrough, parseBackupCursor, renderBackupCursor, resolveSplitKey, type KeyStats } from '../core/backup-cursor';
import { assertRunId, backupRootKey, encodeKeySegment, manifestKey, partDataKey, partRecordKey, tableRecordKey } from '../core/backup-keys';
import { BACKUP_FORMAT_VERSION, COPY_SESSION_SETTINGS, DEFAULT_PART_ROWS, buildManifest, buildTableRecord, parsePartRecord, parseTableRecord, renderJson, tableSha256Input, type BackupManifest, type BackupPartRecord, type BackupTableRecord } from '../core/backup-manifest';
import type { TableInfo } from '../core/catalog';
import { BackupError, InputError, MigrationError } from '../core/errors';
import { withTransaction, toMigrationError } from './pg';
import { isStorageError, listObjectKeys, putJsonObject, readObjectText, readObjectTexts, toStorageError, uploadStream } from './s3';

/** gzip -1: the backup runs at COPY speed; a higher level costs more CPU than it saves in S3 bytes. */
export const GZIP_LEVEL = 1;

/**
 * Parts of one split table written at once by a BackupTable invocation, each on its own source
 * connection: a table then backs up at the speed of two COPYs, and the largest table no longer
 * decides the phase alone. With the Backup map's two tables at a time: at most 4 source connections.
 */
export const BACKUP_PART_CONCURRENCY = 2;

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Passes bytes through, counting them and hashing them with sha256. */
export class HashingCounter extends Transform {
  bytes = 0;
  private readonly hash = createHash('sha256');
  private digestHex: string | undefined;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    cb(null, chunk);
  }
  sha256(): string {
    this.digestHex ??= this.hash.digest('hex');
    return this.digestHex;
  }
}

/**
 * Bytes a COPY stream is gathered into before hashing and gzip. PostgreSQL sends COPY data in 8 KB
 * socket writes, so the stream arrived in chunks of a few KB; per chunk, the hash, gzip's threadpool
 * round trip and each stream stage cost main-thread time (zlib's processChunk/processCallback and GC were
 * the largest items of the backup's CPU profile). Bounded: one buffer of this size per part being written.
 */
export const COPY_CHUNK_BYTES = 256 * 1024;

/** Passes bytes through in chunks of at least `size` bytes (the last one smaller). */
export class Coalescer extends Transform {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  constructor(private readonly size = COPY_CHUNK_BYTES) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= this.size) this.flushPending();
    cb();
  }
  override _flush(cb: TransformCallback): void {
    this.flushPending();
    cb();
  }
  private flushPending(): void {
    if (this.pendingBytes === 0) return;
    this.push(this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes));
    this.pending = [];
    this.pendingBytes = 0;
  }
}

class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/**
 * `SET LOCAL` of the COPY settings, so text COPY round-trips exactly whatever the role's or the database's own
 * DateStyle, TimeZone, … are, and of `extra` transaction-local settings: names and values as parameters, one round trip.
 */
export async function applyCopySettings(client: pg.ClientBase, extra: Readonly<Record<string, string>> = {}): Promise<void> {
  const settings = { ...COPY_SESSION_SETTINGS, ...extra };
  await client.query('SELECT set_config(s.name, s.value, true) FROM unnest($1::text[], $2::text[]) AS s(name, value)', [Object.keys(settings), Object.values(settings)]);
}

// ---------------------------------------------------------------- backupTable

export interface BackupTableOptions {
  readonly client: pg.ClientBase;
  readonly s3: S3Client;
  readonly bucket: string;
  /** Global key prefix (BACKUP_PREFIX), '' or ending in '/'. */
  readonly prefix: string;
  readonly runId: string;
  readonly table: TableInfo;
  /** Null to start (finished parts found in S3 are kept, never written twice). */
  readonly cursor: string | null;
  /** Epoch ms after which no new part is started (at least one part is written per call). */
  readonly deadlineMs: number;
  readonly kmsKeyId?: string;
  /** Rows per part for tables split on an integer primary key (default 500,000). */
  readonly partRows?: number;
  /**
   * Opens one more connection to the source (closed by the caller's `release`), so that up to
   * `partConcurrency` parts of a split table are written at once. Without it parts go one at a time.
   */
  readonly connect?: () => Promise<{ client: pg.ClientBase; release: () => Promise<void> }>;
  /** Parts written at once (each on its own connection, one of them `client`). @default 1 */
  readonly partConcurrency?: number;
}

export interface BackupTableProgress {
  readonly done: boolean;
  readonly cursor: string | null;
  /** Rows of the table in finished parts so far. */
  readonly rows: number;
  /** Parts uploaded by this call (parts found already finished are not counted). */
  readonly partsWritten: number;
}

function parseOrNull<T>(parse: () => T): T | null {
  try {
    return parse();
  } catch (err) {
    if (err instanceof BackupError) return null;
    throw err;
  }
}

/**
 * Backs up one table as gzip'd COPY text parts, by key range of its integer primary key (one part
 * when it has none), within a time budget, up to `partConcurrency` parts at once. Resumable and
 * idempotent: a part whose record exists in S3 is never uploaded again (a part's record is written
 * only once its object is complete, with its checksum), and a finished table returns `done` at once.
 * The cursor names the first part not started; every part before it is finished when it is returned.
 */
export async function backupTable(options: BackupTableOptions): Promise<BackupTableProgress> {
  const { s3, bucket, prefix, runId, table } = options;
  assertRunId(runId);
  const partRows = options.partRows ?? DEFAULT_PART_ROWS;
  if (!Number.isSafeInteger(partRows) || partRows < 1) {
    throw new InputError(`partRows must be a positive integer (got ${partRows}).`);
  }
  const finished = await readObjectText(s3, bucket, tableRecordKey(prefix, runId, table.name));
  // A record that does not parse was torn by a crash while it was written (a local store has no
  // atomic PUT): it is treated as missing and written again from the parts, never as fatal.
  const finishedRecord = finished === null ? null : parseOrNull(() => parseTableRecord(finished, tableRecordKey(prefix, runId, table.name)));
  if (finishedRecord) return { done: true, cursor: null, rows: finishedRecord.rows, partsWritten: 0 };

  const splitKey = resolveSplitKey(table);
  const lanes = splitKey !== null && options.connect ? Math.max(1, Math.floor(options.partConcurrency ?? 1)) : 1;
  const plan = new PartPlanner({ ...options, partRows, splitKey });
  const extra: { client: pg.ClientBase; release: () => Promise<void> }[] = [];
  const lane = async (client: pg.ClientBase) => {
    for (let next = await plan.next(client); next; next = await plan.next(client)) {
      plan.finished(await writePart({ ...options, client, part: next.part, after: next.after, through: next.through, splitKey }), true);
    }
  };
  const runs: Promise<void>[] = [lane(options.client).catch(plan.fail)];
  try {
    // A second connection only once the first lane has its part and another one is left to hand out.
    await plan.settled();
    for (let i = 1; i < lanes && plan.moreToHandOut(); i += 1) {
      const conn = await options.connect!();
      extra.push(conn);
      runs.push(lane(conn.client).catch(plan.fail));
    }
  } catch (err) {
    plan.fail(err);
  } finally {
    await Promise.all(runs);
    await Promise.all(extra.map((c) => c.release().catch(() => undefined)));
  }
  plan.rethrow();
  if (!plan.complete) return { done: false, cursor: renderBackupCursor(plan.cursor()), rows: plan.rows, partsWritten: plan.partsWritten };
  await finishTable({ ...options, lastPart: plan.lastPart });
  return { done: true, cursor: null, rows: plan.rows, partsWritten: plan.partsWritten };
}

/**
 * Hands out a table's parts in order, one at a time (the lanes that write them call `next` in turn):
 * a part with a record in S3 is counted, never handed out; a new part's upper bound is the next part's
 * lower bound when that part already has a record (a resumed run keeps the ranges it wrote), else the
 * key `partRows` rows on. No part is handed out past the deadline once one has been written or started.
 */
class PartPlanner {
  private part: number;
  private after: string | null;
  rows: number;
  partsWritten = 0;
  private started = 0;
  complete = false;
  lastPart = 0;
  private error: unknown;
  /** The split key's bounds and the table's estimated rows, read once per call for {@link denseKeyThrough}. */
  private keys: KeyStats | undefined;
  private turn: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: BackupTableOptions & { partRows: number; splitKey: string | null }) {
    ({ part: this.part, after: this.after, rows: this.rows } = parseBackupCursor(o.cursor, o.table.name));
  }

  readonly fail = (err: unknown): void => {
    this.error ??= err;
  };

  rethrow(): void {
    if (this.error !== undefined) throw this.error;
  }

  cursor() {
    return { part: this.part, after: this.after, rows: this.rows };
  }

  /** Resolves when every `next` asked so far has been answered. */
  settled(): Promise<unknown> {
    return this.turn;
  }

  /** Whether a lane that asks now may still get a part (not past the last one, the deadline or a failure). */
  moreToHandOut(): boolean {
    return !this.complete && this.error === undefined && Date.now() < this.o.deadlineMs;
  }

  finished(record: BackupPartRecord, written: boolean): void {
    this.rows += record.rows;
    if (written) this.partsWritten += 1;
  }

  /** The next part to write (its bounds), or null when there is none for this call. One caller at a time. */
  next(client: pg.ClientBase): Promise<{ part: number; after: string | null; through: string | null } | null> {
    const turn = this.turn.then(() => this.take(client));
    this.turn = turn.catch(() => undefined);
    return turn;
  }

  private async take(client: pg.ClientBase): Promise<{ part: number; after: string | null; through: string | null } | null> {
    for (;;) {
      if (this.complete || this.error !== undefined) return null;
      const record = await this.record(this.part);
      if (!record && this.started > 0 && Date.now() >= this.o.deadlineMs) return null;
      const after = this.after;
      const part = this.part;
      const through = record ? (record.keyRange?.through ?? null) : await this.upperBound(client, part, after);
      if (this.o.splitKey === null || through === null) {
        this.complete = true;
        this.lastPart = part;
      } else {
        this.after = through;
        this.part += 1;
      }
      if (record) {
        this.finished(record, false);
        continue;
      }
      this.started += 1;
      return { part, after, through };
    }
  }

  private async record(part: number): Promise<BackupPartRecord | null> {
    const key = partRecordKey(this.o.prefix, this.o.runId, this.o.table.name, part);
    const text = await readObjectText(this.o.s3, this.o.bucket, key);
    return text === null ? null : parseOrNull(() => parsePartRecord(text, key));
  }

  private async upperBound(client: pg.ClientBase, part: number, after: string | null): Promise<string | null> {
    const { splitKey, table } = this.o;
    if (splitKey === null) return null;
    const following = await this.record(part + 1);
    if (following?.keyRange?.after) return following.keyRange.after;
    const k = escapeIdentifier(splitKey);
    try {
      this.keys ??= await readKeyStats(client, table, splitKey);
      const dense = denseKeyThrough(after, this.keys, this.o.partRows);
      if (dense !== undefined) return dense;
      const probe = await client.query<{ k: string }>(
        `SELECT ${k}::text AS k FROM ${qualified(table.schema, table.name)} WHERE ${after === null ? 'TRUE' : `${k} > $2::int8`} ORDER BY ${k} OFFSET $1 LIMIT 2`,
        after === null ? [this.o.partRows - 1] : [this.o.partRows - 1, after],
      );
      return probe.rows.length === 2 ? probe.rows[0]!.k : null;
    } catch (err) {
      throw toMigrationError(err, `Finding where part ${part} of table ${JSON.stringify(table.name)} ends`);
    }
  }
}

/** The split key's smallest and largest values and the catalog's row estimate (no scan: two index probes). */
async function readKeyStats(client: pg.ClientBase, table: TableInfo, splitKey: string): Promise<KeyStats> {
  const k = escapeIdentifier(splitKey);
  const source = qualified(table.schema, table.name);
  const r = await client.query<{ min: string | null; max: string | null; rows: number }>(
    `SELECT (SELECT min(${k})::text FROM ${source}) AS min, (SELECT max(${k})::text FROM ${source}) AS max,
            (SELECT reltuples::float8 FROM pg_class WHERE oid = $1::regclass) AS rows`,
    [source],
  );
  const row = r.rows[0]!;
  return { min: row.min, max: row.max, rows: Number(row.rows) };
}

async function writePart(input: BackupTableOptions & {
  part: number;
  after: string | null;
  through: string | null;
  splitKey: string | null;
}): Promise<BackupPartRecord> {
  const { client, s3, bucket, prefix, runId, table, part, after, through, splitKey } = input;
  const dataKey = partDataKey(prefix, runId, table.name, part);
  const source = qualified(table.schema, table.name);
  const doing = `Backing up part ${part} of table ${JSON.stringify(table.name)}`;
  try {
    return await withTransaction(client, async () => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      // COPY takes no bind parameters: a split table's bounds travel as parameters into transaction-local settings.
      await applyCopySettings(client, splitKey === null ? {} : { 'tracetrack.backup_after': after ?? '', 'tracetrack.backup_through': through ?? '' });
      const readAt = new Date().toISOString();
      let keyRange: BackupPartRecord['keyRange'] = null;
      let filter = '';
      if (splitKey !== null) {
        const k = escapeIdentifier(splitKey);
        const lower = after === null ? 'TRUE' : `${k} > current_setting('tracetrack.backup_after')::int8`;
        const upper = through === null ? 'TRUE' : `${k} <= current_setting('tracetrack.backup_through')::int8`;
        filter = ` WHERE ${lower} AND ${upper} ORDER BY ${k}`;
        keyRange = { after, through };
      } else if (table.primaryKey.length) {
        filter = ` ORDER BY ${table.primaryKey.map((c) => escapeIdentifier(c)).join(', ')}`;
      }
      const hasher = new HashingCounter();
      const compressed = new ByteCounter();
      let rowCount = 0;
      await uploadStream({
        s3,
        bucket,
        key: dataKey,
        contentType: 'application/gzip',
        kmsKeyId: input.kmsKeyId,
        produce: async (body) => {
          const copy = client.query(copyOut(`COPY (SELECT * FROM ${source}${filter}) TO STDOUT`));
          await pipeline(copy, new Coalescer(), hasher, createGzip({ level: GZIP_LEVEL, chunkSize: COPY_CHUNK_BYTES }), compressed, body);
          rowCount = copy.rowCount;
        },
      });
      const record: BackupPartRecord = {
        formatVersion: BACKUP_FORMAT_VERSION,
        runId,
        table: table.name,
        part,
        key: dataKey,
        rows: rowCount,
        bytes: hasher.bytes,
        compressedBytes: compressed.bytes,
        sha256: hasher.sha256(),
        keyRange,
        readAt,
      };
      // The record is the part's commit point: written only once its data object is complete.
      await putJsonObject(s3, bucket, partRecordKey(prefix, runId, table.name, part), record, input.kmsKeyId);
      return record;
    });
  } catch (err) {
    if (err instanceof MigrationError) throw err;
    if (isStorageError(err)) throw toStorageError(err, doing);
    throw toMigrationError(err, doing);
  }
}

async function finishTable(input: BackupTableOptions & { lastPart: number }): Promise<BackupTableRecord> {
  const { client, s3, bucket, prefix, runId, table } = input;
  const parts: BackupPartRecord[] = [];
  const keys = Array.from({ length: input.lastPart }, (_, i) => partRecordKey(prefix, runId, table.name, i + 1));
  const texts = await readObjectTexts(s3, bucket, keys);
  for (const [i, key] of keys.entries()) {
    const text = texts[i]!;
    if (text === null) {
      throw new BackupError(
        `Table ${JSON.stringify(table.name)}: part record ${key} disappeared while the backup was finishing. Rerun BackupTable for the table with a null cursor.`,
      );
    }
    parts.push(parsePartRecord(text, key));
  }
  let serverVersion: string;
  try {
    serverVersion = String((await client.query('SHOW server_version')).rows[0].server_version);
  } catch (err) {
    throw toMigrationError(err, 'Reading the source server version');
  }
  const record = buildTableRecord({
    runId,
    table,
    serverVersion,
    parts,
    tableSha256: sha256Hex(tableSha256Input(parts.map((p) => p.sha256))),
    completedAt: new Date().toISOString(),
  });
  await putJsonObject(s3, bucket, tableRecordKey(prefix, runId, table.name), record, input.kmsKeyId);
  return record;
}

// ---------------------------------------------------------------- finalizeBackup

export interface FinalizeBackupOptions {
  readonly s3: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly runId: string;
  /** Tables that must have finished (e.g. every table of the source schema). */
  readonly expectedTables?: readonly string[];
  readonly kmsKeyId?: string;
}

/**
 * Writes `<prefix>runs/<runId>/backup/manifest.json` from the table and part records. Idempotent:
 * the manifest is a function of the records, and is not rewritten when S3 already holds it.
 */
export async function finalizeBackup(options: FinalizeBackupOptions): Promise<{ manifestKey: string; manifest: BackupManifest }> {
  const { s3, bucket, prefix, runId } = options;
  assertRunId(runId);
  const root = backupRootKey(prefix, runId);
  const keys = await listObjectKeys(s3, bucket, root);
  const tables: BackupTableRecord[] = [];
  const parts = new Map<string, BackupPartRecord[]>();
  const records = keys.flatMap((key) => {
    const match = /^([^/]+)\/(table|part-\d+)\.json$/.exec(key.slice(root.length));
    return match ? [{ key, folder: match[1]!, kind: match[2]! }] : [];
  });
  const texts = await readObjectTexts(s3, bucket, records.map((r) => r.key));
  for (const [i, { key, folder, kind }] of records.entries()) {
    const text = texts[i]!;
    if (text === null) continue;
    if (kind === 'table') {
      const record = parseTableRecord(text, key);
      assertInFolder(record.table, folder, key);
      tables.push(record);
    } else {
      const record = parsePartRecord(text, key);
      assertInFolder(record.table, folder, key);
      parts.set(record.table, [...(parts.get(record.table) ?? []), record]);
    }
  }
  const expected = new Set([...(options.expectedTables ?? []), ...parts.keys()]);
  if (expected.size === 0 && tables.length === 0) {
    throw new BackupError(`Run ${runId} has no backed-up tables under s3://${bucket}/${root}. Run BackupTable for each source table first.`);
  }
  const manifest = buildManifest({ runId, tables, parts, expectedTables: [...expected].sort(), sha256Hex });
  const key = manifestKey(prefix, runId);
  const text = renderJson(manifest);
  if ((await readObjectText(s3, bucket, key)) !== text) await putJsonObject(s3, bucket, key, manifest, options.kmsKeyId);
  return { manifestKey: key, manifest };
}

function assertInFolder(table: string, folder: string, key: string): void {
  if (encodeKeySegment(table) !== folder) {
    throw new BackupError(`The record ${key} names table ${JSON.stringify(table)}, which belongs in another folder. Delete the misplaced record and rerun BackupTable for that table.`);
  }
}

