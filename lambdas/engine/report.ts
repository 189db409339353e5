import type pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { copyOut } from '../io/copy-out';
import { escapeLiteral, qualified } from '../core/sql/ident';
import type { VerificationResult } from '../core/verify';
import type { RejectGroup } from '../core/report-html';
import type { RunContext } from '../core/contract';
import { uploadStream } from '../io/s3';
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
  /** Rejected rows grouped by target, source and kind of reason, with a few samples (key and target id, no row data). */
  readonly rejectGroups: RejectGroup[];
  readonly checks: VerificationResult['checks'];
  readonly readiness: VerificationResult['readiness'] | null;
  /** Source columns that hold data no target column receives (kept in the backup only). */
  readonly unmappedColumnsWithData: { readonly table: string; readonly columns: string[] }[];
  /** The cutover as recorded (with the write freeze of a live run, `writeFreezeMs`), null when not cut over. */
  readonly cutover?: unknown;
  /** Live runs: the capture position verified at and the lag when the report was written (capture still on unless cut over). */
  readonly live?: { readonly verifiedAtPosition: number | null; readonly pending: number; readonly oldestSeconds: number; readonly captureOn: boolean } | null;
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
        copyOut(`COPY (SELECT json_build_object('target_table', target_table, 'source_table', source_table, 'source_key', source_key, 'reason', reason, 'row', row_data)::text
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

/**
 * The run's rejects by target table, source table and kind of reason (the reason up to its first ':',
 * numbers as N: `weight_kg (weight)`, `duplicate email`, `parent bag N does not exist or was rejected`), largest first, with up to `samples` examples each:
 * the source key, the id the row would have had in the target, and the reason. Never the row.
 */
export async function readRejectGroups(client: pg.ClientBase, schema: string, runId: string, samples = 5): Promise<RejectGroup[]> {
  const r = await client.query(
    `WITH k AS (
       SELECT target_table, source_table, source_key, reason,
              regexp_replace(split_part(reason, ':', 1), '[0-9]+', 'N', 'g') AS kind
         FROM ${qualified(schema, '_migration_reject')} WHERE run_id = $1),
     r AS (
       SELECT k.*, row_number() OVER (PARTITION BY target_table, source_table, kind ORDER BY length(source_key), source_key) AS rn,
              count(*) OVER (PARTITION BY target_table, source_table, kind) AS n
         FROM k)
     SELECT r.target_table, r.source_table, r.kind, r.n, r.source_key, r.reason,
            CASE WHEN r.source_key ~ '^-?[0-9]{1,18}$' THEN
              COALESCE((SELECT m.target_id FROM ${qualified(schema, '_migration_id_map')} m WHERE m.source_table = r.source_table AND m.source_key = r.source_key::bigint),
                       r.source_key::bigint + COALESCE((SELECT o.id_offset FROM ${qualified(schema, '_migration_id_offset')} o WHERE o.source_table = r.source_table), 0))
            END AS target_id
       FROM r WHERE r.rn <= $2
      ORDER BY r.n DESC, r.target_table, r.source_table, r.kind, r.rn`,
    [runId, samples],
  );
  const groups = new Map<string, { target: string; source: string; reason: string; count: number; samples: RejectGroup['samples'] }>();
  for (const row of r.rows) {
    const key = `${row.target_table}\0${row.source_table}\0${row.kind}`;
    let g = groups.get(key);
    if (!g) {
      g = { target: row.target_table, source: row.source_table, reason: row.kind, count: Number(row.n), samples: [] };
      groups.set(key, g);
    }
    g.samples.push({ sourceKey: row.source_key, targetId: row.target_id === null ? null : Number(row.target_id), reason: row.reason });
  }
  return [...groups.values()];
}

export async function buildReport(input: {
  deps: RunStore;
  run: RunContext;
  record: RunRecord | null;
  verification: VerificationResult | null;
  rejectsKey: string;
  rejects: number;
  rejectGroups: RejectGroup[];
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
    // No manifest for this run (a dry run stopped early, or its backup objects were removed): the report says so with nulls.
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
    rejectGroups: input.rejectGroups,
    checks: verification?.checks ?? [],
    readiness: verification?.readiness ?? null,
    unmappedColumnsWithData: (input.record?.plan?.unmappedColumns ?? [])
      .filter((u) => u.withData?.length)
      .map((u) => ({ table: u.table, columns: u.withData! })),
    cutover: input.record?.cutover ?? null,
    live: input.live ?? null,
  };
}

/** The reject store of a run, in key order, as the `rejects` command lists it. */
export async function* listRejects(client: pg.ClientBase, schema: string, runId: string, filter: { table?: string; reason?: string } = {}): AsyncGenerator<{
  target_table: string; source_table: string; source_key: string; reason: string; row: Record<string, unknown> | null;
}> {
  const values: unknown[] = [runId];
  const where = ['run_id = $1'];
  if (filter.table) { values.push(filter.table); where.push(`(target_table = $${values.length} OR source_table = $${values.length})`); }
  if (filter.reason) { values.push(`%${filter.reason.replace(/[\\%_]/g, (c) => `\\${c}`)}%`); where.push(`reason ILIKE $${values.length}`); }
  // Pages of 5,000 by key: bounded memory however many rows were rejected.
  let after: [string, string, string] | null = null;
  for (;;) {
    const page = [...values];
    let cond = where.join(' AND ');
    if (after) {
      page.push(...after);
      cond += ` AND (target_table, source_table, source_key) > ($${page.length - 2}, $${page.length - 1}, $${page.length})`;
    }
    const r = await client.query(
      `SELECT target_table, source_table, source_key, reason, row_data FROM ${qualified(schema, '_migration_reject')}
        WHERE ${cond} ORDER BY target_table, source_table, source_key LIMIT 5000`,
      page,
    );
    for (const row of r.rows) yield { target_table: row.target_table, source_table: row.source_table, source_key: row.source_key, reason: row.reason, row: row.row_data };
    if (r.rows.length < 5000) return;
    const last = r.rows[r.rows.length - 1];
    after = [last.target_table, last.source_table, last.source_key];
  }
}
