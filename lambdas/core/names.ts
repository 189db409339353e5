/**
 * Names as the analysis compares them. PostgreSQL keeps a quoted name's case and style, and ORMs and
 * hand-written schemas produce `qrCode`, `QR_Code`, `PromotionRequest` as readily as `qr_code`: all
 * of those are one name here. Folding keeps letters and digits, lower-cased:
 *
 * | name               | folded             |
 * |--------------------|--------------------|
 * | `qr_code`          | `qrcode`           |
 * | `qrCode`, `QR_Code`| `qrcode`           |
 * | `PromotionRequest` | `promotionrequest` |
 * | `promotion_request`| `promotionrequest` |
 * | `created-at`       | `createdat`        |
 */
export function foldName(name: string): string {
  return name.normalize('NFKC').toLowerCase().replace(/[^\p{L}\p{N}]/gu, '');
}

export function sameName(a: string, b: string): boolean {
  return foldName(a) === foldName(b);
}

/** What looking a name up among others found. */
export type NameMatch<T> =
  | { readonly kind: 'none' }
  | { readonly kind: 'exact'; readonly item: T }
  /** Found under another case or style (a decision to report). */
  | { readonly kind: 'folded'; readonly item: T }
  /** Two or more items fold to the name: nobody can tell which one is meant. */
  | { readonly kind: 'ambiguous'; readonly items: readonly T[] };

export function matchName<T>(items: readonly T[], wanted: string, nameOf: (item: T) => string): NameMatch<T> {
  const folded = foldName(wanted);
  const found = items.filter((i) => foldName(nameOf(i)) === folded);
  if (found.length === 0) return { kind: 'none' };
  if (found.length > 1) return { kind: 'ambiguous', items: found };
  const item = found[0]!;
  return nameOf(item) === wanted ? { kind: 'exact', item } : { kind: 'folded', item };
}

/** The first alias present among `items` (first match wins), with how it matched. */
export function matchFirstAlias<T>(
  items: readonly T[],
  aliases: readonly string[],
  nameOf: (item: T) => string,
): { readonly alias: string; readonly match: Exclude<NameMatch<T>, { kind: 'none' }> } | null {
  for (const alias of aliases) {
    const match = matchName(items, alias, nameOf);
    if (match.kind !== 'none') return { alias, match };
  }
  return null;
}
