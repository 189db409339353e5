import { createHash } from 'node:crypto';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import {
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type PutObjectCommandInput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import {
  BACKUP_FORMAT_VERSION,
  COPY_SESSION_SETTINGS,
  DEFAULT_PART_ROWS,
  assertRunId,
  backupRootKey,
  buildManifest,
  buildTableRecord,
  encodeKeySegment,
  legacyBackupFileName,
  manifestKey,
  parseBackupCursor,
  parsePartRecord,
  parseTableRecord,
  partDataKey,
  partRecordKey,
  renderBackupCursor,
  renderJson,
  resolveSplitKey,
  tableRecordKey,
  tableSha256Input,
  type BackupManifest,
  type BackupPartRecord,
  type BackupTableRecord,
} from '../core/backup-manifest';
import type { TableInfo } from '../core/catalog';
import { BackupError, InputError, LocalStorageError, MigrationError, TransientStorageError } from '../core/errors';
import { readTableNames } from './catalog';
import { withTransaction, toMigrationError } from './pg';
import { accessHint, isAccessError } from './s3';

/** Multipart upload: at most `queueSize * partSize` bytes are buffered per object. */
const UPLOAD_PART_SIZE = 8 * 1024 * 1024;
/** gzip -1: the backup runs at COPY speed; a higher level costs more CPU than it saves in S3 bytes. */
export const GZIP_LEVEL = 1;
const UPLOAD_QUEUE_SIZE = 2;
const LEGACY_FETCH_ROWS = 1000;

// ---------------------------------------------------------------- S3 helpers (shared with restore)

type ErrorClass = new (message: string, options?: { cause?: unknown }) => MigrationError;

const TRANSIENT_S3 = new Set([
  'SlowDown', 'ThrottlingException', 'Throttling', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError',
  'ServiceUnavailable', 'TimeoutError', 'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN',
]);

/** S3 error code of the local server's own disk failures (LOCAL_STORAGE_ERROR_CODE in lib/runner/local-s3.ts). */
const LOCAL_STORAGE_FAILURE = 'LocalStorageFailure';

export function isStorageError(err: unknown): boolean {
  return typeof err === 'object' && err !== null && '$metadata' in err;
}

/** An S3 SDK error as one of our named errors: transient ones are retried by the workflow. */
export function toStorageError(err: unknown, doing: string, fallback: ErrorClass = BackupError): MigrationError {
  if (err instanceof MigrationError) return err;
  const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number } };
  const name = e?.name ?? e?.code ?? 'Error';
  const status = e?.$metadata?.httpStatusCode;
  if (name === LOCAL_STORAGE_FAILURE) {
    // The local S3 server (lib/runner/local-s3.ts) could not write its own directory.
    const detail = (err as Error).message;
    return new LocalStorageError(
      `${doing} failed: the local backup directory could not be written (${detail}). Free space there (or fix its permissions), ` +
        `then rerun with the same --run-id: finished steps and batches are skipped.`,
      { cause: err },
    );
  }
  if (TRANSIENT_S3.has(name) || (e?.code && TRANSIENT_S3.has(e.code)) || (status !== undefined && status >= 500)) {
    return new TransientStorageError(`${doing} failed for a transient reason (${name}${status ? `, HTTP ${status}` : ''}). It is safe to retry.`, { cause: err });
  }
  if (isAccessError(err)) {
    const hint = accessHint(err);
    const remedy = hint?.remedy ?? `Grant the function's role access to the bucket (and its KMS key), then rerun.`;
    if (name === 'CredentialsProviderError') {
      return new fallback(`${doing} failed: no AWS credentials were found${hint ? ` (looked in ${hint.source})` : ''}. ${remedy}`, { cause: err });
    }
    return new fallback(`${doing} was refused by S3 (${name})${hint ? ` with ${hint.credentials}` : ''}. ${remedy}`, { cause: err });
  }
  if (name === 'NoSuchBucket') {
    return new fallback(`${doing} failed: the bucket does not exist (${name}). Check BACKUP_BUCKET.`, { cause: err });
  }
  return new fallback(`${doing} failed (${name}${status ? `, HTTP ${status}` : ''}).`, { cause: err });
}

/** Every object written asks for server-side encryption: SSE-KMS with the key when there is one, else SSE-S3. */
export function sseParams(kmsKeyId: string | undefined): Pick<PutObjectCommandInput, 'ServerSideEncryption' | 'SSEKMSKeyId'> {
  return kmsKeyId ? { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: kmsKeyId } : { ServerSideEncryption: 'AES256' };
}

/** The object's text, or null when it does not exist. */
export async function readObjectText(s3: S3Client, bucket: string, key: string, fallback: ErrorClass = BackupError): Promise<string | null> {
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return (await out.Body?.transformToString('utf8')) ?? '';
  } catch (err) {
    const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
    if (e?.name === 'NoSuchKey' || e?.name === 'NotFound' || e?.$metadata?.httpStatusCode === 404) return null;
    throw toStorageError(err, `Reading s3://${bucket}/${key}`, fallback);
  }
}

export async function putJsonObject(s3: S3Client, bucket: string, key: string, value: unknown, kmsKeyId?: string): Promise<void> {
  try {
    await s3.send(new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: renderJson(value),
      ContentType: 'application/json',
      ...sseParams(kmsKeyId),
    }));
  } catch (err) {
    throw toStorageError(err, `Writing s3://${bucket}/${key}`);
  }
}

export async function putTextObject(s3: S3Client, bucket: string, key: string, text: string, contentType: string, kmsKeyId?: string): Promise<void> {
  try {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: text, ContentType: contentType, ...sseParams(kmsKeyId) }));
  } catch (err) {
    throw toStorageError(err, `Writing s3://${bucket}/${key}`);
  }
}

export async function listObjectKeys(s3: S3Client, bucket: string, prefix: string, fallback: ErrorClass = BackupError): Promise<string[]> {
  const keys: string[] = [];
  let token: string | undefined;
  do {
    try {
      const out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of out.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } catch (err) {
      throw toStorageError(err, `Listing s3://${bucket}/${prefix}`, fallback);
    }
  } while (token);
  return keys;
}

/**
 * The run (under `<prefix>runs/`) whose object matching `objectPath` is the newest, or null. `objectPath`
 * is matched against the key below `runs/` and captures the run id: `/^([^/]+)\/rejects\.jsonl\.gz$/`.
 */
export async function findLatestRunWith(s3: S3Client, bucket: string, prefix: string, objectPath: RegExp, fallback: ErrorClass = BackupError): Promise<string | null> {
  const runsPrefix = `${prefix}runs/`;
  let latest: { runId: string; at: number } | null = null;
  let token: string | undefined;
  do {
    let out;
    try {
      out = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: runsPrefix, ContinuationToken: token }));
    } catch (err) {
      throw toStorageError(err, `Listing the runs under s3://${bucket}/${runsPrefix}`, fallback);
    }
    for (const object of out.Contents ?? []) {
      const match = objectPath.exec((object.Key ?? '').slice(runsPrefix.length));
      if (!match) continue;
      const runId = match[1]!;
      const at = object.LastModified?.getTime() ?? 0;
      if (!latest || at > latest.at || (at === latest.at && runId > latest.runId)) latest = { runId, at };
    }
    token = out.IsTruncated ? out.NextContinuationToken : undefined;
  } while (token);
  return latest?.runId ?? null;
}

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

class ByteCounter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

/** `SET LOCAL` of the COPY settings (values as parameters), so text COPY round-trips exactly. */
export async function applyCopySettings(client: pg.ClientBase): Promise<void> {
  for (const [name, value] of Object.entries(COPY_SESSION_SETTINGS)) {
    await client.query('SELECT set_config($1, $2, true)', [name, value]);
  }
}

/** Streams `source` into one S3 object (multipart), aborting the upload if the stream fails. */
export async function uploadStream(input: {
  s3: S3Client;
  bucket: string;
  key: string;
  contentType: string;
  kmsKeyId?: string;
  produce: (body: PassThrough) => Promise<void>;
}): Promise<void> {
  const body = new PassThrough();
  const upload = new Upload({
    client: input.s3,
    params: { Bucket: input.bucket, Key: input.key, Body: body, ContentType: input.contentType, ...sseParams(input.kmsKeyId) },
    partSize: UPLOAD_PART_SIZE,
    queueSize: UPLOAD_QUEUE_SIZE,
    leavePartsOnError: false,
  });
  const uploaded = upload.done();
  // A failed upload stops reading; destroying the body unblocks the producer's backpressure.
  uploaded.catch((err) => body.destroy(err as Error));
  try {
    await input.produce(body);
  } catch (err) {
    await upload.abort().catch(() => undefined);
    await uploaded.catch(() => undefined);
    throw err;
  }
  try {
    await uploaded;
  } catch (err) {
    throw toStorageError(err, `Uploading s3://${input.bucket}/${input.key}`);
  }
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
}

export interface BackupTableProgress {
  readonly done: boolean;
  readonly cursor: string | null;
  /** Rows of the table in finished parts so far. */
  readonly rows: number;
  /** Parts uploaded by this call (parts found already finished are not counted). */
  readonly partsWritten: number;
}

/**
 * Backs up one table as gzip'd COPY text parts, by key range of its integer primary key (one part
 * when it has none), within a time budget. Resumable and idempotent: a part whose record exists in
 * S3 is never uploaded again, and a finished table returns `done` at once.
 */
function parseOrNull<T>(parse: () => T): T | null {
  try {
    return parse();
  } catch (err) {
    if (err instanceof BackupError) return null;
    throw err;
  }
}

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
  let { part, after, rows } = parseBackupCursor(options.cursor, table.name);
  let partsWritten = 0;
  for (;;) {
    const recordKey = partRecordKey(prefix, runId, table.name, part);
    const existing = await readObjectText(s3, bucket, recordKey);
    const parsed = existing === null ? null : parseOrNull(() => parsePartRecord(existing, recordKey));
    let record: BackupPartRecord;
    if (parsed) {
      record = parsed;
    } else {
      if (partsWritten > 0 && Date.now() >= options.deadlineMs) {
        return { done: false, cursor: renderBackupCursor({ part, after, rows }), rows, partsWritten };
      }
      record = await writePart({ ...options, part, after, splitKey, partRows });
      partsWritten += 1;
    }
    rows += record.rows;
    const through = record.keyRange?.through ?? null;
    if (splitKey === null || through === null) break;
    after = through;
    part += 1;
  }

  await finishTable({ ...options, lastPart: part });
  return { done: true, cursor: null, rows, partsWritten };
}

async function writePart(input: BackupTableOptions & {
  part: number;
  after: string | null;
  splitKey: string | null;
  partRows: number;
}): Promise<BackupPartRecord> {
  const { client, s3, bucket, prefix, runId, table, part, after, splitKey } = input;
  const dataKey = partDataKey(prefix, runId, table.name, part);
  const source = qualified(table.schema, table.name);
  const doing = `Backing up part ${part} of table ${JSON.stringify(table.name)}`;
  try {
    return await withTransaction(client, async () => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      await applyCopySettings(client);
      const readAt = new Date().toISOString();
      let keyRange: BackupPartRecord['keyRange'] = null;
      let filter = '';
      if (splitKey !== null) {
        // COPY takes no bind parameters: the bounds travel as parameters into transaction-local settings.
        const k = escapeIdentifier(splitKey);
        await client.query("SELECT set_config('tracetrack.backup_after', $1, true)", [after ?? '']);
        const lower = after === null ? 'TRUE' : `${k} > current_setting('tracetrack.backup_after')::int8`;
        const probe = await client.query<{ k: string }>(
          `SELECT ${k}::text AS k FROM ${source} WHERE ${lower} ORDER BY ${k} OFFSET $1 LIMIT 2`,
          [input.partRows - 1],
        );
        const through = probe.rows.length === 2 ? probe.rows[0]!.k : null;
        await client.query("SELECT set_config('tracetrack.backup_through', $1, true)", [through ?? '']);
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
          const copy = client.query(copyTo(`COPY (SELECT * FROM ${source}${filter}) TO STDOUT`));
          await pipeline(copy, hasher, createGzip({ level: GZIP_LEVEL }), compressed, body);
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
  for (let part = 1; part <= input.lastPart; part += 1) {
    const key = partRecordKey(prefix, runId, table.name, part);
    const text = await readObjectText(s3, bucket, key);
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
  for (const key of keys) {
    const rest = key.slice(root.length);
    const match = /^([^/]+)\/(table|part-\d+)\.json$/.exec(rest);
    if (!match) continue;
    const text = await readObjectText(s3, bucket, key);
    if (text === null) continue;
    if (match[2] === 'table') {
      const record = parseTableRecord(text, key);
      assertInFolder(record.table, match[1]!, key);
      tables.push(record);
    } else {
      const record = parsePartRecord(text, key);
      assertInFolder(record.table, match[1]!, key);
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

// ---------------------------------------------------------------- legacy JSON backup

export interface LegacyJsonBackupOptions {
  readonly client: pg.ClientBase;
  readonly s3: S3Client;
  readonly bucket: string;
  readonly prefix: string;
  readonly schema: string;
  /** Tables to include, in this order (default: every ordinary/partitioned table of the schema, by name). */
  readonly tables?: readonly string[];
  /** Names the file `rds_backup_YYYYMMDD_HHMMSS.json` (UTC); default now. */
  readonly at?: Date;
  readonly kmsKeyId?: string;
}

/**
 * The seed tool's single-file backup, `{ "<table>": [ {row}, ... ], ... }` at
 * `<prefix>rds_backup_YYYYMMDD_HHMMSS.json`: one snapshot, rows as `row_to_json`, fetched through a
 * cursor and streamed into a multipart upload, never held whole in memory.
 */
export async function writeLegacyJsonBackup(options: LegacyJsonBackupOptions): Promise<{ key: string; tables: number; rows: number }> {
  const { client, s3, bucket, schema } = options;
  const key = `${options.prefix}${legacyBackupFileName(options.at ?? new Date())}`;
  let rows = 0;
  let tableCount = 0;
  try {
    await withTransaction(client, async () => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      await applyCopySettings(client);
      const names = options.tables ?? (await readTableNames(client, schema));
      tableCount = names.length;
      async function* chunks(): AsyncGenerator<string> {
        yield '{';
        for (const [i, name] of names.entries()) {
          const order = await primaryKeyOrder(client, schema, name);
          yield `${i ? ',' : ''}\n  ${JSON.stringify(name)}: [`;
          await client.query(
            `DECLARE legacy_backup NO SCROLL CURSOR FOR SELECT row_to_json(t.*)::text AS j FROM ${qualified(schema, name)} t${order}`,
          );
          let first = true;
          for (;;) {
            const batch = await client.query<{ j: string }>(`FETCH ${LEGACY_FETCH_ROWS} FROM legacy_backup`);
            if (batch.rows.length === 0) break;
            let text = '';
            for (const row of batch.rows) {
              text += `${first ? '' : ','}\n    ${row.j}`;
              first = false;
            }
            rows += batch.rows.length;
            yield text;
          }
          await client.query('CLOSE legacy_backup');
          yield first ? ']' : '\n  ]';
        }
        yield '\n}\n';
      }
      await uploadStream({
        s3,
        bucket,
        key,
        contentType: 'application/json',
        kmsKeyId: options.kmsKeyId,
        produce: (body) => pipeline(Readable.from(chunks()), body),
      });
    });
  } catch (err) {
    if (err instanceof MigrationError) throw err;
    const doing = `Writing the legacy JSON backup of schema ${JSON.stringify(schema)} to s3://${bucket}/${key}`;
    throw isStorageError(err) ? toStorageError(err, doing) : toMigrationError(err, doing);
  }
  return { key, tables: tableCount, rows };
}

async function primaryKeyOrder(client: pg.ClientBase, schema: string, table: string): Promise<string> {
  const pk = await client.query<{ name: string }>(
    `SELECT a.attname::text AS name
       FROM pg_constraint con
       JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
       CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY k(attnum, i)
       JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
      WHERE n.nspname = $1 AND c.relname = $2 AND con.contype = 'p' ORDER BY k.i`,
    [schema, table],
  );
  return pk.rows.length ? ` ORDER BY ${pk.rows.map((r) => `t.${escapeIdentifier(r.name)}`).join(', ')}` : '';
}
