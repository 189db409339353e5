import { describe, expect, it } from 'vitest';
import { escapeHtml, renderReportHtml, resolveTimeline, type ReportPageInput } from '../../lambdas/core/report-html';

describe('report.html (pure rendering)', () => {
  const input: ReportPageInput = {
    runId: 'r1', status: 'completed', sourceSchema: 'public', targetSchema: 'tracetrack', runTime: '2026-01-01T00:00:00', generatedAt: '2026-01-01T00:01:00Z',
    tables: { bag: { migrated: 1500, rejected: 2, derived: 0 } },
    steps: {},
    rejects: { key: 'runs/r1/rejects.jsonl.gz', rows: 2 },
    rejectGroups: [{ target: 'bag', source: 'bag', reason: 'weight_kg (weight)', count: 2, samples: [{ sourceKey: '8', targetId: 8, reason: 'weight_kg (weight): negative weight -2.5 <b>' }] }],
    checks: [{ name: 'counts:bag:bag', passed: true, detail: 'ok' }, { name: 'checksum:bag:bag', passed: false, detail: '1 range differs' }],
    readiness: null,
  };

  it('shows every number with its data attribute, escapes all text, and loads nothing from anywhere', () => {
    const html = renderReportHtml(input, null);
    expect(html).toContain('<td class="n" data-field="migrated" data-value="1500">1,500</td>');
    expect(html).toContain('<td class="n" data-field="source" data-value="1502">1,502</td>');
    expect(html).toContain('negative weight -2.5 &lt;b&gt;');
    expect(html).not.toContain('-2.5 <b>');
    expect(html).toContain('data-field="checks-passed" data-value="1"');
    expect(html).toContain('data-check="checksum:bag:bag" data-passed="false"');
    expect(html).not.toMatch(/<script|<link|src=|https?:\/\//);
  });

  it.each([
    ['&<>"\'', '&amp;&lt;&gt;&quot;&#39;'],
    ['plain', 'plain'],
  ])('escapeHtml(%j) → %j', (text, want) => expect(escapeHtml(text)).toBe(want));

  it('puts the steps on one time axis: own seconds end at the step\'s time; a step without seconds lasts from the previous end', () => {
    const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const timeline = resolveTimeline(
      {
        preflight: { at: t(0) },
        analyse: { at: t(10) }, // includes the backup
        'create-schema': { at: t(11) },
        'migrate:bag': { finishedAt: t(15), seconds: 3 },
        'migrate:prepare': { seconds: 0.5 }, // no time: follows the previous step
        verify: { at: t(20) },
        failed: { at: t(30) },
      },
      ['prepare', 'bag', 'finalize'],
    );
    expect(timeline).toEqual([
      { step: 'preflight', start: 0, seconds: 0 },
      { step: 'analyse', start: 0, seconds: 10 },
      { step: 'create-schema', start: 10, seconds: 1 },
      { step: 'migrate:prepare', start: 11, seconds: 0.5 },
      { step: 'migrate:bag', start: 12, seconds: 3 },
      { step: 'verify', start: 15, seconds: 5 },
    ]);
  });

  it('orders the cross-database staging items where staging runs, before prepare', () => {
    const t = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s)).toISOString();
    const timeline = resolveTimeline(
      { 'create-schema': { at: t(1) }, 'migrate:prepare': { finishedAt: t(4), seconds: 1 }, 'migrate:stage:bag': { finishedAt: t(3), seconds: 2 }, 'migrate:finalize': { finishedAt: t(9), seconds: 1 } },
      ['prepare', 'bag', 'finalize'],
    );
    expect(timeline.map((e) => e.step)).toEqual(['create-schema', 'migrate:stage:bag', 'migrate:prepare', 'migrate:finalize']);
  });
});
