import { pipeline } from 'node:stream/promises';
import { escapeIdentifier, qualified } from '../core/sql/ident';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { retargetCreateTable } from '../core/backup-ddl';
import { assertRunId, manifestKey, tableDirKey } from '../core/backup-keys';
import { parseBackupManifest, tableSha256Input, type BackupManifest, type ManifestTable } from '../core/backup-manifest';
import { MigrationError, RestoreError } from '../core/errors';
import { HashingCounter, applyCopySettings, sha256Hex } from './backup';
import { findLatestRunWith, isStorageError, readObjectText, toStorageError } from './s3';
import { toMigrationError, withTransaction } from './pg';

export interface RestoreTablesOptions {
  readonly client: pg.ClientBase;
  readonly s3: S3Client;
  readonly bucket: string;
  /** Global key prefix (BACKUP_PREFIX), '' or ending in '/'. */
  readonly prefix: string;
  readonly runId: string;
  /** Tables to restore (default: every table of the backup). */
  readonly tables?: readonly string[];
  /** Schema to restore into (default `restored_<runId>`); created when missing. */
  readonly schema?: string;
  /** Restoring into the backup's own source schema replaces live tables: refused unless this is true. */
  readonly allowSourceSchema?: boolean;
}

export interface RestoredTable {
  readonly name: string;
  readonly rows: number;
  readonly parts: number;
}

export interface RestoreTablesResult {
  readonly runId: string;
  readonly schema: string;
  readonly tables: RestoredTable[];
}

export function defaultRestoreSchema(runId: string): string {
  return `restored_${runId}`;
}

export async function readBackupManifest(s3: S3Client, bucket: string, prefix: string, runId: string): Promise<BackupManifest> {
  assertRunId(runId);
  const key = manifestKey(prefix, runId);
  const text = await readObjectText(s3, bucket, key, RestoreError);
  if (text === null) {
    throw new RestoreError(
      `Run ${runId} has no backup manifest at s3://${bucket}/${key}: its backup never finished (rerun FinalizeBackup for it) or the run id is wrong (findLatestRunId names the newest finished backup).`,
    );
  }
  const manifest = parseBackupManifest(text, `s3://${bucket}/${key}`);
  if (manifest.runId !== runId) {
    throw new RestoreError(`The manifest at s3://${bucket}/${key} belongs to run ${manifest.runId}, not ${runId}. It was copied or edited; restore from another run.`);
  }
  return manifest;
}

/**
 * Rebuilds tables of a run's backup into `schema`, each in one transaction: drop the restored
 * table if present, create it from the manifest's DDL, COPY every part in from S3 (gunzip on the
 * fly), and check every part's rows, bytes and sha256 and the table's sha256 and row count against
 * the manifest. Any difference rolls that table back and raises a RestoreError naming the part.
 * Restoring again replaces the restored table; nothing else in the schema is touched.
 */
export async function restoreTables(options: RestoreTablesOptions): Promise<RestoreTablesResult> {
  const { client, s3, bucket, prefix, runId } = options;
  const manifest = await readBackupManifest(s3, bucket, prefix, runId);
  const schema = options.schema ?? defaultRestoreSchema(runId);
  if (schema === manifest.sourceSchema && !options.allowSourceSchema) {
    throw new RestoreError(
      `Restoring into ${JSON.stringify(schema)}, the schema the backup was taken from, would drop and replace live tables. Restore into another schema (the default is ${defaultRestoreSchema(runId)}), or pass allowSourceSchema: true if replacing them is intended.`,
    );
  }
  const wanted = options.tables ?? manifest.tables.map((t) => t.name);
  const unknown = wanted.filter((name) => !manifest.tables.some((t) => t.name === name));
  if (unknown.length) {
    throw new RestoreError(
      `Run ${runId}'s backup has no table ${unknown.map((n) => JSON.stringify(n)).join(', ')}. It holds: ${manifest.tables.map((t) => JSON.stringify(t.name)).join(', ') || 'no tables'}.`,
    );
  }
  const restored: RestoredTable[] = [];
  for (const name of wanted) {
    const table = manifest.tables.find((t) => t.name === name)!;
    restored.push(await restoreTable({ client, s3, bucket, prefix, manifest, table, schema }));
  }
  return { runId, schema, tables: restored };
}

async function restoreTable(input: {
  client: pg.ClientBase;
  s3: S3Client;
  bucket: string;
  prefix: string;
  manifest: BackupManifest;
  table: ManifestTable;
  schema: string;
}): Promise<RestoredTable> {
  const { client, s3, bucket, prefix, manifest, table, schema } = input;
  const target = qualified(schema, table.name);
  const where = `table ${JSON.stringify(table.name)} of run ${manifest.runId} into schema ${JSON.stringify(schema)}`;
  const nextStep =
    `Nothing was changed for this table (its restore was rolled back). Restore the table from another run's backup (findLatestRunId / the runs/ folder), or take a new backup while the source still holds the data.`;
  const ddl = retargetCreateTable(table.ddl, table.name, manifest.sourceSchema, schema);
  const columnList = table.columns.map((c) => escapeIdentifier(c.name)).join(', ');
  const dir = tableDirKey(prefix, manifest.runId, table.name);
  for (const part of table.parts) {
    if (!part.key.startsWith(dir)) {
      throw new RestoreError(`The manifest of run ${manifest.runId} points table ${JSON.stringify(table.name)} at ${part.key}, outside ${dir}. The manifest was edited; restore from another run.`);
    }
  }
  try {
    return await withTransaction(client, async () => {
      await applyCopySettings(client);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`);
      await client.query(`DROP TABLE IF EXISTS ${target}`);
      await client.query(ddl);
      for (const [i, part] of table.parts.entries()) {
        const label = `part ${i + 1} of ${table.parts.length} (s3://${bucket}/${part.key})`;
        const body = await openObject(s3, bucket, part.key, `Restoring ${where}: reading ${label}`);
        const hasher = new HashingCounter();
        const copy = client.query(copyFrom(`COPY ${target} (${columnList}) FROM STDIN`));
        try {
          await pipeline(body, createGunzip(), hasher, copy);
        } catch (err) {
          throw new RestoreError(`Restoring ${where} failed at ${label}: ${describeLoadFailure(err)}. ${nextStep}`, { cause: err });
        }
        const problems: string[] = [];
        if (hasher.sha256() !== part.sha256) problems.push(`its data has sha256 ${hasher.sha256()}, the manifest says ${part.sha256}`);
        if (hasher.bytes !== part.bytes) problems.push(`it holds ${hasher.bytes} bytes of data, the manifest says ${part.bytes}`);
        if (copy.rowCount !== part.rows) problems.push(`it holds ${copy.rowCount} rows, the manifest says ${part.rows}`);
        if (problems.length) {
          throw new RestoreError(`Restoring ${where} failed at ${label}: the part is corrupted or truncated (${problems.join('; ')}). ${nextStep}`);
        }
      }
      const tableSha = sha256Hex(tableSha256Input(table.parts.map((p) => p.sha256)));
      if (tableSha !== table.sha256) {
        throw new RestoreError(`Restoring ${where} failed: the parts do not add up to the table's sha256 in the manifest (parts missing or reordered). ${nextStep}`);
      }
      const count = Number((await client.query(`SELECT count(*)::int8 AS n FROM ${target}`)).rows[0].n);
      if (count !== table.rows) {
        throw new RestoreError(`Restoring ${where} failed: the restored table holds ${count} rows, the manifest says ${table.rows}. ${nextStep}`);
      }
      return { name: table.name, rows: count, parts: table.parts.length };
    });
  } catch (err) {
    if (err instanceof MigrationError) throw err;
    throw toMigrationError(err, `Restoring ${where}`);
  }
}

async function openObject(s3: S3Client, bucket: string, key: string, doing: string): Promise<Readable> {
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!out.Body) throw new RestoreError(`${doing}: S3 returned no body.`);
    return out.Body as Readable;
  } catch (err) {
    if (err instanceof MigrationError) throw err;
    const name = (err as { name?: string }).name;
    if (name === 'NoSuchKey' || name === 'NotFound') {
      throw new RestoreError(`${doing}: the object is missing. The backup is incomplete; restore from another run's backup.`, { cause: err });
    }
    throw toStorageError(err, doing, RestoreError);
  }
}

/** Why loading a part failed, without echoing row data (PostgreSQL's COPY errors quote values). */
function describeLoadFailure(err: unknown): string {
  const e = err as { code?: string; message?: string; errno?: number };
  if (isStorageError(err)) return `reading it from S3 failed (${(err as Error).name})`;
  if ((typeof e?.code === 'string' && e.code.startsWith('Z_')) || /incorrect header check|unexpected end of file|invalid .* (length|distance|code)|incorrect data check|too many length/i.test(e?.message ?? '')) {
    return `the gzip data is damaged or cut short (zlib: ${e.message})`;
  }
  if (typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) {
    return `PostgreSQL rejected the data [${e.code}] (the part is corrupted, or the restore schema holds an incompatible type)`;
  }
  return `the stream failed (${(err as Error)?.name ?? 'Error'})`;
}

/**
 * The newest run with a finished backup (a manifest) under `<prefix>runs/`, by the manifest's
 * last-modified time (ties: the greater run id); null when there is none. Lists every key under
 * `runs/` (1,000 per request): the local S3 server cannot list nested common prefixes.
 */
export async function findLatestRunId(s3: S3Client, bucket: string, prefix: string): Promise<string | null> {
  return findLatestRunWith(s3, bucket, prefix, /^([^/]+)\/backup\/manifest\.json$/, RestoreError);
}
