import { backupTable } from '../io/backup';
import { readTableInfo } from '../io/catalog';
import { withClient } from '../io/pg';
import { backupBucket, backupPrefix, kmsKeyId, resolveDatabaseConfig, s3Client, timeBudgetMs } from '../io/runtime';
import type { BackupTableEvent, BackupTableResult } from './contract';

/** BackupTable: one source table to S3, part by part, until the time budget is spent. */
export async function handler(event: BackupTableEvent): Promise<BackupTableResult> {
  const deadlineMs = Date.now() + timeBudgetMs();
  const config = await resolveDatabaseConfig('source');
  return withClient(config, async (client) => {
    const table = await readTableInfo(client, event.run.sourceSchema, event.table);
    const { run, cursor } = event;
    const progress = await backupTable({
      client, s3: s3Client(), bucket: backupBucket(), prefix: backupPrefix(), runId: run.runId,
      table, cursor, deadlineMs, kmsKeyId: kmsKeyId(),
    });
    return { table: event.table, done: progress.done, cursor: progress.cursor, rows: progress.rows };
  }, { applicationName: 'tracetrack-migrate:backup' });
}
