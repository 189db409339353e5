import { RestoreError } from '../core/errors';
import { withClient } from '../io/pg';
import { findLatestRunId, restoreTables, type RestoreTablesResult } from '../io/restore';
import { backupBucket, backupPrefix, resolveDatabaseConfig, s3Client } from '../io/runtime';

export interface RestoreEvent {
  /** Default: the newest run with a finished backup. */
  readonly runId?: string;
  /** Default: every table of the backup. */
  readonly tables?: string[];
  /** Default: `restored_<runId>`. */
  readonly schema?: string;
  /** Required to restore into the backup's own source schema (replaces live tables). */
  readonly allowSourceSchema?: boolean;
  /** Database to restore into (default `source`, where the backed-up tables came from). */
  readonly database?: 'source' | 'target';
}
export type RestoreResult = RestoreTablesResult;

/** Restore: rebuilds tables of a run's S3 backup into a schema, checked against the manifest. */
export async function handler(event: RestoreEvent): Promise<RestoreResult> {
  const s3 = s3Client();
  const bucket = backupBucket();
  const prefix = backupPrefix();
  const runId = event.runId ?? (await findLatestRunId(s3, bucket, prefix));
  if (!runId) throw new RestoreError(`No finished backup under s3://${bucket}/${prefix}runs/. Run a backup first, or pass runId.`);
  const config = await resolveDatabaseConfig(event.database ?? 'source');
  return withClient(config, (client) =>
    restoreTables({ client, s3, bucket, prefix, runId, tables: event.tables, schema: event.schema, allowSourceSchema: event.allowSourceSchema }),
  { applicationName: 'tracetrack-migrate:restore' });
}
