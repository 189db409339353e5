/**
 * The backup's records and its manifest (layout: backup-keys.ts): plain data and text, no I/O, each record
 * checked when read. No row data and no secret is ever part of a record or the manifest.
 */
import type { TableInfo } from './catalog';
import { resolveSplitKey, isDecimal } from './backup-cursor';
import { renderCreateTable } from './backup-ddl';
import { BackupError, RestoreError } from './errors';

export const BACKUP_FORMAT_VERSION = 1;

/** Rows per part for tables split by an integer primary key. */
export const DEFAULT_PART_ROWS = 500_000;

/**
 * Session settings under which parts are written with COPY TO and loaded with COPY FROM.
 * Text COPY then round-trips exactly: `\N` is NULL and an empty field is the empty string,
 * tabs/newlines/backslashes are escaped, floats print shortest-exact, bytea prints hex,
 * timestamptz prints with its offset.
 */
export const COPY_SESSION_SETTINGS: Readonly<Record<string, string>> = {
  client_encoding: 'UTF8',
  DateStyle: 'ISO, YMD',
  IntervalStyle: 'postgres',
  TimeZone: 'UTC',
  extra_float_digits: '3',
  bytea_output: 'hex',
};

/** How a table's `sha256` is defined (also stored in the manifest, for whoever checks it by hand). */
export const TABLE_SHA256_DEFINITION =
  "sha256 over the UTF-8 text formed by each part's sha256 (lowercase hex) followed by '\\n', in part order; " +
  "a part's sha256 is over its uncompressed COPY text data";

export interface PartKeyRange {
  /** Exclusive lower bound of the split key (decimal text), or null for "from the start". */
  readonly after: string | null;
  /** Inclusive upper bound (decimal text), or null for "to the end". */
  readonly through: string | null;
}

export interface BackupColumn {
  readonly name: string;
  readonly type: string;
}

/** One finished part: `<table>/part-NNNNN.json`. */
export interface BackupPartRecord {
  readonly formatVersion: number;
  readonly runId: string;
  readonly table: string;
  readonly part: number;
  readonly key: string;
  readonly rows: number;
  /** Uncompressed bytes of COPY text. */
  readonly bytes: number;
  readonly compressedBytes: number;
  /** sha256 (hex) of the part's uncompressed data. */
  readonly sha256: string;
  /** Null when the table has no integer key to split on (then it has exactly one part). */
  readonly keyRange: PartKeyRange | null;
  /** When the part's read transaction started (UTC ISO). */
  readonly readAt: string;
}

/** One finished table: `<table>/table.json`. */
export interface BackupTableRecord {
  readonly formatVersion: number;
  readonly runId: string;
  readonly sourceSchema: string;
  readonly serverVersion: string;
  readonly table: string;
  readonly columns: BackupColumn[];
  readonly primaryKey: string[];
  /** The integer key the parts are ranges of, or null (one part). */
  readonly splitKey: string | null;
  readonly ddl: string;
  readonly parts: number;
  readonly rows: number;
  readonly bytes: number;
  readonly sha256: string;
  /** readAt of the first part. */
  readonly readAt: string;
  readonly completedAt: string;
}

/** A part as the manifest lists it: its record without the bookkeeping. */
export type ManifestPart = Pick<BackupPartRecord, 'key' | 'rows' | 'bytes' | 'compressedBytes' | 'sha256' | 'keyRange'>;

export interface ManifestTable {
  readonly name: string;
  readonly columns: BackupColumn[];
  readonly primaryKey: string[];
  readonly splitKey: string | null;
  /** `CREATE TABLE` for the source schema; `retargetCreateTable` moves it to another schema. */
  readonly ddl: string;
  readonly rows: number;
  readonly bytes: number;
  /** See `TABLE_SHA256_DEFINITION`. */
  readonly sha256: string;
  readonly readAt: string;
  readonly parts: ManifestPart[];
}

export interface BackupManifest {
  readonly formatVersion: number;
  readonly runId: string;
  readonly sourceServerVersion: string;
  readonly sourceSchema: string;
  /** When the backup was complete: the last table's completion (so rewriting the manifest is idempotent). */
  readonly createdAt: string;
  readonly copyFormat: { readonly format: 'text'; readonly compression: 'gzip'; readonly settings: Record<string, string> };
  readonly sha256Definition: string;
  readonly tables: ManifestTable[];
}

// ---------------------------------------------------------------- records and manifest

export function renderJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

type Check = (problems: string[], v: Record<string, unknown>, path: string) => void;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
const isSha = (v: unknown) => typeof v === 'string' && /^[0-9a-f]{64}$/.test(v);
const isIso = (v: unknown) => typeof v === 'string' && !Number.isNaN(Date.parse(v));

function field(problems: string[], v: Record<string, unknown>, path: string, name: string, ok: (x: unknown) => boolean, what: string) {
  if (!ok(v[name])) problems.push(`${path}.${name} must be ${what}`);
}

const checkKeyRange = (x: unknown) =>
  x === null || (isObj(x) && (x.after === null || isDecimal(x.after)) && (x.through === null || isDecimal(x.through)));

const checkColumns = (x: unknown) =>
  Array.isArray(x) && x.every((c) => isObj(c) && typeof c.name === 'string' && typeof c.type === 'string');

const checkStrings = (x: unknown) => Array.isArray(x) && x.every((s) => typeof s === 'string');

const checkPart: Check = (p, v, path) => {
  field(p, v, path, 'key', (x) => typeof x === 'string' && x !== '', 'an S3 key');
  field(p, v, path, 'rows', isCount, 'a count');
  field(p, v, path, 'bytes', isCount, 'a count');
  field(p, v, path, 'compressedBytes', isCount, 'a count');
  field(p, v, path, 'sha256', isSha, 'a sha256 in hex');
  field(p, v, path, 'keyRange', checkKeyRange, 'null or {after, through}');
};

const checkTable: Check = (p, v, path) => {
  field(p, v, path, 'name', (x) => typeof x === 'string' && x !== '', 'a table name');
  field(p, v, path, 'columns', checkColumns, 'a list of {name, type}');
  field(p, v, path, 'primaryKey', checkStrings, 'a list of column names');
  field(p, v, path, 'splitKey', (x) => x === null || typeof x === 'string', 'null or a column name');
  field(p, v, path, 'ddl', (x) => typeof x === 'string' && x.startsWith('CREATE TABLE '), 'a CREATE TABLE statement');
  field(p, v, path, 'rows', isCount, 'a count');
  field(p, v, path, 'bytes', isCount, 'a count');
  field(p, v, path, 'sha256', isSha, 'a sha256 in hex');
  field(p, v, path, 'readAt', isIso, 'an ISO timestamp');
  if (!Array.isArray(v.parts) || v.parts.length === 0) {
    p.push(`${path}.parts must be a non-empty list`);
    return;
  }
  v.parts.forEach((part, i) => (isObj(part) ? checkPart(p, part, `${path}.parts[${i}]`) : p.push(`${path}.parts[${i}] must be an object`)));
  if (p.length) return;
  const parts = v.parts as ManifestPart[];
  if (parts.reduce((s, x) => s + x.rows, 0) !== v.rows) p.push(`${path}.rows is not the sum of its parts' rows`);
  if (parts.reduce((s, x) => s + x.bytes, 0) !== v.bytes) p.push(`${path}.bytes is not the sum of its parts' bytes`);
};

function parseJsonObject(text: string, what: string, fail: (m: string) => Error): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw fail(`${what} is not valid JSON`);
  }
  if (!isObj(value)) throw fail(`${what} is not a JSON object`);
  if (value.formatVersion !== BACKUP_FORMAT_VERSION) {
    throw fail(`${what} has formatVersion ${JSON.stringify(value.formatVersion)}; this tool reads version ${BACKUP_FORMAT_VERSION}`);
  }
  return value;
}

/** Parses and validates a manifest; every problem is listed in one RestoreError. */
export function parseBackupManifest(text: string, where: string): BackupManifest {
  const fail = (m: string) =>
    new RestoreError(`The backup manifest ${where} cannot be used: ${m}. Restore from another run's backup (or rerun FinalizeBackup for this run).`);
  const v = parseJsonObject(text, 'it', fail);
  const problems: string[] = [];
  field(problems, v, 'manifest', 'runId', (x) => typeof x === 'string' && x !== '', 'a run id');
  field(problems, v, 'manifest', 'sourceServerVersion', (x) => typeof x === 'string', 'a string');
  field(problems, v, 'manifest', 'sourceSchema', (x) => typeof x === 'string' && x !== '', 'a schema name');
  field(problems, v, 'manifest', 'createdAt', isIso, 'an ISO timestamp');
  field(problems, v, 'manifest', 'copyFormat', (x) => isObj(x) && x.format === 'text' && x.compression === 'gzip' && isObj(x.settings), "{format: 'text', compression: 'gzip', settings}");
  if (!Array.isArray(v.tables)) problems.push('manifest.tables must be a list');
  else v.tables.forEach((t, i) => (isObj(t) ? checkTable(problems, t, `manifest.tables[${i}]`) : problems.push(`manifest.tables[${i}] must be an object`)));
  if (problems.length) throw fail(problems.join('; '));
  return v as unknown as BackupManifest;
}

export function parsePartRecord(text: string, key: string): BackupPartRecord {
  const fail = (m: string) =>
    new BackupError(`The part record ${key} cannot be used: ${m}. Delete it and its .copy.gz object, then rerun BackupTable for the table.`);
  const v = parseJsonObject(text, 'it', fail);
  const problems: string[] = [];
  checkPart(problems, v, 'part');
  field(problems, v, 'part', 'table', (x) => typeof x === 'string', 'a table name');
  field(problems, v, 'part', 'part', (x) => Number.isSafeInteger(x) && (x as number) >= 1, 'a part number');
  field(problems, v, 'part', 'readAt', isIso, 'an ISO timestamp');
  if (problems.length) throw fail(problems.join('; '));
  return v as unknown as BackupPartRecord;
}

export function parseTableRecord(text: string, key: string): BackupTableRecord {
  const fail = (m: string) =>
    new BackupError(`The table record ${key} cannot be used: ${m}. Delete it, then rerun BackupTable for the table.`);
  const v = parseJsonObject(text, 'it', fail);
  const problems: string[] = [];
  field(problems, v, 'table', 'table', (x) => typeof x === 'string' && x !== '', 'a table name');
  field(problems, v, 'table', 'sourceSchema', (x) => typeof x === 'string', 'a schema name');
  field(problems, v, 'table', 'serverVersion', (x) => typeof x === 'string', 'a string');
  field(problems, v, 'table', 'columns', checkColumns, 'a list of {name, type}');
  field(problems, v, 'table', 'parts', (x) => Number.isSafeInteger(x) && (x as number) >= 1, 'a part count');
  field(problems, v, 'table', 'rows', isCount, 'a count');
  field(problems, v, 'table', 'sha256', isSha, 'a sha256 in hex');
  field(problems, v, 'table', 'completedAt', isIso, 'an ISO timestamp');
  if (problems.length) throw fail(problems.join('; '));
  return v as unknown as BackupTableRecord;
}

/** Builds the table record once its parts are complete (the hash is given by the caller: see `TABLE_SHA256_DEFINITION`). */
export function buildTableRecord(input: {
  runId: string;
  table: TableInfo;
  serverVersion: string;
  parts: BackupPartRecord[];
  tableSha256: string;
  completedAt: string;
}): BackupTableRecord {
  const { table, parts } = input;
  return {
    formatVersion: BACKUP_FORMAT_VERSION,
    runId: input.runId,
    sourceSchema: table.schema,
    serverVersion: input.serverVersion,
    table: table.name,
    columns: [...table.columns].sort((a, b) => a.ordinal - b.ordinal).map((c) => ({ name: c.name, type: c.dataType })),
    primaryKey: [...table.primaryKey],
    splitKey: resolveSplitKey(table),
    ddl: renderCreateTable(table, table.schema),
    parts: parts.length,
    rows: parts.reduce((s, p) => s + p.rows, 0),
    bytes: parts.reduce((s, p) => s + p.bytes, 0),
    sha256: input.tableSha256,
    readAt: parts[0]?.readAt ?? input.completedAt,
    completedAt: input.completedAt,
  };
}

/**
 * The manifest from the table records and their part records. Refuses (listing every problem)
 * when a table expected by the caller has no table record, or a table's parts are not 1..n.
 */
export function buildManifest(input: {
  runId: string;
  tables: BackupTableRecord[];
  parts: ReadonlyMap<string, BackupPartRecord[]>;
  expectedTables?: readonly string[];
  /** sha256 (hex) of a UTF-8 text: core has no crypto, the I/O layer passes node's. */
  sha256Hex: (text: string) => string;
}): BackupManifest {
  const problems: string[] = [];
  const byName = new Map(input.tables.map((t) => [t.table, t]));
  for (const name of input.expectedTables ?? []) {
    if (!byName.has(name)) problems.push(`table ${JSON.stringify(name)} has not finished its backup (no table record)`);
  }
  const schemas = new Set(input.tables.map((t) => t.sourceSchema));
  if (schemas.size > 1) problems.push(`the table records name several source schemas (${[...schemas].join(', ')})`);
  const tables: ManifestTable[] = [];
  for (const record of [...input.tables].sort((a, b) => (a.table < b.table ? -1 : a.table > b.table ? 1 : 0))) {
    const parts = [...(input.parts.get(record.table) ?? [])].sort((a, b) => a.part - b.part);
    const numbers = parts.map((p) => p.part).join(',');
    const expected = Array.from({ length: record.parts }, (_, i) => i + 1).join(',');
    if (numbers !== expected) {
      problems.push(`table ${JSON.stringify(record.table)} should have parts ${expected} but S3 holds part records ${numbers || 'none'}`);
      continue;
    }
    if (input.sha256Hex(tableSha256Input(parts.map((p) => p.sha256))) !== record.sha256) {
      problems.push(`table ${JSON.stringify(record.table)}: its part records do not add up to the table record's sha256`);
      continue;
    }
    tables.push({
      name: record.table,
      columns: record.columns,
      primaryKey: record.primaryKey,
      splitKey: record.splitKey,
      ddl: record.ddl,
      rows: record.rows,
      bytes: record.bytes,
      sha256: record.sha256,
      readAt: record.readAt,
      parts: parts.map((p) => ({
        key: p.key,
        rows: p.rows,
        bytes: p.bytes,
        compressedBytes: p.compressedBytes,
        sha256: p.sha256,
        keyRange: p.keyRange,
      })),
    });
  }
  if (problems.length) {
    throw new BackupError(
      `FinalizeBackup for run ${input.runId} cannot write the manifest: ${problems.join('; ')}. Rerun BackupTable for the named tables (finished parts are kept), then FinalizeBackup.`,
    );
  }
  const first = input.tables[0];
  return {
    formatVersion: BACKUP_FORMAT_VERSION,
    runId: input.runId,
    sourceServerVersion: first?.serverVersion ?? '',
    sourceSchema: first?.sourceSchema ?? '',
    createdAt: input.tables.map((t) => t.completedAt).sort().at(-1) ?? new Date(0).toISOString(),
    copyFormat: { format: 'text', compression: 'gzip', settings: { ...COPY_SESSION_SETTINGS } },
    sha256Definition: TABLE_SHA256_DEFINITION,
    tables,
  };
}

/**
 * The text hashed for a table's sha256 (see `TABLE_SHA256_DEFINITION`); the caller hashes it
 * (core has no crypto). One definition for backup, finalize and restore.
 */
export function tableSha256Input(partSha256s: readonly string[]): string {
  return partSha256s.map((s) => `${s}\n`).join('');
}
