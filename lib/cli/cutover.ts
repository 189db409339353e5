import { cutoverRun, rollbackRun } from '../../lambdas/engine/cutover';
import { hashPasswords } from '../../lambdas/io/password';
import { parseDatabaseUrl, redactUrl, withClient } from '../../lambdas/io/pg';
import { CliUsageError, EXIT, parseCommandArgs, parsePositiveInt, type CliContext } from './common';

/** `tracetrack-migrate cutover | rollback`: thin adapters over lambdas/engine/cutover.ts. */

export const CUTOVER_USAGE = 'tracetrack-migrate cutover | rollback --target URL [--target-schema NAME] [--app-schema NAME] [--run-id ID] [--lock-timeout-ms N] [--accept-new-writes (rollback)]';

const OPTIONS = {
  target: { type: 'string' },
  'target-schema': { type: 'string' },
  'app-schema': { type: 'string' },
  'run-id': { type: 'string' },
  'lock-timeout-ms': { type: 'string' },
  'accept-new-writes': { type: 'boolean' },
} as const;

export async function cutoverCommand(kind: 'cutover' | 'rollback', args: string[], ctx: CliContext): Promise<number> {
  const v = parseCommandArgs(kind, args, OPTIONS);
  const url = v.target ?? ctx.env.AWS_DATABASE_URL ?? ctx.env.DATABASE_URL;
  if (!url) throw new CliUsageError(`${kind} needs --target postgres://USER:PASSWORD@HOST:PORT/DB.`);
  const config = parseDatabaseUrl(url, 'target database URL');
  const lockTimeoutMs = parsePositiveInt(v['lock-timeout-ms'], '--lock-timeout-ms');
  const targetSchema = v['target-schema'] ?? 'tracetrack';
  const result = await withClient(config, (client) =>
    (kind === 'cutover' ? cutoverRun : rollbackRun)({ client, targetSchema, appSchema: v['app-schema'], runId: v['run-id'], lockTimeoutMs, hashPasswords: (p) => hashPasswords(p), acceptNewWrites: v['accept-new-writes'] === true }),
  { applicationName: `tracetrack-migrate:${kind}` });
  const moved = result.moved.length ? ` Moved: ${result.moved.join(', ')}.` : '';
  ctx.stdout(`${redactUrl(url)}: run ${result.runId} ${result.status} (legacy schema "${result.legacySchema}").${moved}\n`);
  if (result.writeFreezeMs !== undefined) ctx.stdout(`Writes to the legacy tables were blocked for ${result.writeFreezeMs} ms${result.caughtUp !== undefined ? ` (${result.caughtUp} last changes caught up under the lock; change capture removed)` : ''}.\n`);
  if (kind === 'cutover' && result.status === 'cut-over') ctx.stdout(`Undo with: tracetrack-migrate rollback --target <URL> --run-id ${result.runId}\n`);
  return EXIT.ok;
}
