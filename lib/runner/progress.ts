/**
 * Progress of a local run, derived from the task results the runner sees (each BackupTable and
 * MigrateStep result carries counts). On a TTY each step is one line that updates in place;
 * otherwise (CI, a pipe) every update is a plain log line.
 */

export interface ProgressSink {
  /** A task invocation for this line begins (the rate counts from the first one). */
  start(key: string): void;
  /** A step made progress: `key` names the line (e.g. `migrate bag`), `rows` is the total so far. */
  update(key: string, rows: number, extra?: string): void;
  /** The step is finished: its line is printed for good. */
  finish(key: string, rows: number, extra?: string): void;
  /** A free log line (handler logs, notices); never mixed into an updating line. */
  log(line: string): void;
  /** Ends the updating line, if any. */
  close(): void;
}

export interface ProgressOptions {
  readonly write: (text: string) => void;
  readonly tty: boolean;
  /** Width of a TTY line (longer lines are cut). @default 100 */
  readonly columns?: number;
  readonly now?: () => number;
}

interface StepState {
  readonly startedAt: number;
  rows: number;
}

export function formatRate(rows: number, seconds: number): string {
  if (seconds <= 0) return '-';
  const rate = rows / seconds;
  return rate >= 10_000 ? `${Math.round(rate / 1000)}k rows/s` : `${Math.round(rate)} rows/s`;
}

export function renderProgressLine(key: string, rows: number, seconds: number, extra?: string): string {
  return `${key}: ${rows.toLocaleString('en-US')} rows, ${formatRate(rows, seconds)}, ${seconds.toFixed(1)} s${extra ? ` (${extra})` : ''}`;
}

export function createProgress(options: ProgressOptions): ProgressSink {
  const now = options.now ?? Date.now;
  const columns = Math.max(40, options.columns ?? 100);
  const steps = new Map<string, StepState>();
  let open = false;

  const state = (key: string): StepState => {
    let s = steps.get(key);
    if (!s) {
      s = { startedAt: now(), rows: 0 };
      steps.set(key, s);
    }
    return s;
  };
  const clear = () => {
    if (open) options.write('\r\x1b[2K');
    open = false;
  };
  const line = (key: string, rows: number, extra?: string) => {
    const s = state(key);
    s.rows = rows;
    return renderProgressLine(key, rows, (now() - s.startedAt) / 1000, extra);
  };

  return {
    start(key) {
      state(key);
    },
    update(key, rows, extra) {
      const text = line(key, rows, extra);
      if (options.tty) {
        clear();
        options.write(text.slice(0, columns - 1));
        open = true;
      } else {
        options.write(`${text}\n`);
      }
    },
    finish(key, rows, extra) {
      const text = line(key, rows, extra);
      clear();
      options.write(`${text} done\n`);
      steps.delete(key);
    },
    log(text) {
      clear();
      options.write(`${text}\n`);
    },
    close() {
      if (open) options.write('\n');
      open = false;
    },
  };
}

/** A sink that prints nothing (library use, tests). */
export const silentProgress: ProgressSink = { start() {}, update() {}, finish() {}, log() {}, close() {} };
