import { MigrationError } from '../../lambdas/core/errors';
import { abandonCommand, ABANDON_USAGE } from './abandon';
import { analyzeCommand, ANALYZE_USAGE } from './analyze';
import { AWS_USAGE, redriveCommand, startCommand, statusCommand } from './aws';
import { CliUsageError, EXIT, scrubText, urlSecrets, type CliContext } from './common';
import { cutoverCommand, CUTOVER_USAGE } from './cutover';
import { rejectsCommand, REJECTS_USAGE } from './rejects';
import { restoreCommand, RESTORE_USAGE } from './restore';
import { runCommand, RUN_USAGE } from './run';
import { catchUpCommand, CATCH_UP_USAGE } from './live';

export const USAGE = `Usage:
  ${RUN_USAGE}
  ${ANALYZE_USAGE}
  ${RESTORE_USAGE}
  ${CUTOVER_USAGE}
  ${ABANDON_USAGE}
  ${REJECTS_USAGE}
  ${CATCH_UP_USAGE}
${AWS_USAGE.split('\n').map((l) => `  ${l}`).join('\n')}

Exit status: 0 success; 1 the run/execution failed (step, error and what to do next on stderr);
2 invalid arguments or the analysis refuses the source; 130 interrupted.
`;

type Command = (args: string[], ctx: CliContext) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  run: runCommand,
  analyze: analyzeCommand,
  analyse: analyzeCommand,
  restore: restoreCommand,
  cutover: (args, ctx) => cutoverCommand('cutover', args, ctx),
  rollback: (args, ctx) => cutoverCommand('rollback', args, ctx),
  abandon: abandonCommand,
  rejects: rejectsCommand,
  'catch-up': catchUpCommand,
  start: (args, ctx) => startCommand(args, ctx),
  status: (args, ctx) => statusCommand(args, ctx),
  redrive: (args, ctx) => redriveCommand(args, ctx),
};

/** Every database URL password given on the command line or in the environment: never printed. */
function secretsOf(argv: string[], env: NodeJS.ProcessEnv): string[] {
  const urls = argv.filter((a) => /^postgres(ql)?:\/\//.test(a) || /^--(source|target)=/.test(a)).map((a) => a.replace(/^--\w+=/, ''));
  return urlSecrets(...urls, env.AWS_DATABASE_URL, env.DATABASE_URL);
}

/** Runs one command; returns the exit status. Errors become a message on stderr, never a stack trace. */
export async function main(argv: string[], ctx: CliContext): Promise<number> {
  const [command, ...args] = argv;
  if (!command || command === 'help' || command === '--help' || command === '-h') {
    ctx.stdout(USAGE);
    return command ? EXIT.ok : EXIT.usage;
  }
  const handler = COMMANDS[command];
  if (!handler) {
    ctx.stderr(`Unknown command "${command}".\n${USAGE}`);
    return EXIT.usage;
  }
  if (args.includes('--help') || args.includes('-h')) {
    ctx.stdout(USAGE);
    return EXIT.ok;
  }
  const secrets = secretsOf(argv, ctx.env);
  try {
    return await handler(args, ctx);
  } catch (err) {
    const e = err as Error;
    if (err instanceof CliUsageError) {
      ctx.stderr(`${scrubText(e.message, secrets)}\n`);
      return EXIT.usage;
    }
    const name = err instanceof MigrationError ? e.name : e?.name ?? 'Error';
    ctx.stderr(`${command} failed with ${name}: ${scrubText(e?.message ?? String(err), secrets)}\n`);
    if (name === 'InputError' || name === 'ConnectionConfigError') return EXIT.usage;
    return EXIT.failed;
  } finally {
    await ctx.cleanups.runAll((label, err) => ctx.stderr(`Stopping the ${label} failed: ${scrubText((err as Error).message, secrets)}\n`));
  }
}
