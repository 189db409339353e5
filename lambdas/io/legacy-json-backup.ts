import { escapeIdentifier, qualified } from '../core/sql/ident';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { legacyBackupFileName } from '../core/backup-keys';
import { MigrationError } from '../core/errors';
import { readTableNames } from './catalog';
import { withTransaction, toMigrationError } from './pg';
import { applyCopySettings } from './backup';
import { isStorageError, toStorageError, uploadStream } from './s3';

const LEGACY_FETCH_ROWS = 1000;

/** The seed scripts' single-file JSON backup (`rds_backup_YYYYMMDD_HHMMSS.json`), streamed. */

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
