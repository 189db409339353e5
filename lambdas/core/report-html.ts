import type { Plan } from './planner';
import type { CheckResult, Readiness } from './verify';

/**
 * `report.html`: the run's report as one self-contained page (no script, no network, no font or
 * stylesheet from elsewhere: inline CSS and plain SVG), the page an operator attaches to a change
 * ticket. Pure: it renders what it is given. Every number is also in report.json; the page marks each
 * one with `data-*` attributes so a test (and a script) can read them back.
 *
 * What it never shows: row data. Rejects appear as source key and target id with their reason; the
 * readiness lists as id and username (as in the terminal), never a hash.
 */

export interface RejectSample {
  readonly sourceKey: string;
  /** The id the row would have had in the target (offset or id map applied); null when not an integer key. */
  readonly targetId: number | null;
  readonly reason: string;
}

/** Rejected rows of one target table, source table and kind of reason (the reason up to its first ':', numbers as N). */
export interface RejectGroup {
  readonly target: string;
  readonly source: string;
  readonly reason: string;
  readonly count: number;
  readonly samples: RejectSample[];
}

export interface ReportPageInput {
  readonly runId: string;
  readonly status: string;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly runTime: string;
  readonly generatedAt: string;
  readonly tables: Record<string, { migrated: number; rejected: number; derived: number }>;
  readonly steps: Record<string, unknown>;
  readonly rejects: { readonly key: string; readonly rows: number };
  readonly rejectGroups?: readonly RejectGroup[];
  readonly checks: readonly CheckResult[];
  readonly readiness: Readiness | null;
}

export interface TimelineEntry {
  readonly step: string;
  /** Seconds from the first step's start. */
  readonly start: number;
  readonly seconds: number;
}

const WORKFLOW_ORDER = ['preflight', 'analyse', 'create-schema', 'migrate:stage', 'migrate:prepare'];
const TAIL_ORDER = ['migrate:finalize', 'verify', 'cutover', 'report'];

function timeOf(rec: Record<string, unknown>): number | null {
  for (const k of ['finishedAt', 'at']) {
    const v = rec[k];
    if (typeof v === 'string') {
      const t = Date.parse(v);
      if (Number.isFinite(t)) return t;
    }
  }
  return null;
}

/**
 * The run's steps on one time axis. A step record has an end time (`at`, `finishedAt`) and/or its
 * own `seconds`; a step with both starts `seconds` before its end; one without seconds lasts from the
 * previous step's end (for `analyse` that span holds the backup); one without a time follows the previous.
 */
export function resolveTimeline(steps: Record<string, unknown>, migrateOrder: readonly string[] = []): TimelineEntry[] {
  const names = Object.keys(steps).filter((k) => k !== 'failed' && k !== 'abandoned');
  const order = [...WORKFLOW_ORDER, ...migrateOrder.map((s) => `migrate:${s}`), ...TAIL_ORDER];
  // Cross-database staging items (`migrate:stage:<table>`) sit where the whole-run `migrate:stage` did.
  const rank = (n: string) => {
    const i = order.indexOf(n.startsWith('migrate:stage:') ? 'migrate:stage' : n);
    return i < 0 ? order.length - TAIL_ORDER.length : i;
  };
  names.sort((a, b) => rank(a) - rank(b));
  const out: { step: string; end: number; seconds: number }[] = [];
  let prevEnd: number | null = null;
  for (const step of names) {
    const rec = (steps[step] ?? {}) as Record<string, unknown>;
    const own = typeof rec.seconds === 'number' && Number.isFinite(rec.seconds) ? Math.max(0, rec.seconds) : null;
    const at = timeOf(rec);
    let end: number;
    let seconds: number;
    if (at !== null) {
      end = at;
      seconds = own ?? (prevEnd === null ? 0 : Math.max(0, (at - prevEnd) / 1000));
    } else {
      seconds = own ?? 0;
      end = (prevEnd ?? 0) + seconds * 1000;
    }
    out.push({ step, end, seconds });
    prevEnd = Math.max(prevEnd ?? end, end);
  }
  if (!out.length) return [];
  const origin = Math.min(...out.map((e) => e.end - e.seconds * 1000));
  return out.map((e) => ({ step: e.step, start: (e.end - e.seconds * 1000 - origin) / 1000, seconds: e.seconds }));
}

export function escapeHtml(text: unknown): string {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const fmt = (n: number) => n.toLocaleString('en-US');

const COLORS = { migrated: '#2e7d32', derived: '#1565c0', rejected: '#c62828', track: '#eceff1' } as const;

function tableRows(input: ReportPageInput, plan: Plan | null): string {
  const order = plan?.steps ?? [];
  const entries = Object.entries(input.tables).sort(([a], [b]) => (order.indexOf(a) < 0 ? 99 : order.indexOf(a)) - (order.indexOf(b) < 0 ? 99 : order.indexOf(b)));
  const max = Math.max(1, ...entries.map(([, c]) => c.migrated + c.derived + c.rejected));
  const W = 360;
  return entries
    .map(([table, c]) => {
      const source = c.migrated + c.derived + c.rejected;
      let x = 0;
      const seg = (field: keyof typeof COLORS, n: number) => {
        const w = (n / max) * W;
        const r = n > 0 ? `<rect x="${x.toFixed(2)}" y="2" width="${Math.max(w, 1).toFixed(2)}" height="16" fill="${COLORS[field]}"><title>${field}: ${fmt(n)}</title></rect>` : '';
        x += w;
        return r;
      };
      const bar = `<svg class="bar" width="${W}" height="20" viewBox="0 0 ${W} 20" role="img" aria-label="${escapeHtml(table)}: ${fmt(c.migrated)} migrated, ${fmt(c.derived)} derived, ${fmt(c.rejected)} rejected of ${fmt(source)}">` +
        `<rect x="0" y="2" width="${W}" height="16" fill="${COLORS.track}"/>${seg('migrated', c.migrated)}${seg('derived', c.derived)}${seg('rejected', c.rejected)}</svg>`;
      return `<tr data-table="${escapeHtml(table)}"><th scope="row">${escapeHtml(table)}</th>` +
        `<td class="n" data-field="source" data-value="${source}">${fmt(source)}</td>` +
        `<td class="n" data-field="migrated" data-value="${c.migrated}">${fmt(c.migrated)}</td>` +
        `<td class="n" data-field="derived" data-value="${c.derived}">${fmt(c.derived)}</td>` +
        `<td class="n" data-field="rejected" data-value="${c.rejected}">${fmt(c.rejected)}</td><td>${bar}</td></tr>`;
    })
    .join('\n');
}

function rejectSection(input: ReportPageInput): string {
  const groups = input.rejectGroups ?? [];
  if (!groups.length) return `<p data-field="reject-total" data-value="${input.rejects.rows}">No rejected rows.</p>`;
  const rows = groups
    .map((g) => {
      const samples = g.samples
        .map((s) => `<li title="${escapeHtml(s.reason)}"><code>key ${escapeHtml(s.sourceKey)}</code> → <code>id ${s.targetId === null ? '–' : s.targetId}</code>: ${escapeHtml(s.reason)}</li>`)
        .join('');
      return `<tr data-reject-group="${escapeHtml(`${g.target}/${g.source}/${g.reason}`)}"><td>${escapeHtml(g.target)}</td><td>${escapeHtml(g.source)}</td>` +
        `<td>${escapeHtml(g.reason)}</td><td class="n" data-field="count" data-value="${g.count}">${fmt(g.count)}</td><td><ul class="samples">${samples}</ul></td></tr>`;
    })
    .join('\n');
  return `<p><span data-field="reject-total" data-value="${input.rejects.rows}">${fmt(input.rejects.rows)}</span> rejected rows in ${groups.length} groups; ` +
    `all of them (without secret columns) in <code>${escapeHtml(input.rejects.key)}</code>, or: <code>tracetrack-migrate rejects --target URL --run-id ${escapeHtml(input.runId)}</code>.</p>` +
    `<table class="grid"><thead><tr><th>target</th><th>source</th><th>reason</th><th class="n">rows</th><th>samples (source key → target id)</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function checksSection(checks: readonly CheckResult[]): string {
  const passed = checks.filter((c) => c.passed).length;
  const rows = checks
    .map((c) => `<tr class="${c.passed ? 'pass' : 'fail'}" data-check="${escapeHtml(c.name)}" data-passed="${c.passed}"><td>${c.passed ? '✔ pass' : '✘ FAIL'}</td><td><code>${escapeHtml(c.name)}</code></td><td>${escapeHtml(c.detail)}</td></tr>`)
    .join('\n');
  return `<p><span data-field="checks-passed" data-value="${passed}">${passed}</span> of <span data-field="checks-total" data-value="${checks.length}">${checks.length}</span> checks passed.</p>` +
    `<table class="grid"><thead><tr><th>result</th><th>check</th><th>detail</th></tr></thead><tbody>${rows}</tbody></table>`;
}

function readinessSection(r: Readiness | null): string {
  if (!r) return '<p>No readiness report (the run was not verified).</p>';
  const users = (list: { id: number; username: string }[]) => list.map((u) => `${u.id} ${escapeHtml(JSON.stringify(u.username))}`).join(', ');
  const ids = (list: number[]) => list.join(', ');
  const item = (key: string, label: string, list: string) =>
    `<tr data-readiness="${key}"><th scope="row">${label}</th><td class="n" data-field="count" data-value="${r.counts[key] ?? 0}">${fmt(r.counts[key] ?? 0)}</td><td class="list">${list || '–'}</td></tr>`;
  return `<table class="grid"><tbody>
${item('usersNeedingPasswordReset', 'users needing a password reset', users(r.usersNeedingPasswordReset))}
${item('usersNotVerified', 'users not verified (cannot log in)', users(r.usersNotVerified))}
${item('dispatchersWithoutArea', 'dispatchers without a dispatch area', users(r.dispatchersWithoutArea))}
${item('bagsWithRejectedParentLink', 'bags whose parent link was rejected', ids(r.bagsWithRejectedParentLink))}
${item('billsWithRejectedBags', 'bills with rejected bags', ids(r.billsWithRejectedBags))}
</tbody></table>`;
}

function timelineSection(entries: TimelineEntry[]): string {
  if (!entries.length) return '<p>No step timings recorded.</p>';
  const total = Math.max(0.001, ...entries.map((e) => e.start + e.seconds));
  const W = 560;
  const L = 150;
  const H = 18;
  const height = entries.length * (H + 4) + 24;
  const bars = entries
    .map((e, i) => {
      const y = i * (H + 4);
      const x = L + (e.start / total) * W;
      const w = Math.max(1, (e.seconds / total) * W);
      return `<g data-step="${escapeHtml(e.step)}" data-seconds="${e.seconds.toFixed(3)}"><text x="${L - 6}" y="${y + 13}" text-anchor="end">${escapeHtml(e.step)}</text>` +
        `<rect x="${x.toFixed(2)}" y="${y}" width="${w.toFixed(2)}" height="${H}" fill="#546e7a"><title>${escapeHtml(e.step)}: ${e.seconds.toFixed(2)} s</title></rect>` +
        `<text x="${(x + w + 4).toFixed(2)}" y="${y + 13}">${e.seconds.toFixed(2)} s</text></g>`;
    })
    .join('\n');
  const axisY = entries.length * (H + 4) + 4;
  return `<svg class="timeline" width="${L + W + 80}" height="${height}" viewBox="0 0 ${L + W + 80} ${height}" role="img" aria-label="Timeline of the run's steps">
${bars}
<line x1="${L}" y1="${axisY}" x2="${L + W}" y2="${axisY}" stroke="#90a4ae"/><text x="${L}" y="${axisY + 16}">0 s</text><text x="${L + W}" y="${axisY + 16}" text-anchor="end">${total.toFixed(1)} s</text>
</svg><p class="note">A step without a duration of its own lasts from the previous step's end: Analyse's bar includes the backup.</p>`;
}

function mappingSection(plan: Plan | null): string {
  if (!plan) return '<p>The plan of this run is not available.</p>';
  const tables = plan.tables
    .map((t) => {
      const sources = t.sources
        .map((s) => {
          const cols = s.columns
            .map((c) => `<tr><td><code>${escapeHtml(c.target)}</code></td><td>${c.source ? `<code>${escapeHtml(c.source)}</code>` : '<em>none</em>'}</td><td>${escapeHtml(c.kind)}${c.ref ? ` → ${escapeHtml(c.ref.target)} (orphan: ${escapeHtml(c.ref.onOrphan)})` : ''}${c.defaultNow ? ', missing → migration time' : ''}${c.constantWhenMissing !== undefined ? `, missing → ${escapeHtml(c.constantWhenMissing)}` : ''}</td></tr>`)
            .join('');
          return `<h4><code>${escapeHtml(plan.sourceSchema)}.${escapeHtml(s.table)}</code> → <code>${escapeHtml(t.target)}</code> <small>(key ${escapeHtml(s.key ?? 'none')}, ${escapeHtml(s.keyStrategy)}, ids ${escapeHtml(s.idStrategy)})</small></h4>` +
            `<table class="grid"><thead><tr><th>target column</th><th>source column</th><th>transform</th></tr></thead><tbody>${cols}</tbody></table>`;
        })
        .join('');
      const derived = t.derivedLinks.map((d) => `<p>links derived from <code>${escapeHtml(d.fromSource)}.${escapeHtml(d.parentColumn)}</code></p>`).join('');
      return `<section class="map" data-target="${escapeHtml(t.target)}"><h3>${escapeHtml(t.target)}${t.merged ? ' <small>(merged sources, ids remapped)</small>' : ''}</h3>${sources}${derived}</section>`;
    })
    .join('\n');
  const decisions = plan.decisions
    .map((d) => `<tr data-decision><td><code>${escapeHtml(d.target)}</code></td><td><code>${escapeHtml(d.source)}</code></td><td>${escapeHtml(d.decision)}</td></tr>`)
    .join('\n');
  const extra = [
    plan.unmappedColumns.length ? `<p>Unmapped columns (in the backup, not migrated): ${plan.unmappedColumns.map((u) => `<code>${escapeHtml(u.table)}</code>: ${u.columns.map(escapeHtml).join(', ')}`).join('; ')}</p>` : '',
    plan.retiredTables.length ? `<p>Retired tables (backed up, not migrated): ${plan.retiredTables.map(escapeHtml).join(', ')}</p>` : '',
    plan.skippedTables.length ? `<p>Skipped tables: ${plan.skippedTables.map(escapeHtml).join(', ')}</p>` : '',
    plan.warnings.length ? `<ul>${plan.warnings.map((w) => `<li>${escapeHtml(w)}</li>`).join('')}</ul>` : '',
  ].join('');
  return `${tables}${extra}<details><summary><span data-field="decisions" data-value="${plan.decisions.length}">${plan.decisions.length}</span> mapping decisions</summary>` +
    `<table class="grid"><thead><tr><th>target</th><th>source</th><th>decision</th></tr></thead><tbody>${decisions}</tbody></table></details>`;
}

const CSS = `body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1100px;padding:0 16px;color:#212121}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #cfd8dc;padding-bottom:4px}h3{font-size:15px;margin:16px 0 4px}h4{font-size:13px;margin:10px 0 4px;font-weight:600}
table{border-collapse:collapse}.grid td,.grid th,#tables td,#tables th{border-bottom:1px solid #eceff1;padding:3px 8px;text-align:left;vertical-align:top}
.n{text-align:right!important;font-variant-numeric:tabular-nums}.status{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.status.completed{background:#2e7d32}.status.other{background:#c62828}tr.fail td{background:#ffebee}tr.pass td:first-child{color:#2e7d32}tr.fail td:first-child{color:#c62828;font-weight:600}
.samples{margin:0;padding-left:16px}#checks+p+table td:first-child{white-space:nowrap}.note{color:#607d8b;font-size:12px}.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:-1px}
svg text{font:12px system-ui,sans-serif;fill:#37474f}code{font-size:12px}.meta td{padding:1px 12px 1px 0}.list{max-width:600px}`;

/** The whole page. */
export function renderReportHtml(input: ReportPageInput, plan: Plan | null): string {
  const statusClass = input.status === 'completed' ? 'completed' : 'other';
  const legend = `<p class="legend"><span style="background:${COLORS.migrated}"></span>migrated<span style="background:${COLORS.derived}"></span>derived<span style="background:${COLORS.rejected}"></span>rejected</p>`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<title>tracetrack-migrate run ${escapeHtml(input.runId)}: ${escapeHtml(input.status)}</title>
<style>${CSS}</style></head>
<body data-run-id="${escapeHtml(input.runId)}" data-status="${escapeHtml(input.status)}">
<h1>Migration run <code>${escapeHtml(input.runId)}</code> <span class="status ${statusClass}">${escapeHtml(input.status)}</span></h1>
<table class="meta"><tbody>
<tr><td>source schema</td><td><code>${escapeHtml(input.sourceSchema)}</code></td><td>target schema</td><td><code>${escapeHtml(input.targetSchema)}</code></td></tr>
<tr><td>migration time</td><td>${escapeHtml(input.runTime)} UTC</td><td>report generated</td><td>${escapeHtml(input.generatedAt)}</td></tr>
</tbody></table>
<h2>Tables</h2>
${legend}
<table id="tables"><thead><tr><th>target table</th><th class="n">source rows</th><th class="n">migrated</th><th class="n">derived</th><th class="n">rejected</th><th></th></tr></thead>
<tbody>
${tableRows(input, plan)}
</tbody></table>
<p class="note">source rows = migrated + derived + rejected (verification proves it per source table).</p>
<h2 id="rejects">Rejected rows</h2>
${rejectSection(input)}
<h2 id="checks">Verification</h2>
${checksSection(input.checks)}
<h2 id="readiness">Application readiness</h2>
${readinessSection(input.readiness)}
<h2 id="timeline">Timeline</h2>
${timelineSection(resolveTimeline(input.steps, plan?.steps ?? []))}
<h2 id="mapping">Mapping</h2>
${mappingSection(plan)}
</body></html>
`;
}
