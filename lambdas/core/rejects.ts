import { SECRET_COLUMNS } from './rules';

/**
 * Rejected rows as the operator gets them (`tracetrack-migrate rejects`): filtered, without secret
 * columns (they were stripped when stored; stripped again here, so no older store can leak one), as
 * CSV or JSON lines. Pure.
 */

export interface RejectRow {
  readonly run_id: string;
  readonly target_table: string;
  readonly source_table: string;
  readonly source_key: string;
  readonly reason: string;
  readonly row: Record<string, unknown> | null;
}

export interface RejectFilter {
  readonly table?: string;
  /** A case-insensitive substring of the reason. */
  readonly reason?: string;
}

export type RejectFormat = 'csv' | 'jsonl';

export function withoutSecrets(row: Record<string, unknown> | null): Record<string, unknown> | null {
  if (!row) return null;
  const secret = new Set(SECRET_COLUMNS.map((c) => c.toLowerCase()));
  return Object.fromEntries(Object.entries(row).filter(([k]) => !secret.has(k.toLowerCase())));
}

/** `--table` matches the target or the source table; `--reason` a substring of the reason. */
export function matchesReject(r: Pick<RejectRow, 'target_table' | 'source_table' | 'reason'>, f: RejectFilter): boolean {
  if (f.table && r.target_table !== f.table && r.source_table !== f.table) return false;
  if (f.reason && !r.reason.toLowerCase().includes(f.reason.toLowerCase())) return false;
  return true;
}

const CSV_COLUMNS = ['run_id', 'target_table', 'source_table', 'source_key', 'reason', 'row'] as const;

function csvCell(value: unknown): string {
  const text = value === null || value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function renderRejectsHeader(format: RejectFormat): string {
  return format === 'csv' ? `${CSV_COLUMNS.join(',')}\n` : '';
}

/** One rejected row: a CSV record (RFC 4180; `row` as JSON) or a JSON line. */
export function renderReject(r: RejectRow, format: RejectFormat): string {
  const clean: RejectRow = { ...r, row: withoutSecrets(r.row) };
  if (format === 'jsonl') return `${JSON.stringify(clean)}\n`;
  return `${CSV_COLUMNS.map((c) => csvCell(clean[c])).join(',')}\n`;
}
