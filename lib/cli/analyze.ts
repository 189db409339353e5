import { renderPlanText } from '../../lambdas/core/planner';
import { analyseSource } from '../../lambdas/engine/analyse';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { CliUsageError, EXIT, parseCommandArgs, resolveSourceUrl, type CliContext, readMappingFile } from './common';

/** `tracetrack-migrate analyze`: the plan and every mapping decision, read-only (nothing is written anywhere). */

export const ANALYZE_USAGE = 'tracetrack-migrate analyze [--source URL] [--source-schema public] [--target-schema tracetrack] [--mapping FILE] [--skip-table NAME]... [--json]';

const OPTIONS = {
  source: { type: 'string' },
  'source-schema': { type: 'string' },
  'target-schema': { type: 'string' },
  mapping: { type: 'string' },
  'skip-table': { type: 'string', multiple: true },
  json: { type: 'boolean' },
} as const;


export async function analyzeCommand(args: string[], ctx: CliContext): Promise<number> {
  const v = parseCommandArgs('analyze', args, OPTIONS);
  const url = resolveSourceUrl(v.source, ctx.env);
  if (!url) throw new CliUsageError('No source database: pass --source postgres://USER:PASSWORD@HOST:PORT/DB (or set $AWS_DATABASE_URL / $DATABASE_URL).');
  const config = parseDatabaseUrl(url, 'source database URL');
  const overrides = v.mapping ? readMappingFile(v.mapping, ctx.cwd).overrides : undefined;
  const sourceSchema = v['source-schema'] ?? 'public';
  const { plan } = await withClient(
    config,
    async (client) => {
      // Read-only by construction: the session refuses writes.
      await client.query('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
      return analyseSource(client, {
        sourceSchema,
        targetSchema: v['target-schema'] ?? 'tracetrack',
        skipTables: v['skip-table'] ?? [],
        overrides,
      });
    },
    { applicationName: 'tracetrack-migrate:analyze', statementTimeoutMs: 120_000 },
  );
  if (v.json) ctx.stdout(`${JSON.stringify(plan, null, 2)}\n`);
  else ctx.stdout(`Source: ${redactUrl(url)} (schema ${sourceSchema})\n\n${renderPlanText(plan)}\n`);
  if (plan.problems.length) {
    ctx.stderr(
      `The analysis refuses schema "${sourceSchema}" (${plan.problems.length} problem${plan.problems.length > 1 ? 's' : ''}):\n` +
        `${plan.problems.map((p) => `  - ${p}`).join('\n')}\n` +
        'Next: fix the source, or skip a table with --skip-table NAME, or map it with --mapping FILE, and analyze again.\n',
    );
    return EXIT.usage;
  }
  return EXIT.ok;
}
