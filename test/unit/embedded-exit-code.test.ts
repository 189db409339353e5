import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const MODULE = pathToFileURL(path.join(ROOT, 'lib/runner/embedded-postgres.ts')).href;

/** A Node process that loads lib/runner/embedded-postgres.ts, sets process.exitCode and lets its event loop drain. */
function exitCodeOf(code: number): number | null {
  const script = `import(${JSON.stringify(MODULE)}).then(() => { process.exitCode = ${code}; });`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  expect(r.stderr).not.toMatch(/Error/);
  return r.status;
}

describe('a process that loads the embedded PostgreSQL runner', () => {
  // embedded-postgres's exit hook ended such a process with process.exit(0) on beforeExit: vitest's after failed tests too.
  it('exits with the process.exitCode it set, not 0', () => {
    expect(exitCodeOf(3)).toBe(3);
    expect(exitCodeOf(1)).toBe(1);
  });

  it('exits 0 when it set no code', () => {
    expect(exitCodeOf(0)).toBe(0);
  });
});
