import type pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { to as copyTo } from 'pg-copy-streams';
import { escapeLiteral, qualified } from '../core/sql/ident';
import type { VerificationResult } from '../core/verify';
import type { RunContext } from '../core/contract';
import { uploadStream } from '../io/backup';
import { readBackupManifest } from '../io/restore';
import type { RunRecord } from './runs';

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
  /** Source columns that hold data no target column receives (kept in the backup only). */
  readonly unmappedColumnsWithData: { readonly table: string; readonly columns: string[] }[];
}

/** Streams the run's rejected rows (no secrets: they were stripped when stored) to S3 as gzipped JSON lines. */
export async function exportRejects(client: pg.ClientBase, schema: string, runId: string, s3: S3Client, bucket: string, key: string, kmsKeyId?: string): Promise<number> {
  const n = await client.query(`SELECT count(*)::bigint AS n FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1`, [runId]);
  // COPY takes no parameters: the run id (validated by assertRunId) as a literal.
  const literal = escapeLiteral(runId);
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

/** Where the run's objects are: the S3 client, the bucket and the global key prefix. */
export interface RunStore {
  readonly s3: S3Client;
  readonly bucket: string;
  readonly prefix: string;
}

export async function buildReport(input: {
  deps: RunStore;
  run: RunContext;
  record: RunRecord | null;
  verification: VerificationResult | null;
  rejectsKey: string;
  rejects: number;
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
    unmappedColumnsWithData: (input.record?.plan?.unmappedColumns ?? [])
      .filter((u) => u.withData?.length)
      .map((u) => ({ table: u.table, columns: u.withData! })),
  };
}
