import { DERIVED_COLUMNS, type TargetTable } from './rules';
import type { CheckResult, Readiness } from './verify';

/**
 * The checks over whole target tables (orphans, derived summaries, passwords and the user readiness lists) as
 * partial results over ranges of target ids (issue 15): each chunk counts what its id range holds and keeps the
 * first few ids; the partial results add up, in id order, to what one pass over the table found, and the checks
 * are rendered from the sum — with the single pass's names and messages.
 */

const SAMPLE = 5;
const PASSWORD_SAMPLE = 3;
export const READINESS_LIST_LIMIT = 200;

/** The first `n` of two id-ordered lists of things with an id, in id order (chunks and items may come in any order). */
function firstById<T>(a: readonly T[], b: readonly T[], n: number, idOf: (x: T) => number): T[] {
  return [...a, ...b].sort((x, y) => idOf(x) - idOf(y)).slice(0, n);
}

// ---------------------------------------------------------------- orphans

/** One reference of a target table: rows whose reference resolves to nothing, and the first ids. `orphans:scan.bag`: scans naming no bag. */
export interface OrphanCount {
  readonly name: string;
  readonly table: TargetTable;
  readonly column: string | null;
  readonly ref: TargetTable | null;
  readonly n: number;
  readonly sample: number[];
}

export function mergeOrphans(a: readonly OrphanCount[], b: readonly OrphanCount[]): OrphanCount[] {
  const out = a.map((x) => ({ ...x, sample: [...x.sample] }));
  for (const y of b) {
    const i = out.findIndex((x) => x.name === y.name);
    if (i < 0) out.push({ ...y, sample: [...y.sample] });
    else out[i] = { ...out[i]!, n: out[i]!.n + y.n, sample: firstById(out[i]!.sample, y.sample, SAMPLE, (v) => v) };
  }
  return out;
}

export function renderOrphanCheck(c: OrphanCount): CheckResult {
  if (c.column === null) {
    return { name: c.name, passed: c.n === 0, detail: c.n === 0 ? 'every scan references at least one bag' : `${c.n} scans reference no bag` };
  }
  return {
    name: c.name,
    passed: c.n === 0,
    detail: c.n === 0 ? `every ${c.table}.${c.column} resolves to a ${c.ref}` : `${c.n} ${c.table} rows reference a missing ${c.ref} (ids ${c.sample.join(', ')})`,
  };
}

// ---------------------------------------------------------------- derived summaries

/** One derived column's computed (or copied) rows in an id range that differ from the application's rule. */
export interface SummaryCount {
  readonly key: string;
  readonly which: 'computed' | 'copied';
  readonly n: number;
  readonly sample: { id: number; stored: string | null; derived: string | null }[];
}

export function mergeSummaries(a: readonly SummaryCount[], b: readonly SummaryCount[]): SummaryCount[] {
  const out = [...a];
  for (const y of b) {
    const i = out.findIndex((x) => x.key === y.key && x.which === y.which);
    if (i < 0) out.push(y);
    else out[i] = { ...out[i]!, n: out[i]!.n + y.n, sample: firstById(out[i]!.sample, y.sample, SAMPLE, (v) => v.id) };
  }
  return out;
}

/** The `derived:<key>` checks (computed rows) and the readiness report's disagreeing copied summaries, in the given key order. */
export function renderSummaries(counts: readonly SummaryCount[], order: readonly string[]): { checks: CheckResult[]; disagreeing: Readiness['summariesDisagreeing'] } {
  const checks: CheckResult[] = [];
  const disagreeing: Record<string, { count: number; sample: { id: number; stored: string | null; derived: string | null }[] }> = {};
  for (const key of order) {
    const rule = DERIVED_COLUMNS[key]!.rule;
    const computed = counts.find((c) => c.key === key && c.which === 'computed');
    if (computed) {
      checks.push({
        name: `derived:${key}`,
        passed: computed.n === 0,
        detail: computed.n === 0
          ? `every computed ${key} follows the application's rule: ${rule}`
          : `${computed.n} rows differ from the rule (${rule}), e.g. ids ${computed.sample.map((s) => s.id).join(', ')}: run the finalize step again`,
      });
    }
    const copied = counts.find((c) => c.key === key && c.which === 'copied');
    if (copied) disagreeing[key] = { count: copied.n, sample: copied.sample };
  }
  return { checks, disagreeing };
}

// ---------------------------------------------------------------- users

/** Per user source with legacy plaintext passwords: users still holding it, users rehashed, and the first rehashed ids. */
export interface PasswordSourceCount {
  readonly table: string;
  readonly leaked: number;
  readonly rehashed: number;
  /** The first three rehashed users of the item (target ids), each checked with werkzeug: the sum keeps the first three of all. */
  readonly sample: { id: number; accepted: boolean }[];
}

type UserList = { id: number; username: string }[];

/** What an id range of the target's users holds (passwords and the login readiness lists). */
export interface UserCounts {
  readonly hashed: number;
  readonly needReset: number;
  readonly sources: PasswordSourceCount[];
  readonly lists: { readonly usersNeedingPasswordReset: UserList; readonly usersNotVerified: UserList; readonly dispatchersWithoutArea: UserList };
  readonly counts: { readonly usersNeedingPasswordReset: number; readonly usersNotVerified: number; readonly dispatchersWithoutArea: number };
}

export const EMPTY_USER_COUNTS: UserCounts = {
  hashed: 0, needReset: 0, sources: [],
  lists: { usersNeedingPasswordReset: [], usersNotVerified: [], dispatchersWithoutArea: [] },
  counts: { usersNeedingPasswordReset: 0, usersNotVerified: 0, dispatchersWithoutArea: 0 },
};

/** How many rehashed users of each source are checked with werkzeug: the first ones by id. */
export const PASSWORD_SAMPLE_SIZE = PASSWORD_SAMPLE;

export function mergeUsers(a: UserCounts, b: UserCounts): UserCounts {
  const sources = a.sources.map((s) => ({ ...s }));
  for (const y of b.sources) {
    const i = sources.findIndex((s) => s.table === y.table);
    if (i < 0) sources.push({ ...y });
    else sources[i] = { table: y.table, leaked: sources[i]!.leaked + y.leaked, rehashed: sources[i]!.rehashed + y.rehashed, sample: firstById(sources[i]!.sample, y.sample, PASSWORD_SAMPLE, (v) => v.id) };
  }
  const list = (k: keyof UserCounts['lists']) => firstById(a.lists[k], b.lists[k], READINESS_LIST_LIMIT, (v) => v.id);
  const count = (k: keyof UserCounts['counts']) => a.counts[k] + b.counts[k];
  return {
    hashed: a.hashed + b.hashed, needReset: a.needReset + b.needReset, sources,
    lists: { usersNeedingPasswordReset: list('usersNeedingPasswordReset'), usersNotVerified: list('usersNotVerified'), dispatchersWithoutArea: list('dispatchersWithoutArea') },
    counts: { usersNeedingPasswordReset: count('usersNeedingPasswordReset'), usersNotVerified: count('usersNotVerified'), dispatchersWithoutArea: count('dispatchersWithoutArea') },
  };
}

/** The `passwords` check from the users' sum (its plaintext sources in plan order: every chunk lists them so). */
export function renderPasswordCheck(u: UserCounts): CheckResult {
  const problems: string[] = [];
  let rehashed = 0;
  for (const s of u.sources) {
    rehashed += s.rehashed;
    if (s.leaked) problems.push(`${s.leaked} users of ${s.table} hold their legacy plaintext password`);
    for (const x of s.sample) if (!x.accepted) problems.push(`user ${x.id}: the new hash does not accept the legacy password`);
  }
  const data = { hashed: u.hashed, needReset: u.needReset, rehashed };
  return {
    name: 'passwords',
    passed: problems.length === 0,
    detail: problems.length
      ? problems.join('; ')
      : `${data.hashed} users have a checkable hash (${rehashed} rehashed from legacy plaintext, sample verified); ${data.needReset} need a password reset; no plaintext left`,
    data,
  };
}
