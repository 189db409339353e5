import { matchesReject, renderReject, renderRejectsHeader, type RejectFilter, type RejectFormat, type RejectRow } from '../../lambdas/core/rejects';
import { listRejects } from '../../lambdas/engine/report';
import { latestRun } from '../../lambdas/engine/runs';
import { parseDatabaseUrl, withClient } from '../../lambdas/io/pg';
import { findLatestRejectsRun, readRejectsObject } from '../../lambdas/io/rejects-object';
import type { S3Client } from '@aws-sdk/client-s3';
import { withBackupStore } from './backup-store';
import { CliUsageError, EXIT, parseCommandArgs, type CliContext } from './common';

/** `tracetrack-migrate rejects`: the rejected rows of a run, from the target's reject store or the run's S3 object. */

export const REJECTS_USAGE =
  'tracetrack-migrate rejects (--target URL [--target-schema tracetrack] | --backup-dir DIR | --bucket NAME [--s3-endpoint URL]) [--run-id ID] [--table T] [--reason TEXT] [--format csv|jsonl]';

const OPTIONS = {
  target: { type: 'string' },
  'target-schema': { type: 'string' },
  'backup-dir': { type: 'string' },
  bucket: { type: 'string' },
  's3-endpoint': { type: 'string' },
  'run-id': { type: 'string' },
  table: { type: 'string' },
  reason: { type: 'string' },
  format: { type: 'string' },
} as const;

/** Streams a run's rejects from the S3 object the Report task wrote; returns how many matched. */
export async function writeRejectsFromObject(
  s3: S3Client, bucket: string, runId: string, filter: RejectFilter, format: RejectFormat, write: (text: string) => void,
): Promise<number> {
  write(renderRejectsHeader(format));
  let n = 0;
  for await (const r of readRejectsObject(s3, bucket, `runs/${runId}/rejects.jsonl.gz`)) {
    if (!matchesReject(r, filter)) continue;
    write(renderReject({ run_id: runId, ...r } as RejectRow, format));
    n++;
  }
  return n;
}

export async function rejectsCommand(args: string[], ctx: CliContext): Promise<number> {
  const v = parseCommandArgs('rejects', args, OPTIONS);
  const format = (v.format ?? 'csv') as RejectFormat;
  if (format !== 'csv' && format !== 'jsonl') throw new CliUsageError(`--format must be csv or jsonl (got "${v.format}").`);
  const fromStore = v['backup-dir'] !== undefined || v.bucket !== undefined;
  if (v.target && fromStore) throw new CliUsageError('rejects reads either the target database (--target) or a run\'s S3 object (--backup-dir / --bucket), not both.');
  const url = v.target ?? (fromStore ? undefined : ctx.env.AWS_DATABASE_URL ?? ctx.env.DATABASE_URL);
  const filter: RejectFilter = { table: v.table, reason: v.reason };
  let count: number;
  let runId: string;
  if (url) {
    const schema = v['target-schema'] ?? 'tracetrack';
    ({ count, runId } = await withClient(parseDatabaseUrl(url, 'target database URL'), async (c) => {
      const id = v['run-id'] ?? (await latestRun(c, schema))?.runId;
      if (!id) throw new CliUsageError(`No migration run in target schema "${schema}": nothing was rejected yet. Check --target-schema.`);
      ctx.stdout(renderRejectsHeader(format));
      let n = 0;
      for await (const r of listRejects(c, schema, id, filter)) {
        ctx.stdout(renderReject({ run_id: id, ...r }, format));
        n++;
      }
      return { count: n, runId: id };
    }, { applicationName: 'tracetrack-migrate:rejects' }));
  } else if (fromStore) {
    ({ count, runId } = await withBackupStore(ctx, { 'backup-dir': v['backup-dir'], bucket: v.bucket, 's3-endpoint': v['s3-endpoint'] }, { writes: false }, async (store) => {
      const id = v['run-id'] ?? (await findLatestRejectsRun(store.s3, store.bucket, ''));
      if (!id) throw new CliUsageError(`No run with a rejects object in ${store.describe('runs/')}: a run writes it in its Report step. Pass --run-id, or --target to read the database's reject store.`);
      return { count: await writeRejectsFromObject(store.s3, store.bucket, id, filter, format, ctx.stdout), runId: id };
    }));
  } else {
    throw new CliUsageError('rejects needs --target postgres://USER:PASSWORD@HOST:PORT/DB, or --backup-dir DIR / --bucket NAME to read a run\'s rejects object.');
  }
  ctx.stderr(`${count} rejected row(s) of run ${runId}${filter.table ? ` in ${filter.table}` : ''}${filter.reason ? ` with a reason containing "${filter.reason}"` : ''}. ` +
    `After fixing them in the source: tracetrack-migrate run --run-id ${runId} --retry-rejects (with the run's --source/--target).\n`);
  return EXIT.ok;
}
