import { parseDatabaseUrl } from '../../lambdas/io/pg';
import { hashPasswords } from '../../lambdas/io/password';
import {
  analyseTask,
  createSchemaTask,
  migrateStepTask,
  preflightTask,
  reportTask,
  verifyTask,
  type TaskDeps,
} from '../../lambdas/engine/tasks';
import type { RunContext } from '../../lambdas/core/contract';
import { withTestClient } from './pg';

/** Task dependencies on test databases (URLs instead of secrets) and a local S3 bucket. */
export function taskDeps(store: { s3: TaskDeps['s3']; bucket: string }, sourceUrl: string, targetUrl = sourceUrl, extra: Partial<TaskDeps> = {}): TaskDeps {
  return {
    source: async () => parseDatabaseUrl(sourceUrl),
    target: async () => parseDatabaseUrl(targetUrl),
    s3: store.s3,
    bucket: store.bucket,
    prefix: '',
    timeBudgetMs: 600_000,
    hashPasswords: (p) => hashPasswords(p),
    ...extra,
  };
}

/** Calls a migration step until it reports done (as the state machine's loop does); returns the invocations. */
export async function runStepToEnd(run: RunContext, step: string, d: TaskDeps, cursor: string | null = null): Promise<number> {
  let invocations = 0;
  for (;;) {
    invocations += 1;
    const r = await migrateStepTask({ run, step, cursor }, d);
    cursor = r.cursor;
    if (r.done) return invocations;
    if (invocations > 100_000) throw new Error(`step ${step} makes no progress`);
  }
}

/** Every migration step to its end, in the plan's order. */
export async function migrateAllSteps(run: RunContext, steps: readonly string[], d: TaskDeps): Promise<void> {
  for (const step of steps) await runStepToEnd(run, step, d);
}

/** The workflow's task sequence without Step Functions (the local runner covers that); no backup. */
export async function runTasks(d: TaskDeps, input: Record<string, unknown>): Promise<RunContext> {
  const { run } = await preflightTask({ input }, d);
  const analysis = await analyseTask({ run }, d);
  if (run.dryRun) return run;
  await createSchemaTask({ run }, d);
  await migrateAllSteps(run, analysis.steps, d);
  await verifyTask({ run }, d);
  await reportTask({ run }, d);
  return run;
}

export const TARGET_TABLE_NAMES = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log'] as const;

/**
 * Content of every target table as `<rows>:<md5>`. Rehashed passwords are left out (their salt is
 * random), and the run's migration time (which fills missing timestamps) reads as 'RUN-TIME'.
 */
export async function targetDump(url: string, schema: string, runTime?: string): Promise<Record<string, string>> {
  return withTestClient(url, async (c) => {
    const out: Record<string, string> = {};
    for (const t of TARGET_TABLE_NAMES) {
      const meta = await c.query(`SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name <> 'password_hash' ORDER BY ordinal_position`, [schema, t]);
      const cols = meta.rows.map((r) =>
        runTime && String(r.data_type).startsWith('timestamp')
          ? `CASE WHEN "${r.column_name}" = '${runTime}'::timestamp THEN 'RUN-TIME' ELSE "${r.column_name}"::text END AS "${r.column_name}"`
          : `"${r.column_name}"`,
      );
      const r = await c.query(`SELECT md5(string_agg(x::text, '|' ORDER BY x.id)) AS h, count(*)::int AS n FROM (SELECT ${cols.join(', ')} FROM "${schema}"."${t}") x`);
      out[t] = `${r.rows[0].n}:${r.rows[0].h}`;
    }
    return out;
  });
}
