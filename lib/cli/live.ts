import { InputError } from '../../lambdas/core/errors';
import type { Plan } from '../../lambdas/core/planner';
import { catchUp } from '../../lambdas/engine/catchup';
import { acquireLease, readRun, releaseLease } from '../../lambdas/engine/runs';
import { DEFAULT_BATCH_SIZE } from '../../lambdas/core/execution-input';
import { CAUGHT_UP_CHANGES } from '../../lambdas/engine/tasks';
import { hashPasswords } from '../../lambdas/io/password';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { CliUsageError, EXIT, parseCommandArgs, parsePositiveInt, type CliContext } from './common';

/**
 * `tracetrack-migrate catch-up`: a thin adapter over lambdas/engine/catchup.ts for a live run (started with
 * `run --live`). `abandon` (lib/cli/abandon.ts) removes a live run's change capture.
 */

export const CATCH_UP_USAGE = 'tracetrack-migrate catch-up --run-id ID [--target URL] [--target-schema NAME] [--time-budget-ms N] [--chunk-size N]';

const OPTIONS = {
  target: { type: 'string' },
  'target-schema': { type: 'string' },
  'run-id': { type: 'string' },
  'time-budget-ms': { type: 'string' },
  'chunk-size': { type: 'string' },
} as const;

function resolve(kind: string, args: string[], ctx: CliContext) {
  const v = parseCommandArgs(kind, args, OPTIONS);
  const url = v.target ?? ctx.env.AWS_DATABASE_URL ?? ctx.env.DATABASE_URL;
  if (!url) throw new CliUsageError(`${kind} needs --target postgres://USER:PASSWORD@HOST:PORT/DB.`);
  const runId = v['run-id'];
  if (!runId) throw new CliUsageError(`${kind} needs --run-id ID (the live run).`);
  return { url, runId, targetSchema: v['target-schema'] ?? 'tracetrack', budgetMs: parsePositiveInt(v['time-budget-ms'], '--time-budget-ms') ?? 600_000, chunkSize: parsePositiveInt(v['chunk-size'], '--chunk-size') };
}

export async function catchUpCommand(args: string[], ctx: CliContext): Promise<number> {
  const o = resolve('catch-up', args, ctx);
  return withClient(parseDatabaseUrl(o.url, 'target database URL'), async (client) => {
    const rec = await readRun(client, o.targetSchema, o.runId);
    if (!rec?.plan) throw new InputError(`No analysed run ${o.runId} in target schema "${o.targetSchema}". Check --run-id and --target-schema.`);
    await acquireLease(client, o.targetSchema, o.runId, 'cli:catch-up');
    try {
      const run = { runId: o.runId, sourceSchema: rec.sourceSchema, targetSchema: o.targetSchema, runTime: rec.runTime, batchSize: DEFAULT_BATCH_SIZE, live: true };
      const r = await catchUp({ client, run, plan: rec.plan as Plan, hashPasswords: (p) => hashPasswords(p), deadline: Date.now() + o.budgetMs, ...(o.chunkSize ? { chunkSize: o.chunkSize } : {}) });
      ctx.stdout(`${redactUrl(o.url)}: run ${o.runId}: ${r.applied} changes caught up (${Math.round(r.rate)}/s); ${r.pending} pending, oldest ${r.oldestSeconds.toFixed(1)} s; capture position ${r.position}.\n`);
      if (r.pending < CAUGHT_UP_CHANGES) ctx.stdout(`Caught up. Cut over with: tracetrack-migrate cutover --run-id ${o.runId}\n`);
      return r.pending < CAUGHT_UP_CHANGES ? EXIT.ok : EXIT.failed;
    } finally {
      await releaseLease(client, o.targetSchema, o.runId);
    }
  }, { applicationName: 'tracetrack-migrate:catch-up' });
}

