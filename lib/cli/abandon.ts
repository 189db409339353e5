import { captureStatus, removeCapture } from '../../lambdas/engine/capture';
import { abandonRun } from '../../lambdas/engine/runs';
import { parseDatabaseUrl, redactUrl, withClient, withTransaction } from '../../lambdas/io/pg';
import { CliUsageError, EXIT, parseCommandArgs, type CliContext } from './common';

/** `tracetrack-migrate abandon`: a thin adapter over abandonRun (lambdas/engine/runs.ts). */

export const ABANDON_USAGE = 'tracetrack-migrate abandon --target URL --run-id ID [--target-schema tracetrack]';

const OPTIONS = {
  target: { type: 'string' },
  'target-schema': { type: 'string' },
  'run-id': { type: 'string' },
} as const;

export async function abandonCommand(args: string[], ctx: CliContext): Promise<number> {
  const v = parseCommandArgs('abandon', args, OPTIONS);
  const url = v.target ?? ctx.env.AWS_DATABASE_URL ?? ctx.env.DATABASE_URL;
  if (!url) throw new CliUsageError('abandon needs --target postgres://USER:PASSWORD@HOST:PORT/DB (the database holding the target schema).');
  if (!v['run-id']) throw new CliUsageError('abandon needs --run-id ID: the run to give up (it is named in the message that refused the next run).');
  const schema = v['target-schema'] ?? 'tracetrack';
  const runId = v['run-id'];
  const { r, removed, pending } = await withClient(parseDatabaseUrl(url, 'target database URL'), async (c) => {
    const r = await abandonRun(c, schema, runId);
    // A live run's change capture goes with it (triggers and change log in the source database).
    const pending = (await captureStatus(c, runId)).pending;
    const removed = await withTransaction(c, () => removeCapture(c, runId));
    return { r, removed, pending };
  }, { applicationName: 'tracetrack-migrate:abandon' });
  const capture = removed ? ` Its change capture is removed (${pending} changes were pending).` : '';
  ctx.stdout(
    r.status === 'abandoned'
      ? `${redactUrl(url)}: run ${runId} (was ${r.previous}) is abandoned and its lease of "${schema}" released.${capture} Its rows stay in "${schema}" and its backup in S3.\n` +
          `Next: start a new run (tracetrack-migrate run …), which continues from what is in "${schema}".\n`
      : `${redactUrl(url)}: run ${runId} was already abandoned; its lease is released.${capture}\n`,
  );
  return EXIT.ok;
}
