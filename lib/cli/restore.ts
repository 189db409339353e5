import { findLatestRunId, restoreTables } from '../../lambdas/io/restore';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { withBackupStore } from './backup-store';
import { CliUsageError, EXIT, padTable, parseCommandArgs, type CliContext } from './common';

/** `tracetrack-migrate restore`: rebuilds tables of a run's backup into a schema, checked against the manifest. */

export const RESTORE_USAGE = 'tracetrack-migrate restore --target URL --schema NAME [--backup-dir DIR | --bucket NAME [--s3-endpoint URL]] [--run-id ID] [--table NAME]...';

const OPTIONS = {
  target: { type: 'string' },
  schema: { type: 'string' },
  'backup-dir': { type: 'string' },
  bucket: { type: 'string' },
  's3-endpoint': { type: 'string' },
  'run-id': { type: 'string' },
  table: { type: 'string', multiple: true },
} as const;

export async function restoreCommand(args: string[], ctx: CliContext): Promise<number> {
  const v = parseCommandArgs('restore', args, OPTIONS);
  if (!v.target) throw new CliUsageError('restore needs --target postgres://USER:PASSWORD@HOST:PORT/DB (the database to restore into).');
  if (!v.schema) throw new CliUsageError('restore needs --schema NAME (the schema to restore into; restoring over the live source schema is refused).');
  const config = parseDatabaseUrl(v.target, 'target database URL');
  return withBackupStore(ctx, { 'backup-dir': v['backup-dir'], bucket: v.bucket, 's3-endpoint': v['s3-endpoint'] }, { writes: false }, async (store) => {
    const runId = v['run-id'] ?? (await findLatestRunId(store.s3, store.bucket, ''));
    if (!runId) {
      ctx.stderr(`No finished backup in ${store.describe('runs/')}. Run a migration first (it backs up every source table), or pass --run-id.\n`);
      return EXIT.failed;
    }
    ctx.stdout(`Restoring run ${runId} from ${store.describe(`runs/${runId}/backup/`)} into ${redactUrl(v.target!)} schema "${v.schema}"…\n`);
    const result = await withClient(
      config,
      (client) => restoreTables({ client, s3: store.s3, bucket: store.bucket, prefix: '', runId, tables: v.table, schema: v.schema }),
      { applicationName: 'tracetrack-migrate:restore' },
    );
    const rows = [['table', 'rows', 'parts'], ...result.tables.map((t) => [t.name, String(t.rows), String(t.parts)])];
    ctx.stdout(`${padTable(rows, (i) => i > 0)}\nRestored ${result.tables.length} table(s) of run ${result.runId} into schema "${result.schema}"; every part matched the manifest (rows, bytes, sha256).\n`);
    return EXIT.ok;
  });
}
