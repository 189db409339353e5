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
  /**
   * The rows the step is expected to cover (the catalog's estimate): updates then show done/total, a
   * percentage and the time left. Optional: a sink without it shows rows and rate only.
   */
  expect?(key: string, total: number): void;
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
  /** When the step's first task invocation began (not when its estimate arrived: a queued table has not started). */
  startedAt?: number;
  rows: number;
  total?: number;
}

export function formatRate(rows: number, seconds: number): string {
  if (seconds <= 0) return '-';
  const rate = rows / seconds;
  return rate >= 10_000 ? `${Math.round(rate / 1000)}k rows/s` : `${Math.round(rate)} rows/s`;
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(seconds / 3600)} h ${Math.round((seconds % 3600) / 60)} min`;
}

/**
 * One progress line. With an estimated `total` (and fewer rows done than estimated), also the
 * percentage and the time left at the rate so far: `migrate bag: 12,400 / 50,000 rows (24.8 %), 8k rows/s, 1.5 s, about 5 s left`.
 * Estimates come from the catalog (reltuples); past the estimate the line says so instead of guessing.
 */
export function renderProgressLine(key: string, rows: number, seconds: number, extra?: string, total?: number): string {
  const tail = extra ? ` (${extra})` : '';
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  if (total === undefined || !(total > 0)) return `${key}: ${n(rows)} rows, ${formatRate(rows, seconds)}, ${seconds.toFixed(1)} s${tail}`;
  if (rows > total) return `${key}: ${n(rows)} rows (estimated ${n(total)}), ${formatRate(rows, seconds)}, ${seconds.toFixed(1)} s${tail}`;
  const pct = ((rows / total) * 100).toFixed(1);
  const left = rows > 0 && rows < total && seconds > 0 ? `, about ${formatDuration(((total - rows) * seconds) / rows)} left` : '';
  return `${key}: ${n(rows)} / ${n(total)} rows (${pct} %), ${formatRate(rows, seconds)}, ${seconds.toFixed(1)} s${left}${tail}`;
}

export function createProgress(options: ProgressOptions): ProgressSink {
  const now = options.now ?? Date.now;
  const columns = Math.max(40, options.columns ?? 100);
  const steps = new Map<string, StepState>();
  let open = false;

  const state = (key: string): StepState => {
    let s = steps.get(key);
    if (!s) {
      s = { rows: 0 };
      steps.set(key, s);
    }
    return s;
  };
  const clear = () => {
    if (open) options.write('\r\x1b[2K');
    open = false;
  };
  const line = (key: string, rows: number, extra?: string, final = false) => {
    const s = state(key);
    s.rows = rows;
    s.startedAt ??= now();
    // The finished line shows the exact count, not the estimate.
    return renderProgressLine(key, rows, (now() - s.startedAt) / 1000, extra, final ? undefined : s.total);
  };

  return {
    start(key) {
      state(key).startedAt ??= now();
    },
    expect(key, total) {
      state(key).total = total;
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
      const text = line(key, rows, extra, true);
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
