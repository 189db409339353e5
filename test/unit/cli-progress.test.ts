import { describe, expect, it } from 'vitest';
import { CleanupStack, scrubText, urlSecrets } from '../../lib/cli/common';
import { nextStep, renderSummary, resolveRunFlags } from '../../lib/cli/run';
import { createProgress, formatDuration, formatRate, renderProgressLine } from '../../lib/runner/progress';

describe('progress', () => {
  function sink(tty: boolean) {
    let text = '';
    let t = 0;
    const p = createProgress({ write: (s) => void (text += s), tty, now: () => t });
    return { p, out: () => text, tick: (ms: number) => void (t += ms) };
  }

  it('on a TTY, updates one line per step in place and ends it when the step finishes', () => {
    const { p, out, tick } = sink(true);
    p.start('migrate bag');
    tick(1000);
    p.update('migrate bag', 1000);
    tick(1000);
    p.update('migrate bag', 3000);
    p.finish('migrate bag', 4000);
    expect(out()).toBe('migrate bag: 1,000 rows, 1000 rows/s, 1.0 s\r\x1b[2Kmigrate bag: 3,000 rows, 1500 rows/s, 2.0 s\r\x1b[2Kmigrate bag: 4,000 rows, 2000 rows/s, 2.0 s done\n');
  });

  it('otherwise, prints a plain line per update, and log lines never mix with an open line', () => {
    const { p, out, tick } = sink(false);
    p.start('backup user');
    tick(500);
    p.update('backup user', 10);
    p.log('Analyse done');
    p.close();
    expect(out()).toBe('backup user: 10 rows, 20 rows/s, 0.5 s\nAnalyse done\n');
  });

  it('with the catalog\'s estimate: done/total, percentage and time left, in place on a TTY; the finished line has the exact count', () => {
    const { p, out, tick } = sink(true);
    p.start('migrate scan');
    p.expect!('migrate scan', 60_000);
    tick(2000);
    p.update('migrate scan', 15_000);
    tick(2000);
    p.update('migrate scan', 30_000, '4 rejected');
    p.finish('migrate scan', 60_006);
    expect(out()).toBe(
      'migrate scan: 15,000 / 60,000 rows (25.0 %), 7500 rows/s, 2.0 s, about 6 s left' +
        '\r\x1b[2Kmigrate scan: 30,000 / 60,000 rows (50.0 %), 7500 rows/s, 4.0 s, about 4 s left (4 rejected)' +
        '\r\x1b[2Kmigrate scan: 60,006 rows, 15k rows/s, 4.0 s done\n',
    );
  });

  it('plain lines elsewhere, each with its percentage; past a stale estimate the line says so instead of a percentage', () => {
    const { p, out, tick } = sink(false);
    p.start('backup bag');
    p.expect!('backup bag', 1000);
    tick(1000);
    p.update('backup bag', 400);
    tick(1000);
    p.update('backup bag', 1500);
    expect(out()).toBe('backup bag: 400 / 1,000 rows (40.0 %), 400 rows/s, 1.0 s, about 2 s left\nbackup bag: 1,500 rows (estimated 1,000), 750 rows/s, 2.0 s\n');
  });

  it('counts a step\'s seconds from its first invocation, not from when its estimate arrived (a queued table has not started)', () => {
    const { p, out, tick } = sink(false);
    p.expect!('backup user', 100);
    tick(3000);
    p.start('backup user');
    tick(500);
    p.finish('backup user', 100);
    expect(out()).toBe('backup user: 100 rows, 200 rows/s, 0.5 s done\n');
  });

  it.each([
    [0.2, '1 s'],
    [42, '42 s'],
    [125, '2 min 5 s'],
    [7260, '2 h 1 min'],
  ])('formatDuration(%d) → %s', (s, want) => expect(formatDuration(s)).toBe(want));

  it('without an estimate, the line is as before', () => {
    expect(renderProgressLine('migrate bag', 1000, 1)).toBe('migrate bag: 1,000 rows, 1000 rows/s, 1.0 s');
  });

  it.each([
    [0, 0, '-'],
    [100, 2, '50 rows/s'],
    [50_000, 1, '50k rows/s'],
  ])('formatRate(%d rows, %d s) → %s', (rows, s, want) => expect(formatRate(rows, s)).toBe(want));
});

describe('run arguments', () => {
  it('maps flags to the execution input', () => {
    const f = resolveRunFlags(
      ['--source', 'postgres://u:pw@localhost/db', '--skip-table', 'a', '--skip-table', 'b', '--batch-size', '10', '--cutover', '--run-id', 'r-1', '--target-schema', 'tt'],
      {},
    );
    expect(f.input).toEqual({ runId: 'r-1', targetSchema: 'tt', skipTables: ['a', 'b'], batchSize: 10, cutover: true });
    expect(f.sourceUrl).toBe('postgres://u:pw@localhost/db');
  });

  it.each([
    [{ AWS_DATABASE_URL: 'postgres://a@h/aws', DATABASE_URL: 'postgres://a@h/plain' }, 'postgres://a@h/aws'],
    [{ DATABASE_URL: 'postgres://a@h/plain' }, 'postgres://a@h/plain'],
  ])('takes the source from the environment (%j)', (env, want) => {
    expect(resolveRunFlags([], env).sourceUrl).toBe(want);
  });

  it.each([
    [[], /--source.*--demo/s],
    [['--demo', '--source', 'postgres://h/db'], /--demo/],
    [['--scale', '1'], /--scale only applies with --demo/],
    [['--demo', '--run-id', 'bad id!'], /--run-id/],
    [['--demo', '--batch-size', '0'], /--batch-size/],
    [['--demo', '--backup-dirr', 'x'], /Unknown option/],
  ])('refuses %j', (args, message) => {
    expect(() => resolveRunFlags(args, {})).toThrow(message);
  });

  it('generates a run id when none is given', () => {
    expect(resolveRunFlags(['--demo'], {}).input.runId).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{4}$/);
  });
});

describe('output', () => {
  it('never prints a password: URLs redacted, known secrets replaced', () => {
    const secrets = urlSecrets('postgres://me:s%40cret@db/x');
    expect(scrubText('failed: postgres://me:s%40cret@db/x and s@cret', secrets)).toBe('failed: postgres://me:***@db/x and ***');
  });

  it('says how to resume, by error name', () => {
    expect(nextStep('PlanError', 'r1')).toMatch(/--skip-table.*--run-id r1/);
    expect(nextStep('TransientDatabaseError', 'r1')).toContain('rerun with --run-id r1 to resume');
  });

  it('renders the summary in step order with totals', () => {
    const text = renderSummary(
      { runId: 'r', status: 'completed', reportKey: 'k', tables: { bag: { migrated: 9, rejected: 1, derived: 0 }, user: { migrated: 3, rejected: 0, derived: 0 } } },
      { steps: [{ step: 'user', migrated: 3, rejected: 0, batches: 1, invocations: 1, seconds: 0.5 }, { step: 'bag', migrated: 9, rejected: 1, batches: 1, invocations: 1, seconds: 1 }], backups: {}, seconds: 2 },
    );
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^table\s+source rows\s+migrated\s+derived\s+rejected\s+seconds$/);
    expect(lines[1]).toMatch(/^user\s+3\s+3\s+0\s+0\s+0\.50$/);
    expect(lines[2]).toMatch(/^bag\s+10\s+9\s+0\s+1\s+1\.00$/);
    expect(lines[3]).toMatch(/^total\s+13\s+12\s+0\s+1\s+1\.50$/);
  });

  it('stops what was started, newest first, even when one stop fails', async () => {
    const stack = new CleanupStack();
    const order: string[] = [];
    stack.push('db', async () => void order.push('db'));
    stack.push('s3', async () => {
      order.push('s3');
      throw new Error('boom');
    });
    const failed: string[] = [];
    await stack.runAll((label) => failed.push(label));
    expect(order).toEqual(['s3', 'db']);
    expect(failed).toEqual(['s3']);
  });
});
