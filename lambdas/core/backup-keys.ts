import { InputError } from './errors';

/**
 * The backup's layout in S3 (no I/O). Under `<prefix>runs/<runId>/backup/`:
 * - `<table>/part-00001.copy.gz`  one key range of the table: PostgreSQL COPY text format, gzip
 * - `<table>/part-00001.json`     the part record, written only after its data object is complete
 * - `<table>/table.json`          the table record, written after the table's last part
 * - `manifest.json`               written by FinalizeBackup from the records above
 *
 * `<table>` is the table name with every byte outside `[A-Za-z0-9_-]` written as `%XX` (UTF-8),
 * so quotes, spaces, slashes, dots and upper case survive in a key without ambiguity.
 */

export function encodeKeySegment(name: string): string {
  let out = '';
  for (const byte of new TextEncoder().encode(name)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function decodeKeySegment(segment: string): string {
  return decodeURIComponent(segment);
}

export function backupRootKey(prefix: string, runId: string): string {
  return `${prefix}runs/${runId}/backup/`;
}

export function manifestKey(prefix: string, runId: string): string {
  return `${backupRootKey(prefix, runId)}manifest.json`;
}

export function tableDirKey(prefix: string, runId: string, table: string): string {
  return `${backupRootKey(prefix, runId)}${encodeKeySegment(table)}/`;
}

function partStem(part: number): string {
  return `part-${String(part).padStart(5, '0')}`;
}

export function partDataKey(prefix: string, runId: string, table: string, part: number): string {
  return `${tableDirKey(prefix, runId, table)}${partStem(part)}.copy.gz`;
}

export function partRecordKey(prefix: string, runId: string, table: string, part: number): string {
  return `${tableDirKey(prefix, runId, table)}${partStem(part)}.json`;
}

export function tableRecordKey(prefix: string, runId: string, table: string): string {
  return `${tableDirKey(prefix, runId, table)}table.json`;
}

/** `rds_backup_YYYYMMDD_HHMMSS.json` in UTC, the seed tool's name for its single-file JSON backup. */
export function legacyBackupFileName(at: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `rds_backup_${at.getUTCFullYear()}${p(at.getUTCMonth() + 1)}${p(at.getUTCDate())}_${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}.json`;
}

/** Run ids appear in S3 keys and schema names: keep them to a safe alphabet. */
export function assertRunId(runId: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(runId)) {
    throw new InputError(
      `The run id ${JSON.stringify(runId)} is not usable: use 1-63 letters, digits, '_', '-' or '.', starting with a letter or digit (it names S3 keys and a schema).`,
    );
  }
}

