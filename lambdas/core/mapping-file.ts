import { MappingError } from './errors';
import { COLUMN_RULES, isTargetTable, TARGET_TABLES, type TargetTable } from './rules';

/**
 * A user mapping file: overrides or extends the built-in rules. Untrusted until parsed;
 * every problem is reported at once.
 *
 * {
 *   "tables":     { "legacy_sacks": "bag" },                 // extra source table → target table
 *   "columns":    { "bag": { "qr_id": ["barcode"] } },       // aliases tried BEFORE the built-in ones
 *   "references": { "scans.bag_id": "bags" },                 // which source table a reference points at
 *   "skipTables": ["tmp_import"]                              // left out of the analysis (still backed up)
 * }
 */
export interface MappingOverrides {
  readonly tables: Readonly<Record<string, TargetTable>>;
  readonly columns: Readonly<Partial<Record<TargetTable, Readonly<Record<string, readonly string[]>>>>>;
  readonly references: Readonly<Record<string, string>>;
  readonly skipTables: readonly string[];
}

export const EMPTY_OVERRIDES: MappingOverrides = { tables: {}, columns: {}, references: {}, skipTables: [] };

const KNOWN_KEYS = ['tables', 'columns', 'references', 'skipTables', '$schema', 'comment'];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Parses and validates a mapping file's text. Throws one MappingError listing every problem. */
export function parseMappingFile(text: string, label = 'mapping file'): MappingOverrides {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new MappingError(`The ${label} is not valid JSON: ${(err as Error).message}. Fix the file and run again.`);
  }
  return resolveMappingOverrides(raw, label);
}

export function resolveMappingOverrides(raw: unknown, label = 'mapping file'): MappingOverrides {
  const problems: string[] = [];
  if (!isPlainObject(raw)) {
    throw new MappingError(`The ${label} must be a JSON object with "tables", "columns", "references" and/or "skipTables".`);
  }
  for (const key of Object.keys(raw)) {
    if (!KNOWN_KEYS.includes(key)) problems.push(`unknown key "${key}" (allowed: tables, columns, references, skipTables)`);
  }

  const tables: Record<string, TargetTable> = {};
  if (raw.tables !== undefined) {
    if (!isPlainObject(raw.tables)) problems.push('"tables" must be an object { "<source table>": "<target table>" }');
    else
      for (const [source, target] of Object.entries(raw.tables)) {
        if (typeof target !== 'string' || !isTargetTable(target)) {
          problems.push(`tables["${source}"]: "${String(target)}" is not a target table (one of ${TARGET_TABLES.join(', ')})`);
        } else tables[source] = target;
      }
  }

  const columns: Partial<Record<TargetTable, Record<string, string[]>>> = {};
  if (raw.columns !== undefined) {
    if (!isPlainObject(raw.columns)) problems.push('"columns" must be an object { "<target table>": { "<target column>": ["<source column>", ...] } }');
    else
      for (const [target, cols] of Object.entries(raw.columns)) {
        if (!isTargetTable(target)) {
          problems.push(`columns["${target}"]: not a target table (one of ${TARGET_TABLES.join(', ')})`);
          continue;
        }
        if (!isPlainObject(cols)) {
          problems.push(`columns["${target}"] must be an object { "<target column>": ["<source column>", ...] }`);
          continue;
        }
        const known = COLUMN_RULES[target].map((r) => r.target);
        const out: Record<string, string[]> = {};
        for (const [col, aliases] of Object.entries(cols)) {
          if (!known.includes(col)) {
            problems.push(`columns["${target}"]["${col}"]: ${target} has no column "${col}" (columns: ${known.join(', ')})`);
            continue;
          }
          const list = typeof aliases === 'string' ? [aliases] : aliases;
          if (!Array.isArray(list) || list.length === 0 || list.some((a) => typeof a !== 'string' || a === '')) {
            problems.push(`columns["${target}"]["${col}"] must be a non-empty list of source column names`);
            continue;
          }
          out[col] = list as string[];
        }
        columns[target] = out;
      }
  }

  const references: Record<string, string> = {};
  if (raw.references !== undefined) {
    if (!isPlainObject(raw.references)) problems.push('"references" must be an object { "<source table>.<column>": "<referenced source table>" }');
    else
      for (const [key, value] of Object.entries(raw.references)) {
        if (!/^[^.]+\.[^.]+$/.test(key)) problems.push(`references["${key}"]: the key must be "<source table>.<column>"`);
        else if (typeof value !== 'string' || value === '') problems.push(`references["${key}"] must name a source table`);
        else references[key] = value;
      }
  }

  let skipTables: string[] = [];
  if (raw.skipTables !== undefined) {
    if (!Array.isArray(raw.skipTables) || raw.skipTables.some((t) => typeof t !== 'string')) {
      problems.push('"skipTables" must be a list of table names');
    } else skipTables = raw.skipTables as string[];
  }

  if (problems.length) {
    throw new MappingError(
      `The ${label} has ${problems.length} problem${problems.length > 1 ? 's' : ''}:\n${problems.map((p) => `  - ${p}`).join('\n')}\nFix them and run again.`,
    );
  }
  return { tables, columns, references, skipTables };
}
