import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { BackupError } from '../core/errors';
import { findLatestRunWith, toStorageError } from './s3';

/** A run's `rejects.jsonl.gz` (written by the Report task), read back as a stream of records. */

export interface StoredReject {
  readonly target_table: string;
  readonly source_table: string;
  readonly source_key: string;
  readonly reason: string;
  readonly row: Record<string, unknown> | null;
}

export async function* readRejectsObject(s3: S3Client, bucket: string, key: string): AsyncGenerator<StoredReject> {
  let body: Readable;
  try {
    const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    body = out.Body as Readable;
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'NoSuchKey' || name === 'NotFound') {
      throw new BackupError(`s3://${bucket}/${key} does not exist: the run has not reached its Report step (pass --target to read the reject store of the database instead).`, { cause: err });
    }
    throw toStorageError(err, `Reading s3://${bucket}/${key}`);
  }
  const lines = createInterface({ input: body.pipe(createGunzip()), crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim()) yield JSON.parse(line) as StoredReject;
  }
}

/** The run whose rejects object is the newest under `runs/`, or null. */
export async function findLatestRejectsRun(s3: S3Client, bucket: string, prefix: string): Promise<string | null> {
  return findLatestRunWith(s3, bucket, prefix, /^([^/]+)\/rejects\.jsonl\.gz$/);
}
