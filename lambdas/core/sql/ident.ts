/**
 * Quoting for names and our own literal texts. Same algorithm as pg's `escapeIdentifier` /
 * `escapeLiteral` (kept here so the core stays free of the driver). Values from rows never go
 * through these: they are always query parameters.
 */
export function escapeIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function escapeLiteral(text: string): string {
  let hasBackslash = false;
  let escaped = "'";
  for (const c of text) {
    if (c === "'") escaped += "''";
    else if (c === '\\') {
      escaped += '\\\\';
      hasBackslash = true;
    } else escaped += c;
  }
  escaped += "'";
  return hasBackslash ? ` E${escaped}` : escaped;
}

/** `"schema"."table"`. */
export function qualified(schema: string, table: string): string {
  return `${escapeIdentifier(schema)}.${escapeIdentifier(table)}`;
}

/** A query built by the core: text with $n placeholders and its values. */
export interface SqlQuery {
  readonly text: string;
  readonly values: unknown[];
}

/** Collects parameter values while a query is rendered; `add` returns the placeholder. */
export class Params {
  readonly values: unknown[] = [];
  private readonly byName = new Map<string, string>();
  add(value: unknown, cast?: string): string {
    this.values.push(value);
    return cast ? `$${this.values.length}::${cast}` : `$${this.values.length}`;
  }
  /** A value bound once under a name (the run time): every use refers to the same placeholder. */
  named(name: string, value: unknown, cast?: string): string {
    const existing = this.byName.get(name);
    if (existing) return existing;
    const placeholder = this.add(value, cast);
    this.byName.set(name, placeholder);
    return placeholder;
  }
}
