import pg from 'pg';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { analyseSource, assertPlan } from '../../lambdas/engine/analyse';
import { createTargetTables, runMigrateStep, type EngineRun } from '../../lambdas/engine/migrate';
import { ensureInternalTables, recordRun, updateRun } from '../../lambdas/engine/runs';
import { hashPasswords } from '../../lambdas/io/password';
import type { MappingOverrides } from '../../lambdas/core/mapping-file';
import { createTestDatabase, withTestClient } from './pg';

/** A fixture's SQL: `a` is `shape-a.sql`; a name with a dash is the file itself (`era-split-bags`). */
export function fixtureSql(shape: string): string {
  const file = shape.includes('-') ? `${shape}.sql` : `shape-${shape}.sql`;
  return readFileSync(join(__dirname, '..', 'fixtures', file), 'utf8');
}

export async function loadFixture(url: string, shape: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(fixtureSql(shape));
  } finally {
    await c.end();
  }
}

/** A database of its own holding one source-shape fixture, a client on it for `fn`, dropped afterwards. */
export async function withFixtureDatabase<T>(shape: string, fn: (c: pg.Client) => Promise<T>, prefix = 'fx'): Promise<T> {
  const db = await createTestDatabase(prefix);
  try {
    await loadFixture(db.url, shape);
    return await withTestClient(db.url, fn);
  } finally {
    await db.drop();
  }
}

export interface EngineRunOptions {
  readonly runId?: string;
  readonly targetSchema?: string;
  readonly batchSize?: number;
  readonly runTime?: string;
  readonly overrides?: MappingOverrides;
  readonly skipTables?: string[];
  /** Stop after this many batches in total (simulates an interruption). */
  readonly stopAfterBatches?: number;
  /** The source is live (EngineRun.live). */
  readonly live?: boolean;
}

/** Runs analyse → create → every migrate step in-process on one database (no workflow, no S3). */
export async function runEngine(client: pg.ClientBase, options: EngineRunOptions = {}) {
  const run: EngineRun = {
    runId: options.runId ?? 'test-run',
    sourceSchema: 'public',
    targetSchema: options.targetSchema ?? 'tracetrack',
    runTime: options.runTime ?? '2026-01-01T00:00:00',
    batchSize: options.batchSize ?? 7,
    ...(options.live ? { live: true } : {}),
  };
  const { plan } = await analyseSource(client, { sourceSchema: run.sourceSchema, targetSchema: run.targetSchema, overrides: options.overrides, skipTables: options.skipTables });
  assertPlan(plan);
  await ensureInternalTables(client, run.targetSchema);
  const rec = await recordRun(client, run.targetSchema, run);
  const effective = { ...run, runTime: rec.runTime };
  await updateRun(client, run.targetSchema, run.runId, { plan });
  await createTargetTables(client, run.targetSchema);
  let batchesLeft = options.stopAfterBatches ?? Infinity;
  const totals: Record<string, { migrated: number; rejected: number }> = {};
  for (const step of plan.steps) {
    for (;;) {
      const r = await runMigrateStep(
        {
          client, run: effective, plan, deadline: Date.now() + 3_600_000,
          hashPasswords: (p) => hashPasswords(p),
          shouldStop: () => batchesLeft <= 0,
          onProgress: () => { batchesLeft -= 1; },
        },
        step,
      );
      totals[step] = { migrated: (totals[step]?.migrated ?? 0) + r.migrated, rejected: (totals[step]?.rejected ?? 0) + r.rejected };
      if (r.done) break;
      if (batchesLeft <= 0) return { plan, run: effective, interrupted: true, totals };
    }
  }
  return { plan, run: effective, interrupted: false, totals };
}
