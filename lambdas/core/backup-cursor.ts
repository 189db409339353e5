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

export function isDecimal(v: unknown): v is string {
  return typeof v === 'string' && /^-?\d{1,20}$/.test(v);
}


const isCount = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
