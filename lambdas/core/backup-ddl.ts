import type { ColumnInfo, TableInfo } from './catalog';
import { RestoreError } from './errors';
import { escapeIdentifier, qualified } from './sql/ident';

/** The DDL of a backed-up table, as the manifest records it; restore and the cross-database staging create tables from it. */

const SEQUENCE_DEFAULT = /\bnextval\s*\(/i;

/**
 * `CREATE TABLE "schema"."table" (...)` with the columns' types, NOT NULL and the primary key.
 * Defaults that draw from a sequence are left out (the restored table must not depend on the
 * source's sequences, and its rows carry their ids); foreign keys are left out (tables are restored
 * one by one, in any order).
 */
export function renderCreateTable(table: TableInfo, targetSchema: string): string {
  const columns = [...table.columns].sort((a, b) => a.ordinal - b.ordinal).map(renderColumn);
  if (table.primaryKey.length) {
    columns.push(`PRIMARY KEY (${table.primaryKey.map(escapeIdentifier).join(', ')})`);
  }
  return `${createTablePrefix(targetSchema, table.name)}\n  ${columns.join(',\n  ')}\n)`;
}

function renderColumn(column: ColumnInfo): string {
  let text = `${escapeIdentifier(column.name)} ${column.dataType}`;
  if (column.defaultExpr !== null && !SEQUENCE_DEFAULT.test(column.defaultExpr)) text += ` DEFAULT ${column.defaultExpr}`;
  if (!column.nullable) text += ' NOT NULL';
  return text;
}

function createTablePrefix(schema: string, table: string): string {
  return `CREATE TABLE ${qualified(schema, table)} (`;
}

/** The manifest's DDL (rendered for `fromSchema`) for another schema; refuses text it did not render. */
export function retargetCreateTable(ddl: string, table: string, fromSchema: string, toSchema: string): string {
  const from = createTablePrefix(fromSchema, table);
  if (!ddl.startsWith(from)) {
    throw new RestoreError(
      `The manifest's DDL for table ${JSON.stringify(table)} does not start with ${from}; the manifest was edited or written by another tool. Restore from another run's backup.`,
    );
  }
  return createTablePrefix(toSchema, table) + ddl.slice(from.length);
}

