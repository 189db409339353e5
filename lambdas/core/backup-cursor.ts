import { INTEGER_TYPES, type TableInfo } from './catalog';
import { InputError } from './errors';

/** Where a table's backup goes on: the key it is split on, and the cursor BackupTable returns between invocations. */

/** The single-column integer primary key the table is split on, or null (the table is one part). */
export function resolveSplitKey(table: TableInfo): string | null {
  if (table.primaryKey.length !== 1) return null;
  const column = table.columns.find((c) => c.name === table.primaryKey[0]);
  return column && INTEGER_TYPES.includes(column.udtName) ? column.name : null;
}

export interface BackupCursor {
  /** The next part to write. */
  readonly part: number;
  /** Exclusive lower key bound of that part (null: from the start). */
  readonly after: string | null;
  /** Rows in the parts before it. */
  readonly rows: number;
}

export function renderBackupCursor(cursor: BackupCursor): string {
  return JSON.stringify({ v: 1, part: cursor.part, after: cursor.after, rows: cursor.rows });
}

export function parseBackupCursor(text: string | null, table: string): BackupCursor {
  if (text === null || text === '') return { part: 1, after: null, rows: 0 };
  try {
    const v = JSON.parse(text) as { v?: unknown; part?: unknown; after?: unknown; rows?: unknown };
    if (v.v === 1 && Number.isSafeInteger(v.part) && (v.part as number) >= 1 && (v.after === null || isDecimal(v.after)) && isCount(v.rows)) {
      return { part: v.part as number, after: v.after as string | null, rows: v.rows as number };
    }
  } catch {
    // reported below
  }
  throw new InputError(
    `The backup cursor for table ${JSON.stringify(table)} is not one BackupTable returned. Pass the cursor of the previous result, or null to start the table over (finished parts are kept).`,
  );
}

/** What {@link denseKeyThrough} needs to know of a table's split key: its bounds and the catalog's row estimate (-1: never counted). */
export interface KeyStats {
  readonly min: string | null;
  readonly max: string | null;
  readonly rows: number;
}

/**
 * A part's upper bound without counting rows, where the split key is dense: when the key's span is at
 * most twice the estimated rows, a range `partRows × span / rows` wide holds about `partRows` rows and,
 * the key being unique, never more than its width (≤ 2 × partRows). Null: the part is the last (it
 * reaches past the largest key). Undefined: the key is too sparse (or the table never counted) — the
 * caller counts `partRows` keys instead. Any bound is correct (the parts chain); this one costs no scan.
 */
export function denseKeyThrough(after: string | null, keys: KeyStats, partRows: number): string | null | undefined {
  if (keys.min === null || keys.max === null) return null;
  if (!(keys.rows >= 1)) return undefined;
  const min = BigInt(keys.min);
  const max = BigInt(keys.max);
  const span = max - min + 1n;
  const rows = BigInt(Math.ceil(keys.rows));
  if (span > 2n * rows) return undefined;
  const width = (BigInt(partRows) * span) / rows;
  const lower = after === null ? min - 1n : BigInt(after);
  const through = lower + (width > 0n ? width : 1n);
  return through >= max ? null : String(through);
}

export function isDecimal(v: unknown): v is string {
  return typeof v === 'string' && /^-?\d{1,20}$/.test(v);
}


const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
