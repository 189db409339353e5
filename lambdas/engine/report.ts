import type pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { to as copyTo } from 'pg-copy-streams';
import { qualified } from '../core/sql/ident';
import type { VerificationResult } from '../core/verify';
import type { RunContext } from '../handlers/contract';
import { uploadStream } from '../io/backup';
import { readBackupManifest } from '../io/restore';
import type { RunRecord } from './runs';
import type { TaskDeps } from './tasks';

/** The run's report (README "Report format"): counts per target and source table, backup keys, checks. */
export interface MigrationReport {
  readonly runId: string;
  readonly status: 'completed' | 'verification-failed' | 'not-verified';
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly runTime: string;
  readonly generatedAt: string;
  readonly tables: Record<string, { migrated: number; rejected: number; derived: number }>;
  readonly sources: Record<string, { rows: number | null; backupKey: string | null; sha256: string | null }>;
  readonly steps: Record<string, unknown>;
  readonly rejects: { readonly key: string; readonly rows: number };
  readonly checks: VerificationResult['checks'];
  readonly readiness: VerificationResult['readiness'] | null;
  /** The cutover as recorded (with the write freeze of a live run, `writeFreezeMs`), null when not cut over. */
  readonly cutover?: unknown;
  /** Live runs: the capture position verified at and the lag when the report was written (capture still on unless cut over). */
  readonly live?: { readonly verifiedAtPosition: number | null; readonly pending: number; readonly oldestSeconds: number; readonly captureOn: boolean } | null;
}

/** Streams the run's rejected rows (no secrets: they were stripped when stored) to S3 as gzipped JSON lines. */
export async function exportRejects(client: pg.ClientBase, schema: string, runId: string, s3: S3Client, bucket: string, key: string, kmsKeyId?: string): Promise<number> {
  const n = await client.query(`SELECT count(*)::bigint AS n FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1`, [runId]);
  const literal = `'${runId.replace(/'/g, "''")}'`;
  await uploadStream({
    s3, bucket, key, contentType: 'application/gzip', kmsKeyId,
    produce: async (body) => {
      const copy = client.query(
        copyTo(`COPY (SELECT json_build_object('target_table', target_table, 'source_table', source_table, 'source_key', source_key, 'reason', reason, 'row', row_data)::text
                        FROM ${qualified(schema, '_migration_reject')} WHERE run_id = ${literal} ORDER BY target_table, source_table, source_key)
                TO STDOUT WITH (FORMAT text)`),
      );
      await pipeline(copy, createGzip(), body);
    },
  });
  return Number(n.rows[0].n);
}

export async function buildReport(input: {
  deps: TaskDeps;
  run: RunContext;
  record: RunRecord | null;
  verification: VerificationResult | null;
  rejectsKey: string;
  rejects: number;
  live?: MigrationReport['live'];
}): Promise<MigrationReport> {
  const { deps, run, verification } = input;
  const tables: MigrationReport['tables'] = {};
  for (const [name, t] of Object.entries(verification?.tables ?? {})) tables[name] = { migrated: t.migrated, rejected: t.rejected, derived: t.derived };
  const sources: MigrationReport['sources'] = {};
  try {
    const manifest = await readBackupManifest(deps.s3, deps.bucket, deps.prefix, run.runId);
    for (const t of manifest.tables) sources[t.name] = { rows: t.rows, backupKey: t.parts[0]?.key ?? null, sha256: t.sha256 };
  } catch {
    // No backup for this run (e.g. the CLI's --no-backup): the report says so with nulls.
  }
  return {
    runId: run.runId,
    status: verification ? (verification.passed ? 'completed' : 'verification-failed') : 'not-verified',
    sourceSchema: run.sourceSchema,
    targetSchema: run.targetSchema,
    runTime: run.runTime,
    generatedAt: new Date().toISOString(),
    tables,
    sources,
    steps: input.record?.steps ?? {},
    rejects: { key: input.rejectsKey, rows: input.rejects },
    checks: verification?.checks ?? [],
    readiness: verification?.readiness ?? null,
    cutover: input.record?.cutover ?? null,
    live: input.live ?? null,
  };
}
