import { execFile } from 'node:child_process';
import * as path from 'node:path';

/** tracetrack-migrate as a child process (what a user runs): exit status, stdout, stderr. */

export const ROOT = path.join(__dirname, '..', '..');

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function cli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.DATABASE_URL;
  delete env.AWS_DATABASE_URL;
  Object.assign(env, options.env);
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'bin', 'cli.ts'), ...args],
      { cwd: options.cwd ?? ROOT, env, maxBuffer: 32 * 1024 * 1024, timeout: options.timeoutMs ?? 150_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** The run id a `run` printed (`Run <id>: …`). */
export function runIdOf(stdout: string): string {
  const m = /^Run (\S+): /m.exec(stdout);
  if (!m) throw new Error(`no run id in:\n${stdout}`);
  return m[1]!;
}
