import { finalizeBackup, listObjectKeys, writeLegacyJsonBackup } from '../io/backup';
import { readTableNames } from '../io/catalog';
import { withClient } from '../io/pg';
import { backupBucket, backupPrefix, kmsKeyId, resolveDatabaseConfig, s3Client } from '../io/runtime';
import type { FinalizeBackupResult, RunEvent } from './contract';

/** FinalizeBackup: the run's manifest, once every table of the source schema has finished. */
export async function handler(event: RunEvent): Promise<FinalizeBackupResult> {
  const config = await resolveDatabaseConfig('source');
  const expectedTables = await withClient(config, (client) => readTableNames(client, event.run.sourceSchema));
  const { manifestKey, manifest } = await finalizeBackup({
    s3: s3Client(), bucket: backupBucket(), prefix: backupPrefix(), runId: event.run.runId,
    expectedTables, kmsKeyId: kmsKeyId(),
  });
  const rows = manifest.tables.reduce((sum, t) => sum + t.rows, 0);
  if (!event.run.legacyJsonBackup) return { manifestKey, tables: manifest.tables.length, rows };
  // The seed's single-file JSON backup, once per run (a redrive finds it and writes no second one).
  const runPrefix = `${backupPrefix()}runs/${event.run.runId}/`;
  let legacyJsonKey = (await listObjectKeys(s3Client(), backupBucket(), `${runPrefix}rds_backup_`))[0];
  if (!legacyJsonKey) {
    const out = await withClient(config, (client) => writeLegacyJsonBackup({
      client, s3: s3Client(), bucket: backupBucket(), prefix: runPrefix, schema: event.run.sourceSchema, kmsKeyId: kmsKeyId(),
    }));
    legacyJsonKey = out.key;
  }
  return { manifestKey, tables: manifest.tables.length, rows, legacyJsonKey };
}
