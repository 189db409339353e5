import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { parseMappingFile, type MappingOverrides } from '../../lambdas/core/mapping-file';
import { redactUrl } from '../../lambdas/io/pg';

/** Exit statuses of tracetrack-migrate (README "Exit codes"). */
export const EXIT = {
  ok: 0,
  /** The workflow / execution failed (the failing step, error and next step are on stderr). */
  failed: 1,
  /** Bad arguments, or the analysis refuses the source. */
  usage: 2,
  /** Interrupted (SIGINT). */
  interrupted: 130,
} as const;

/** What a command needs from the process: passed in, so commands run in tests without one. */
export interface CliContext {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  readonly env: NodeJS.ProcessEnv;
  /** stdout is a terminal: progress updates one line per step. */
  readonly tty: boolean;
  readonly cwd: string;
  /** Cleanups run when the process is interrupted (the command's own `finally` runs them otherwise). */
  readonly cleanups: CleanupStack;
  /**
   * Resolves at the next Ctrl-C / SIGTERM; while a command waits on it, the signal ends the wait instead
   * of interrupting the command (`run --demo --keep`). Absent: the command cannot wait.
   */
  readonly untilInterrupted?: () => Promise<NodeJS.Signals>;
}

/** A command refuses its arguments: exit 2 with the message. */
export class CliUsageError extends Error {
  override readonly name = 'CliUsageError';
}

/** A stack of things a command started (database, S3 server); stopped in reverse order. */
export class CleanupStack {
  private readonly items: { label: string; fn: () => Promise<void> }[] = [];

  push(label: string, fn: () => Promise<void>): () => void {
    const item = { label, fn };
    this.items.push(item);
    return () => {
      const i = this.items.indexOf(item);
      if (i >= 0) this.items.splice(i, 1);
    };
  }

  /** Runs and removes every cleanup, newest first; failures are reported, not thrown. */
  async runAll(onError: (label: string, err: unknown) => void = () => undefined): Promise<void> {
    while (this.items.length) {
      const item = this.items.pop()!;
      try {
        await item.fn();
      } catch (err) {
        onError(item.label, err);
      }
    }
  }
}

/** Runs `fn` with a resource that `start` gives; stops it afterwards, and on interrupt through the cleanup stack. */
export async function withResource<R, T>(
  ctx: CliContext,
  label: string,
  start: () => Promise<R>,
  stop: (r: R) => Promise<void>,
  fn: (r: R) => Promise<T>,
): Promise<T> {
  const resource = await start();
  let stopped = false;
  const stopOnce = async () => {
    if (stopped) return;
    stopped = true;
    await stop(resource);
  };
  const remove = ctx.cleanups.push(label, stopOnce);
  try {
    return await fn(resource);
  } finally {
    remove();
    await stopOnce();
  }
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** `util.parseArgs` in strict mode, with its errors turned into usage errors that name the command. */
export function parseCommandArgs<O extends Options>(command: string, args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new CliUsageError(`${command}: ${(err as Error).message.replace(/\. To specify a positional.*$/s, '.')}\nSee: tracetrack-migrate help`);
  }
}

export function parsePositiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new CliUsageError(`${flag} must be a whole number ≥ 1 (got "${value}").`);
  return n;
}

export function parsePositiveNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new CliUsageError(`${flag} must be a number > 0 (got "${value}").`);
  return n;
}

/** Passwords of database URLs, to strip from anything printed. */
export function urlSecrets(...urls: (string | undefined)[]): string[] {
  const out: string[] = [];
  for (const url of urls) {
    if (!url) continue;
    try {
      const p = new URL(url).password;
      if (p) out.push(p, decodeURIComponent(p));
    } catch {
      // not a URL: nothing to hide beyond redactUrl
    }
  }
  return [...new Set(out.filter((s) => s.length >= 3))];
}

/** Text safe to print: URLs redacted, known secrets replaced by ***. */
export function scrubText(text: string, secrets: readonly string[] = []): string {
  // The usage examples' literal placeholder `USER:PASSWORD@` is not a secret.
  let out = text.replace(/postgres(?:ql)?:\/\/[^\s'"]+/g, (m) => (m.includes('://USER:PASSWORD@') ? m : redactUrl(m)));
  for (const s of secrets) out = out.split(s).join('***');
  return out;
}

/** Source URL: --source, then $AWS_DATABASE_URL, then $DATABASE_URL. */
export function resolveSourceUrl(flag: string | undefined, env: NodeJS.ProcessEnv): string | undefined {
  return flag || env.AWS_DATABASE_URL || env.DATABASE_URL || undefined;
}

export function padTable(rows: string[][], rightAlign: (col: number) => boolean): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((r) => r.map((cell, i) => (rightAlign(i) ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!))).join('  ').trimEnd())
    .join('\n');
}

/** Reads and checks a --mapping file before anything starts; all its problems are reported at once. */
export function readMappingFile(file: string, cwd: string): { text: string; overrides: MappingOverrides } {
  let text: string;
  try {
    text = readFileSync(path.resolve(cwd, file), 'utf8');
  } catch (err) {
    throw new CliUsageError(`--mapping ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`);
  }
  try {
    return { text, overrides: parseMappingFile(text, `mapping file ${file}`) };
  } catch (err) {
    throw new CliUsageError((err as Error).message);
  }
}
