import type { ColumnMapping, DerivedLinkPlan, SourcePlan, TablePlan } from '../plan';
import { SECRET_COLUMNS, UNIQUE_KEYS, type TargetTable } from '../rules';
import { CHECKSUM_TARGET_ROW, TRANSFORMS, type PasswordHashes } from '../transforms';
import { escapeIdentifier as id, escapeLiteral as lit, Params, qualified, type SqlQuery } from './ident';
import { asBigint, inTargetTerms, keyExpr, offsetOf, plus, runTimeParam, targetIdExpr, timestampExpr, type MappingContext } from './values';

export type { MappingContext } from './values';
export type { PasswordHashes } from '../transforms';
export { foldedQrExpr, targetIdExpr } from './values';

/**
 * SQL builders for the set-based migration: one mapping SELECT per source table (the transforms
 * expressed in SQL, so no row passes through Node), used both to load a batch and, unchanged,
 * to compute the source side of the content checksums.
 *
 * Shape of a mapping SELECT (level 1 reads and transforms, level 2 collects the reasons):
 *   SELECT q.*, COALESCE(q._p1, q._p2, …) AS _reject FROM (
 *     SELECT <key> AS _key, <target id> AS id, <value> AS "col", …, <problem> AS _p1, …
 *     FROM source s LEFT JOIN … WHERE <key range> OFFSET 0) q OFFSET 0
 * `OFFSET 0` keeps level 1 a subquery of its own: flattened into level 2, every value expression
 * (a regex, a timestamp parse, a lookup subquery) was computed again for each problem that names it.
 * The second keeps level 2 one too: flattened into a query that names `_reject` several times (Verify's
 * aggregates filter on it three times), the reasons were computed for each (a bag range: 1.04 s, 0.85 s fenced).
 */

export interface KeyRange {
  /** Exclusive lower bound (null: from the start). */
  readonly lo: number | null;
  /** Inclusive upper bound (null: to the end). */
  readonly hi: number | null;
}

/** An explicit set of source keys (catch-up re-derives the keys the capture logged). */
export interface KeySet {
  readonly keys: readonly number[];
}

/** The rows a mapping reads: a key range, a key set, or (null) the whole table. */
export type KeySelection = KeyRange | KeySet;

export function isKeySet(k: KeySelection | null): k is KeySet {
  return k !== null && 'keys' in k;
}

interface Built {
  readonly level1: string[];
  readonly problems: string[];
  readonly joins: string[];
  readonly where: string[];
  readonly outputColumns: string[];
}

/**
 * The key a rejected row is stored under (`_migration_reject.source_key`). A table without a primary key
 * may hold rows without an id or with an id shared by several rows: those are told apart by their
 * position in the row-text order among the rows with the same id (`7#1`, `7#2`, `NULL#1`).
 */
function rejectKeyExpr(source: SourcePlan): string {
  if (source.keyStrategy !== 'id-column') return `(${keyExpr(source)})::text`;
  const k = `s.${id(source.key!)}`;
  return `CASE WHEN ${k} IS NULL OR count(*) OVER (PARTITION BY ${k}) > 1
               THEN COALESCE(${k}::text, 'NULL') || '#' || row_number() OVER (PARTITION BY ${k} ORDER BY s::text)
               ELSE ${k}::text END`;
}

/** Level-1 columns and the problem that reject rows without an id or with a shared one (tables without a primary key). */
function addIdProblems(source: SourcePlan, b: Built): void {
  if (source.keyStrategy !== 'id-column') return;
  const k = `s.${id(source.key!)}`;
  b.level1.push(`count(*) OVER (PARTITION BY ${k}) AS _idn`);
  b.problems.push(`CASE WHEN _key IS NULL THEN ${lit(`${source.key} is NULL (a row without an id)`)} WHEN _idn > 1 THEN ${lit(`duplicate ${source.key} `)} || _key::text || ' (' || _idn::text || ' rows)' END`);
}

/** FROM clause: keyless tables get a stable row number (ordered by the whole row's text). */
function fromClause(source: SourcePlan, ctx: MappingContext): string {
  const table = qualified(ctx.sourceSchema, source.table);
  if (source.key) return `${table} s`;
  return `(SELECT t.*, row_number() OVER (ORDER BY t::text) AS _rownum FROM ${table} t) s`;
}

/**
 * FROM clause of the rows that can migrate as far as their id goes: in a table without a primary key,
 * rows without an id or sharing one are rejected, so `prepare` leaves them out of QR folding and roles.
 */
function rowsWithUsableIdFrom(source: SourcePlan, ctx: MappingContext): string {
  if (source.keyStrategy !== 'id-column') return fromClause(source, ctx);
  const k = id(source.key!);
  return `(SELECT u.* FROM (SELECT t.*, count(*) OVER (PARTITION BY t.${k}) AS _idn FROM ${qualified(ctx.sourceSchema, source.table)} t) u
            WHERE u._idn = 1 AND u.${k} IS NOT NULL) s`;
}

/**
 * A key range as SQL. The first range of a table without a primary key also holds its rows without an id
 * (they sort nowhere), so that they are read, and rejected, exactly once.
 */
export function rangeWhere(source: SourcePlan, range: KeySelection | null, params: Params): string[] {
  if (!source.key || !range) return [];
  const k = `s.${id(source.key)}`;
  if (isKeySet(range)) return [`${k} = ANY(${params.add(range.keys, 'bigint[]')})`];
  const out: string[] = [];
  if (range.lo !== null) out.push(`${k} > ${params.add(range.lo, 'bigint')}`);
  if (range.hi !== null) {
    const upper = `${k} <= ${params.add(range.hi, 'bigint')}`;
    out.push(range.lo === null && source.keyStrategy === 'id-column' ? `(${upper} OR ${k} IS NULL)` : upper);
  }
  return out;
}

/** Builds the level-1 value (and its problems) of one column, by its kind's transform (transforms.ts). */
function buildColumn(m: ColumnMapping, table: TablePlan, source: SourcePlan, ctx: MappingContext, params: Params, b: Built, n: number, passwords: PasswordHashes | null): void {
  const name = id(m.target);
  const label = (text: string) => lit(`${m.target}${m.source && m.source !== m.target ? ` (${m.source})` : ''}: ${text}`);
  const col = m.source ? `s.${id(m.source)}` : null;
  const out = TRANSFORMS[m.kind].sql({ m, table, source, ctx, params, passwords, col, name, n, label });
  b.level1.push(...(out.level1 ?? []), `${out.value} AS ${name}`);
  b.problems.push(...(out.problems ?? []));
  b.joins.push(...(out.joins ?? []));
  b.outputColumns.push(m.target);
  // Checks every kind shares: the target's length limit, its CHECK (>= 0), NOT NULL.
  if (m.maxLength) b.problems.push(`CASE WHEN length(${name}) > ${m.maxLength} THEN ${label(`longer than ${m.maxLength} characters`)} END`);
  if (m.nonNegative) b.problems.push(`CASE WHEN ${name} < 0 THEN ${label('negative')} END`);
  if (m.required && m.kind !== 'ref') b.problems.push(`CASE WHEN ${name} IS NULL THEN ${label('missing')} END`);
}

/** Columns compared by the content checksum (randomly salted rehashes excluded). */
export function checksumColumns(table: TablePlan): string[] {
  const cols = new Set<string>();
  for (const s of table.sources) for (const c of s.columns) cols.add(c.target);
  if (table.target === 'link') ['parent_bag_id', 'child_bag_id', 'created_at'].forEach((c) => cols.add(c));
  return ['id', ...cols];
}

const ALWAYS_COMPUTED: readonly string[] = ['qr', 'bag_type', 'role', 'password', 'email', 'bill_business_id', 'promotion_reason'];

/**
 * Whether a column is written: a column with no source is left out so the target's own default
 * applies (bag.status → 'pending'), unless the rules compute it (qr, role, …), give it a constant
 * (verified → TRUE) or the migration time.
 */
export function includedColumn(m: ColumnMapping, source: SourcePlan): boolean {
  if (m.derived) return false;
  if (source.singleBag && (m.target === 'parent_bag_id' || m.target === 'child_bag_id') && !m.source) return false;
  if (m.source) return true;
  return ALWAYS_COMPUTED.includes(m.kind) || m.constantWhenMissing !== undefined || (m.kind === 'timestamp' && m.defaultNow === true) || m.required === true;
}

/** The mapping SELECT of one source table for one key range. */
export function buildMappingSelect(
  table: TablePlan,
  source: SourcePlan,
  ctx: MappingContext,
  params: Params,
  range: KeySelection | null,
  passwords: PasswordHashes | null = null,
  /**
   * Checksum mode: an expression over the row's own target row (alias CHECKSUM_TARGET_ROW), output as `_th` with
   * that row's id as `_tid` (NULL without one), so that Verify reads the target rows in the same pass as the source.
   */
  targetRowHash: string | null = null,
): { text: string; columns: string[] } {
  const b: Built = { level1: [], problems: [], joins: [], where: [], outputColumns: [] };
  b.level1.push(`${keyExpr(source)} AS _key`, `${rejectKeyExpr(source)} AS _rkey`, `${targetIdExpr(source, ctx)} AS id`);
  if (!source.key || source.keyStrategy === 'id-column') b.level1.push(`${rowJsonExpr(source)} AS _row`);
  addIdProblems(source, b);
  source.columns.forEach((m, i) => {
    if (!includedColumn(m, source)) return;
    buildColumn(m, table, source, ctx, params, b, i + 1, passwords);
  });
  if (source.singleBag) addSingleBagScan(source, ctx, b);
  if (table.target === 'scan' && !source.singleBag) {
    b.problems.push(`CASE WHEN parent_bag_id IS NULL AND child_bag_id IS NULL THEN 'scan references no existing bag' END`);
  }
  if (table.target === 'link') b.problems.push(`CASE WHEN parent_bag_id = child_bag_id THEN 'a bag cannot be linked to itself' END`);
  b.where.push(...rangeWhere(source, range, params));
  // Checksum mode: references are resolved through the target row where it holds them (transforms.ts refSql).
  const withTargetRow = targetRowHash !== null || source.columns.some((m) => m.kind === 'ref' && includedColumn(m, source) && m.source);
  if (ctx.mode === 'checksum' && withTargetRow) {
    const t = CHECKSUM_TARGET_ROW;
    b.joins.unshift(`LEFT JOIN ${qualified(ctx.targetSchema, table.target)} ${t} ON ${targetRowOf(t, source, ctx, params, range)}`);
    if (targetRowHash !== null) b.level1.push(`${targetRowHash} AS _th`, `${t}.id AS _tid`);
  }
  const from = fromClause(source, ctx);
  const inner = `SELECT ${b.level1.join(',\n    ')}\n  FROM ${from}\n  ${b.joins.join('\n  ')}${b.where.length ? `\n  WHERE ${b.where.join(' AND ')}` : ''}`;
  const problems = b.problems.length ? `COALESCE(${b.problems.join(',\n    ')})` : 'NULL::text';
  return { text: `SELECT q.*, ${problems} AS _reject FROM (\n  ${inner}\n  OFFSET 0) q OFFSET 0`, columns: ['id', ...b.outputColumns] };
}

function addSingleBagScan(source: SourcePlan, ctx: MappingContext, b: Built): void {
  const single = source.singleBag!;
  const translated = plus(asBigint(`s.${id(single.column)}`, null), offsetOf(ctx, single.refSource));
  b.joins.push(`LEFT JOIN ${qualified(ctx.targetSchema, 'bag')} sb ON sb.id = ${translated}`);
  b.level1.push(
    `CASE WHEN sb.type = 'parent' THEN sb.id::bigint END AS parent_bag_id`,
    `CASE WHEN sb.type = 'child' THEN sb.id::bigint END AS child_bag_id`,
    `${translated} AS _rb`,
    `sb.id IS NULL AS _sbmissing`,
  );
  b.outputColumns.push('parent_bag_id', 'child_bag_id');
  b.level1.push(`${asBigint(`s.${id(single.column)}`, null)} AS _vb`);
  b.problems.push(`CASE WHEN _sbmissing THEN 'scan references bag ' || CASE WHEN _vb IS NULL THEN 'NULL' ELSE ${inTargetTerms('_vb', '_rb')} END || ', which does not exist or was rejected' END`);
}

/**
 * The join condition of a source row's own target row (`alias`.id = the row's target id) for a batch or chunk of a key
 * range, bounded to the range's target ids (key + offset; none for a key set). Unbounded, PostgreSQL read the whole
 * target table for every batch: each link batch hashed all 997,500 target bags (spilling to disk) to find its
 * 200,000 children, each Verify chunk likewise. Without an offset the key column itself (an integer, exactly equal to
 * its bigint): both sides then come in key order from their primary keys and PostgreSQL merges them. Through the cast
 * it hashed the range's target rows: 450,000 scans, 0.70 s a chunk hashed, 0.47 s merged (kept demo database, quiet).
 */
function targetRowOf(alias: string, source: SourcePlan, ctx: MappingContext, params: Params, range: KeySelection | null): string {
  const off = offsetOf(ctx, source.table);
  const idOfRow = off === 0 && source.key ? `s.${id(source.key)}` : targetIdExpr(source, ctx);
  const bounds = source.key && range && !isKeySet(range)
    ? [range.lo === null ? null : `${alias}.id > ${params.add(range.lo + off, 'bigint')}`, range.hi === null ? null : `${alias}.id <= ${params.add(range.hi + off, 'bigint')}`]
    : [];
  return [`${alias}.id = ${idOfRow}`, ...bounds.filter((x) => x !== null)].join(' AND ');
}

/** The mapping SELECT of links derived from a bag source's parent reference. */
export function buildDerivedLinkSelect(
  link: DerivedLinkPlan,
  bagSource: SourcePlan,
  ctx: MappingContext,
  params: Params,
  range: KeySelection | null,
  /** The plan also reads link tables: their rows may already link this child (checked per row, by the link table's unique key). */
  withLinkTables = true,
): { text: string; columns: string[] } {
  const derivedOffset = ctx.offsets[derivedSourceName(link)] ?? 0;
  const childId = targetIdExpr(bagSource, ctx);
  const parentRaw = plus(`s.${id(link.parentColumn)}::bigint`, offsetOf(ctx, link.parentSource));
  const linkTable = qualified(ctx.targetSchema, 'link');
  const bag = qualified(ctx.targetSchema, 'bag');
  // Candidates are migrated bags with a parent reference (a rejected child is already accounted for).
  const where = [`s.${id(link.parentColumn)} IS NOT NULL`, ...rangeWhere(bagSource, range, params), `rc.id IS NOT NULL`];
  // Derived only where no link row of a link table already says so. Without link tables the only link rows are
  // derived ones, one per child bag and with the id that this row has: no other row can hold the child.
  if (withLinkTables) where.push(`NOT EXISTS (SELECT 1 FROM ${linkTable} l WHERE l.child_bag_id = ${childId} AND l.parent_bag_id = ${parentRaw} AND l.id <> ${derivedOffset} + ${childId})`);
  const inner = `SELECT s.${id(link.key)}::bigint AS _key, ${derivedOffset} + ${childId} AS id,
    rp.id::bigint AS parent_bag_id, rc.id::bigint AS child_bag_id, ${runTimeParam(ctx, params)} AS created_at, ${parentRaw} AS _rp,
    s.${id(link.parentColumn)}::bigint AS _vp, (s.${id(link.key)}::bigint)::text AS _rkey,
    ${withLinkTables ? `(SELECT l.parent_bag_id FROM ${linkTable} l WHERE l.child_bag_id = ${childId} AND l.id <> ${derivedOffset} + ${childId} LIMIT 1)` : 'NULL::bigint'} AS _other_parent
  FROM ${fromClause(bagSource, ctx)}
  LEFT JOIN ${bag} rc ON ${targetRowOf('rc', bagSource, ctx, params, range)}
  LEFT JOIN ${bag} rp ON rp.id = ${parentRaw}
  WHERE ${where.join(' AND ')}`;
  const problems = `COALESCE(
    CASE WHEN parent_bag_id IS NULL THEN 'parent bag ' || ${inTargetTerms('_vp', '_rp')} || ' does not exist or was rejected' END,
    CASE WHEN _other_parent IS NOT NULL THEN 'child already linked to another parent (bag ' || _other_parent::text || ', by a link row)' END,
    CASE WHEN parent_bag_id = child_bag_id THEN 'a bag cannot be linked to itself' END)`;
  return {
    text: `SELECT q.*, ${problems} AS _reject FROM (\n  ${inner}\n  OFFSET 0) q OFFSET 0`,
    columns: ['id', 'parent_bag_id', 'child_bag_id', 'created_at'],
  };
}

/**
 * The units of a target table: each source table, then each bag source's derived links. A unit is what a
 * batch, a checkpoint, a reject label and a verification count belong to. Batches (migrate) and checks
 * (verify) are both built from this one list.
 */
export interface TableUnit {
  /** Checkpoint and reject-store label: the source table, or `<bag source>.<parent column> (derived link)`. */
  readonly label: string;
  readonly kind: 'source' | 'derived';
  /** The source table read (for derived links: the bag source). */
  readonly source: SourcePlan;
  readonly derived: DerivedLinkPlan | null;
  /** Only rows of the source matching this SQL condition are read (derived links: rows with a parent). */
  readonly filter: string | null;
  /** False: unique-key collisions were ruled out before the batch (see BatchInsertOptions.mayConflict). */
  readonly mayConflict: boolean | undefined;
}

/** `live`: bag QR codes may collide after all (codes written since `prepare` folded them), so bag batches check. */
export function tableUnits(plan: { readonly tables: readonly TablePlan[] }, table: TablePlan, live = false): TableUnit[] {
  const units: TableUnit[] = table.sources.map((source) => ({
    label: source.table, kind: 'source', source, derived: null, filter: null,
    // Bag QR codes cannot collide: `prepare` renamed every duplicate and refused renamed codes that clash.
    mayConflict: table.target === 'bag' && !live ? false : undefined,
  }));
  const bag = plan.tables.find((t) => t.target === 'bag');
  for (const derived of table.derivedLinks) {
    const source = bag?.sources.find((s) => s.table === derived.fromSource);
    if (!source) continue;
    // One derived link per child, and a child linked elsewhere (or rejected) is handled by the mapping itself.
    units.push({ label: derivedSourceName(derived), kind: 'derived', source, derived, filter: `s.${id(derived.parentColumn)} IS NOT NULL`, mayConflict: false });
  }
  return units;
}

/**
 * The target tables whose unique keys wait until after the load (finalize builds them, from sorted data, instead of
 * the load keeping them up row by row): every unit of the table is known not to collide on them (`mayConflict`
 * false), so no batch needs them to detect a duplicate, and no batch reads the table by them. A collision that got
 * through after all makes the finalize step fail, naming the key, instead of passing unnoticed.
 */
export function deferredUniqueKeyTables(plan: { readonly tables: readonly TablePlan[] }, live: boolean): TargetTable[] {
  const checked = duplicateCheckedTables(plan, live);
  return plan.tables
    .filter((t) => {
      const units = tableUnits(plan, t, live);
      return units.length > 0 && (units.every((u) => u.mayConflict === false) || checked.includes(t.target));
    })
    .map((t) => t.target);
}

/**
 * Tables whose unique keys are made of references only (bill_bag's bill/bag pair), in a run without capture: a mapped
 * reference is its translated source value or NULL, so two rows can only collide on such a key where their translated
 * source values do. The table's step looks for such a pair once, before its first batch (renderDuplicateKeyCheck):
 * none (the usual case), and its batches are plain inserts and finalize builds the key, from sorted data, after the
 * load; one, and the step adds the key before the first batch, whose batches then skip and reject the later rows of
 * a pair as before. (At scale 1, 1,000,000 bill_bag rows: 1.6 s a 200,000-row batch with the key and ON CONFLICT, 0.7 s without.)
 */
export function duplicateCheckedTables(plan: { readonly tables: readonly TablePlan[] }, live: boolean): TargetTable[] {
  if (live) return [];
  return plan.tables
    .filter((t) => t.sources.length > 0 && t.derivedLinks.length === 0 && UNIQUE_KEYS[t.target].length > 0)
    .filter((t) => !tableUnits(plan, t, live).every((u) => u.mayConflict === false))
    .filter((t) => UNIQUE_KEYS[t.target].every((k) => !k.expr && k.columns.every((c) => t.sources.every((s) => keyReference(s, c) !== null))))
    .map((t) => t.target);
}

/** A source's mapping of a key column when it is a reference read from a source column (null otherwise). */
function keyReference(source: SourcePlan, column: string): ColumnMapping | null {
  const m = source.columns.find((x) => x.target === column);
  return m && m.kind === 'ref' && m.source && !source.singleBag && includedColumn(m, source) ? m : null;
}

/**
 * One row, `duplicate`: whether two source rows (with a usable id) of a duplicate-checked table have the same translated
 * values of one of its unique keys (NULLs never collide: a unique key treats them as distinct).
 */
export function renderDuplicateKeyCheck(table: TablePlan, ctx: MappingContext): string {
  const checks = UNIQUE_KEYS[table.target].map((key) => {
    const names = key.columns.map((_, i) => `_k${i + 1}`);
    const union = table.sources
      .map((s) => `SELECT ${key.columns.map((c, i) => `${translatedRefExpr(keyReference(s, c)!, ctx)} AS ${names[i]}`).join(', ')} FROM ${sourceFrom(s, ctx)}`)
      .join('\n      UNION ALL\n      ');
    return `EXISTS (SELECT 1 FROM (\n      ${union}) k WHERE ${names.map((n) => `${n} IS NOT NULL`).join(' AND ')} GROUP BY ${names.join(', ')} HAVING count(*) > 1)`;
  });
  return `SELECT (${checks.join(' OR ')}) AS duplicate`;
}

/** The unit's mapping SELECT over one key range (null: the whole source). */
export function buildUnitSelect(
  table: TablePlan,
  unit: TableUnit,
  ctx: MappingContext,
  params: Params,
  range: KeySelection | null,
  passwords: PasswordHashes | null = null,
  /** A source unit's own target row, hashed (buildMappingSelect); derived links have none. */
  targetRowHash: string | null = null,
): { text: string; columns: string[] } {
  return unit.derived
    ? buildDerivedLinkSelect(unit.derived, unit.source, ctx, params, range, table.sources.length > 0)
    : buildMappingSelect(table, unit.source, ctx, params, range, passwords, targetRowHash);
}

/** Target ids of a unit are `unitOffset + source key`. */
export function unitOffset(unit: TableUnit, offsets: Readonly<Record<string, number>>): number {
  return (offsets[unit.source.table] ?? 0) + (unit.derived ? offsets[unit.label] ?? 0 : 0);
}

export function derivedSourceName(link: DerivedLinkPlan): string {
  return `${link.fromSource}.${link.parentColumn} (derived link)`;
}

/** JSON keys never stored with a rejected row: secrets, and the mapping's own helper columns. */
const STRIPPED_ROW_KEYS = [...SECRET_COLUMNS, '_rownum', '_idn'];

function stripSecrets(json: string, source: SourcePlan): string {
  // Secret columns by rule name and by the source's own names for them (`Password`, `passwordHash`).
  const secretSources = source.columns.filter((c) => c.source && SECRET_COLUMNS.includes(c.target)).map((c) => c.source!);
  const keys = [...new Set([...STRIPPED_ROW_KEYS, ...secretSources])];
  return `(${json} - ARRAY[${keys.map(lit).join(', ')}]::text[])`;
}

/** The source row as JSON, read in the mapping itself (tables without a primary key: no key to look it up by). */
function rowJsonExpr(source: SourcePlan): string {
  return stripSecrets('to_jsonb(s)', source);
}

/** Source-row JSON for the reject store, without secrets. */
function rejectRowJson(sourceSchema: string, source: SourcePlan): string {
  if (!source.key || source.keyStrategy === 'id-column') return 'm._row';
  return `(SELECT ${stripSecrets('to_jsonb(x)', source)} FROM ${qualified(sourceSchema, source.table)} x WHERE x.${id(source.key)} = m._key LIMIT 1)`;
}

function conflictReason(target: TargetTable, schema: string): string {
  const checks: string[] = [];
  for (const key of UNIQUE_KEYS[target]) {
    const cond = (alias: string) =>
      key.columns
        .map((c) => (key.expr ? `${key.expr.replace('%s', `${alias}.${id(c)}`)} = ${key.expr.replace('%s', `m.${id(c)}`)}` : `${alias}.${id(c)} = m.${id(c)}`))
        .join(' AND ');
    const shown = key.columns.map((c) => `coalesce(m.${id(c)}::text, 'NULL')`).join(` || '/' || `);
    checks.push(
      `WHEN EXISTS (SELECT 1 FROM ins i WHERE ${cond('i')}) OR EXISTS (SELECT 1 FROM ${qualified(schema, target)} t WHERE ${cond('t')}) THEN ${lit(`duplicate ${key.name}: `)} || ${shown} || ' is already used by another row'`,
    );
  }
  const fallback = `'duplicate id ' || m.id::text`;
  return checks.length ? `CASE ${checks.join(' ')} ELSE ${fallback} END` : fallback;
}

export interface BatchInsertOptions {
  readonly runId: string;
  readonly target: TargetTable;
  /** Name recorded in the reject store (the source table, or the derived-link source). */
  readonly sourceLabel: string;
  readonly mapping: { text: string; columns: string[] };
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly source: SourcePlan | null;
  /**
   * Whether rows of this batch can collide on a unique key (then ON CONFLICT skips and rejects them).
   * False where the collisions were ruled out before (bag QR codes in `prepare`, derived links by their
   * own check): a plain insert is markedly faster. Default: the table has unique keys.
   */
  readonly mayConflict?: boolean;
  /**
   * SQL bigint[] (a placeholder) of the target ids the batch can hold: catch-up's key sets are scattered,
   * and the id range between their smallest and largest would be most of the table. Default: the range.
   */
  readonly preIds?: string;
}

/**
 * One batch: insert the good rows, reject the bad ones with their reason, in one statement.
 * Rows whose id is already in the target (an earlier run) are left alone and counted as `already`.
 * `pre` is every target id inside the batch's id range (an index range scan), a superset of the
 * batch's ids already present: joining the batch against the whole target instead made each batch
 * cost as much as the rows loaded before it (quadratic in the table's size).
 */
export function buildBatchInsert(options: BatchInsertOptions, params: Params): SqlQuery {
  const { target, mapping } = options;
  const targetTable = qualified(options.targetSchema, target);
  const cols = mapping.columns.map(id).join(', ');
  const uniqueCols = new Set(['id', ...UNIQUE_KEYS[target].flatMap((k) => k.columns)]);
  const returning = [...uniqueCols].map(id).join(', ');
  const run = params.add(options.runId);
  const label = params.add(options.sourceLabel);
  const rowJson = options.source ? rejectRowJson(options.sourceSchema, options.source) : 'NULL::jsonb';
  // Tables with unique keys: conflicting rows are skipped (ON CONFLICT) and rejected with the key's
  // name; the lowest id wins. Tables without: a plain insert (ids already present are filtered out), which
  // inserts every row it is given or fails, so only the rows with a reason are rejected.
  const unique = options.mayConflict ?? UNIQUE_KEYS[target].length > 0;
  const text = `WITH m AS MATERIALIZED (${mapping.text}),
pre AS (
  SELECT t.id FROM ${targetTable} t
  WHERE ${options.preIds ? `t.id = ANY(${options.preIds})` : 't.id >= (SELECT min(m.id) FROM m) AND t.id <= (SELECT max(m.id) FROM m)'}
),
ins AS (
  INSERT INTO ${targetTable} (${cols})
  SELECT ${mapping.columns.map((c) => `m.${id(c)}`).join(', ')} FROM m
  WHERE m._reject IS NULL AND NOT EXISTS (SELECT 1 FROM pre WHERE pre.id = m.id)
  ${unique ? 'ORDER BY m.id ON CONFLICT DO NOTHING' : ''}
  RETURNING ${returning}
),
rej AS (
  INSERT INTO ${qualified(options.targetSchema, '_migration_reject')} (run_id, target_table, source_table, source_key, reason, row_data)
  SELECT ${run}, ${lit(target)}, ${label}, m._rkey, COALESCE(m._reject, ${conflictReason(target, options.targetSchema)}), ${rowJson}
  FROM m
  WHERE m._reject IS NOT NULL${unique ? `
     OR (NOT EXISTS (SELECT 1 FROM pre WHERE pre.id = m.id) AND NOT EXISTS (SELECT 1 FROM ins WHERE ins.id = m.id))` : ''}
  ON CONFLICT (run_id, source_table, source_key) DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM ins)::bigint AS migrated,
       (SELECT count(*) FROM rej)::bigint AS rejected,
       (SELECT count(*) FROM m WHERE EXISTS (SELECT 1 FROM pre WHERE pre.id = m.id))::bigint AS already,
       (SELECT count(*) FROM m)::bigint AS read`;
  return { text, values: params.values };
}

/** The mapped `created_at` of a bag source row (the age that decides which duplicate QR keeps its code). */
export function createdAtExpr(source: SourcePlan, ctx: MappingContext): string {
  const m = source.columns.find((c) => c.target === 'created_at');
  if (!m?.source) return 'NULL::timestamp';
  return timestampExpr(ctx, `s.${id(m.source)}`, m.sourceType);
}

/** FROM clause of a source table for the prepare step: the rows whose id can migrate. */
export function sourceFrom(source: SourcePlan, ctx: MappingContext): string {
  return rowsWithUsableIdFrom(source, ctx);
}

/** FROM clause of every row of a source table, as the batches read it (alias `s`). */
export function sourceRowsFrom(source: SourcePlan, ctx: MappingContext): string {
  return fromClause(source, ctx);
}

/** A source reference column translated to a target id (offset of the referenced source added). */
export function translatedRefExpr(m: ColumnMapping, ctx: MappingContext, alias = 's'): string {
  return plus(asBigint(`${alias}.${id(m.source!)}`, m.sourceType), offsetOf(ctx, m.ref?.sourceTable ?? null));
}
