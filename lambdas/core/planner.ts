import { findColumn, type Catalog, type ColumnInfo, type TableInfo } from './catalog';
import { EMPTY_OVERRIDES, type MappingOverrides } from './mapping-file';
import { matchFirstAlias, matchName, sameName } from './names';
import type { ColumnMapping, Decision, DerivedLinkPlan, Plan, PlanOptions, SourcePlan, TablePlan } from './plan';
import { TRANSFORMS } from './transforms';
import { targetColumn } from './sql/target-ddl';
import { passwordSteps } from './work-graph';

export type { ColumnMapping, Decision, DerivedLinkPlan, Plan, PlanOptions, SourcePlan, TablePlan } from './plan';
import {
  COLUMN_RULES,
  DERIVED_COLUMNS,
  IMPLIED_BAG_TYPE,
  RETIRED_TABLES,
  SCAN_SINGLE_BAG_ALIASES,
  TABLE_RULES,
  TARGET_ORDER,
  type ColumnRule,
  type TargetTable,
} from './rules';

const INTEGER_TYPES = ['int2', 'int4', 'int8'];
const PARENT_COLUMNS = ['parent_bag_id', 'parent_id'];
const CHILD_COLUMNS = ['child_bag_id', 'child_id'];

const byColumnName = (c: ColumnInfo) => c.name;

function pickKey(table: TableInfo): Pick<SourcePlan, 'key' | 'keyStrategy'> {
  if (table.primaryKey.length === 1) {
    const col = findColumn(table, table.primaryKey[0]!);
    if (col && INTEGER_TYPES.includes(col.udtName)) return { key: col.name, keyStrategy: 'primary-key' };
  }
  const id = matchName(table.columns, 'id', byColumnName);
  if ((id.kind === 'exact' || id.kind === 'folded') && INTEGER_TYPES.includes(id.item.udtName)) return { key: id.item.name, keyStrategy: 'id-column' };
  return { key: null, keyStrategy: 'single-batch' };
}

/** The one column of `table` a name stands for, under any case or style; undefined when none or ambiguous. */
function columnNamed(table: TableInfo, name: string): ColumnInfo | undefined {
  const m = matchName(table.columns, name, byColumnName);
  return m.kind === 'exact' || m.kind === 'folded' ? m.item : undefined;
}

function describeKind(m: ColumnMapping): string {
  if (m.derived) return `derived after the load: ${DERIVED_COLUMNS[m.derivedFrom!]!.rule}`;
  return TRANSFORMS[m.kind].describe(m);
}

/** What the phases of the analysis share: the catalog, the options, and what they found so far. */
interface Analysis {
  readonly catalog: Catalog;
  readonly options: PlanOptions;
  readonly overrides: MappingOverrides;
  readonly byName: Map<string, TableInfo>;
  /** Real source table names left out on request. */
  readonly skip: Set<string>;
  readonly decisions: Decision[];
  readonly problems: string[];
  readonly warnings: string[];
  /** Source columns some mapping reads, per source table. */
  readonly used: Map<string, Set<string>>;
  /** Source table → the target it feeds and the rule name it was found under (`parent_bag`, `bags`, …). */
  readonly claimed: Map<string, { readonly target: TargetTable; readonly alias: string }>;
  readonly sourcesOf: Map<TargetTable, string[]>;
}

function markUsed(a: Analysis, table: string, column: string): void {
  if (!a.used.has(table)) a.used.set(table, new Set());
  a.used.get(table)!.add(column);
}

/** The rule name a source table was claimed under (its own name for mapping-file tables). */
function aliasOf(a: Analysis, table: string): string {
  return a.claimed.get(table)?.alias ?? table;
}

/** Builds the plan. Never throws for a bad source: problems are listed in `plan.problems`. */
export function planMigration(catalog: Catalog, options: PlanOptions): Plan {
  const overrides = options.overrides ?? EMPTY_OVERRIDES;
  const a: Analysis = {
    catalog, options, overrides,
    byName: new Map(catalog.tables.map((t) => [t.name, t])),
    skip: new Set(),
    decisions: [], problems: [], warnings: [],
    used: new Map(), claimed: new Map(), sourcesOf: new Map(),
  };
  if (catalog.schema === options.targetSchema) {
    a.problems.push(`The target schema "${options.targetSchema}" is the source schema: choose another --target-schema (default tracetrack).`);
  }
  resolveSkippedTables(a, [...(options.skipTables ?? []), ...overrides.skipTables]);
  claimSourceTables(a);
  const only = options.onlyTables && options.onlyTables.length ? new Set(options.onlyTables) : null;
  if (only) {
    for (const t of only) if (!(TARGET_ORDER as readonly string[]).includes(t)) a.problems.push(`"${t}" in tables is not a target table (one of ${TARGET_ORDER.join(', ')}).`);
  }
  const tables: TablePlan[] = [];
  for (const target of TARGET_ORDER) {
    const sourceNames = a.sourcesOf.get(target)!;
    if (only && !only.has(target)) {
      for (const s of sourceNames) a.decisions.push({ target, source: s, decision: 'not migrated in this run (not in "tables")' });
      continue;
    }
    const merged = sourceNames.length > 1;
    const sources = sourceNames.map((name) => planSource(a, target, name, merged, sourceNames.length));
    const derivedLinks = target === 'link' ? planDerivedLinks(a, tables) : [];
    if (sources.length === 0 && derivedLinks.length === 0) {
      a.decisions.push({ target, source: '-', decision: 'no source table: created empty' });
      continue;
    }
    tables.push({ target, sources, merged, derivedLinks });
  }
  const rest = classifyOtherTables(a);
  const unmappedColumns = listUnmappedColumns(a);
  if (tables.length === 0 && a.problems.length === 0) {
    a.problems.push(`No TraceTrack table found in schema "${catalog.schema}" (looked for ${Object.values(TABLE_RULES).flat().join(', ')}, in any case or style). Is --source-schema right?`);
  }
  return {
    version: 1,
    sourceSchema: catalog.schema,
    targetSchema: options.targetSchema,
    tables,
    steps: ['prepare', ...tables.map((t) => t.target), ...(hasPlaintextPasswords(tables) ? passwordSteps() : []), 'finalize'],
    decisions: a.decisions,
    unmappedColumns,
    ...rest,
    problems: a.problems,
    warnings: a.warnings,
    recomputeSummaries: options.recomputeSummaries === true,
  };
}

/** A user source whose password column holds legacy plaintext: the plan has a step that hashes it. */
function hasPlaintextPasswords(tables: readonly TablePlan[]): boolean {
  return tables.some((t) => t.target === 'user' && t.sources.some((s) => s.columns.some((c) => c.kind === 'password' && c.passwordSource === 'plaintext-column' && c.source)));
}

function resolveSkippedTables(a: Analysis, names: readonly string[]): void {
  for (const name of names) {
    const m = matchName(a.catalog.tables, name, (t) => t.name);
    if (m.kind === 'exact' || m.kind === 'folded') a.skip.add(m.item.name);
    else if (m.kind === 'ambiguous') {
      const exact = m.items.find((t) => t.name === name);
      if (exact) a.skip.add(exact.name);
      else a.problems.push(`--skip-table ${name}: several tables have that name in another case or style (${m.items.map((t) => `"${t.name}"`).join(', ')}); give the exact name.`);
    } else a.warnings.push(`--skip-table ${name}: no such table in schema "${a.catalog.schema}".`);
  }
}

/** Phase 1: which source tables feed which target (rules in any case or style, then the mapping file's tables). */
function claimSourceTables(a: Analysis): void {
  const candidates = a.catalog.tables.filter((t) => !a.skip.has(t.name));
  for (const [source, target] of Object.entries(a.overrides.tables)) {
    if (!a.byName.has(source)) a.problems.push(`The mapping file maps table "${source}" to ${target}, but there is no such table in schema "${a.catalog.schema}".`);
  }
  for (const target of TARGET_ORDER) {
    const present: string[] = [];
    for (const alias of TABLE_RULES[target]) {
      const m = matchName(candidates, alias, (t) => t.name);
      if (m.kind === 'none') continue;
      if (m.kind === 'ambiguous') {
        const names = m.items.map((t) => `"${t.name}"`).join(' and ');
        a.problems.push(`Tables ${names} both read as "${alias}" (names are compared regardless of case and style): say which one feeds ${target} in a mapping file ("tables": { "<table>": "${target}" }) and leave the other out with --skip-table.`);
        continue;
      }
      const name = m.item.name;
      if (a.claimed.has(name) || present.includes(name) || a.overrides.tables[name]) continue;
      present.push(name);
      a.claimed.set(name, { target, alias });
      if (m.kind === 'folded') a.decisions.push({ target, source: name, decision: `table "${name}" read as ${alias} (names compared regardless of case and style)` });
    }
    for (const [source, t] of Object.entries(a.overrides.tables)) {
      if (t !== target || !a.byName.has(source) || a.skip.has(source) || present.includes(source)) continue;
      present.push(source);
      a.claimed.set(source, { target, alias: source });
    }
    a.sourcesOf.set(target, present);
  }
}

/** Resolves which source table a reference column's ids belong to. */
function resolveRefSource(a: Analysis, fromTable: string, column: string, refTarget: TargetTable): string | null {
  const candidates = a.sourcesOf.get(refTarget) ?? [];
  if (candidates.length === 0) return null;
  const override = a.overrides.references[`${fromTable}.${column}`];
  if (override) {
    if (!candidates.includes(override)) a.problems.push(`The mapping file says ${fromTable}.${column} references "${override}", which does not feed ${refTarget} (sources: ${candidates.join(', ')}).`);
    return override;
  }
  if (candidates.length === 1) return candidates[0]!;
  const fk = a.byName.get(fromTable)?.foreignKeys.find((f) => f.columns.length === 1 && f.columns[0] === column);
  if (fk && candidates.includes(fk.refTable)) return fk.refTable;
  if (refTarget === 'bag') {
    const byAlias = (alias: string) => candidates.find((c) => aliasOf(a, c) === alias);
    if (PARENT_COLUMNS.some((p) => sameName(p, column)) && byAlias('parent_bag')) return byAlias('parent_bag')!;
    if (CHILD_COLUMNS.some((p) => sameName(p, column)) && byAlias('child_bag')) return byAlias('child_bag')!;
  }
  // Family: plural tables (bags, scans, users …) reference plural tables, singular ones singular.
  const plural = aliasOf(a, fromTable).endsWith('s');
  const family = candidates.filter((c) => aliasOf(a, c).endsWith('s') === plural && !(aliasOf(a, c) in IMPLIED_BAG_TYPE));
  if (family.length === 1) return family[0]!;
  a.problems.push(
    `Cannot tell which of ${candidates.join(', ')} the ids in ${fromTable}.${column} refer to. Add a foreign key, or a mapping file entry "references": { "${fromTable}.${column}": "<table>" }.`,
  );
  return null;
}

/** Phase 2: one source table's key, ids and column mappings. */
function planSource(a: Analysis, target: TargetTable, sourceName: string, merged: boolean, sourceCount: number): SourcePlan {
  const table = a.byName.get(sourceName)!;
  const keyInfo = pickKey(table);
  if (keyInfo.key) markUsed(a, sourceName, keyInfo.key);
  a.decisions.push({
    target, source: sourceName,
    decision: keyInfo.keyStrategy === 'single-batch'
      ? 'no single-column integer key: read in one batch, ids generated in a stable order (row text)'
      : `${merged ? `ids remapped through the id map (${sourceCount} sources feed ${target})` : 'ids kept'}; batches by ${keyInfo.key}${keyInfo.keyStrategy === 'id-column' ? ' (no primary key: the "id" column is used; rows with a NULL or duplicate id are rejected)' : ''}`,
  });
  const userColumns = a.overrides.columns[target] ?? {};
  const candidates = table.columns.filter((c) => c.name !== keyInfo.key);
  const columns: ColumnMapping[] = [];
  for (const rule of COLUMN_RULES[target]) {
    const own = userColumns[rule.target] ?? [];
    const aliases = [...own, ...rule.aliases];
    for (const alias of aliases) {
      const m = matchName(candidates, alias, byColumnName);
      if (m.kind === 'ambiguous') {
        a.problems.push(`Table "${sourceName}" has columns ${m.items.map((c) => `"${c.name}"`).join(' and ')}, which all read as "${alias}" (${target}.${rule.target}; names are compared regardless of case and style). Name the right one in a mapping file: "columns": { "${target}": { "${rule.target}": ["<column>"] } }, or rename the other.`);
      }
    }
    const found = matchFirstAlias(candidates, aliases, byColumnName);
    const col = found && found.match.kind !== 'ambiguous' ? found.match.item : null;
    const mapping = buildColumnMapping(a, rule, col, found?.alias ?? null, table, target);
    if (col) markUsed(a, sourceName, col.name);
    if (!col && rule.required && found?.match.kind !== 'ambiguous') {
      a.problems.push(`Table "${sourceName}" has no column for ${target}.${rule.target} (looked for ${aliases.join(', ')}, in any case or style); every row would be rejected. Name the column in a mapping file: "columns": { "${target}": { "${rule.target}": ["<column>"] } }.`);
    }
    if (mapping.requestedRoleColumn) markUsed(a, sourceName, mapping.requestedRoleColumn);
    columns.push(mapping);
    const styled = found?.match.kind === 'folded' ? ` (name matched regardless of case and style: ${found.alias})` : '';
    const fromText = col
      ? `${sourceName}.${col.name}${own.includes(col.name) ? ' (mapping file)' : ''}${styled}${mapping.derived ? ' (ignored: --recompute-summaries)' : ''}`
      : missingText(mapping);
    a.decisions.push({ target: `${target}.${rule.target}`, source: sourceName, decision: `← ${fromText}: ${describeKind(mapping)}` });
  }
  const singleBag = target === 'scan' ? planSingleBagScan(a, table, columns) : undefined;
  const impliedBagType = target === 'bag' ? IMPLIED_BAG_TYPE[aliasOf(a, sourceName)] : undefined;
  if (impliedBagType) a.decisions.push({ target: 'bag.type', source: sourceName, decision: `all rows are ${impliedBagType} bags (split bag table)` });
  return {
    table: sourceName,
    ...keyInfo,
    idStrategy: merged ? 'remap' : 'keep',
    columns,
    impliedBagType,
    singleBag,
    rowEstimate: Math.max(0, table.rowEstimate),
  };
}

/** A scan table with a single `bag_id`: split into parent/child by the scanned bag's type. */
function planSingleBagScan(a: Analysis, table: TableInfo, columns: ColumnMapping[]): SourcePlan['singleBag'] {
  const hasPair = columns.some((c) => (c.target === 'parent_bag_id' || c.target === 'child_bag_id') && c.source);
  if (hasPair) return undefined;
  const found = matchFirstAlias(table.columns, SCAN_SINGLE_BAG_ALIASES, byColumnName);
  if (!found || found.match.kind === 'ambiguous') {
    a.problems.push(`Scan table "${table.name}" has no bag reference (parent_bag_id/child_bag_id, parent_id/child_id or bag_id): map one in a mapping file.`);
    return undefined;
  }
  const single = found.match.item;
  markUsed(a, table.name, single.name);
  const scanType = columnNamed(table, 'scan_type');
  if (scanType) markUsed(a, table.name, scanType.name);
  a.decisions.push({ target: 'scan.parent_bag_id/child_bag_id', source: table.name, decision: `← ${table.name}.${single.name}: split by the scanned bag's type (parent → parent_bag_id, child → child_bag_id); a missing bag rejects the scan` });
  return { column: single.name, refSource: resolveRefSource(a, table.name, single.name, 'bag') };
}

/** link only: links derived from the child → parent references of the bag sources. */
function planDerivedLinks(a: Analysis, tables: readonly TablePlan[]): DerivedLinkPlan[] {
  const out: DerivedLinkPlan[] = [];
  const bagPlan = tables.find((t) => t.target === 'bag');
  for (const bagSource of bagPlan?.sources ?? []) {
    const parentCol = bagSource.columns.find((c) => c.target === 'parent_id' && c.source);
    if (!parentCol || !bagSource.key) continue;
    out.push({ fromSource: bagSource.table, key: bagSource.key, parentColumn: parentCol.source!, parentSource: parentCol.ref?.sourceTable ?? null });
    a.decisions.push({ target: 'link', source: bagSource.table, decision: `links derived from ${bagSource.table}.${parentCol.source} where no link row names that child; a child with another parent in a link row is rejected (one parent per child)` });
  }
  return out;
}

/** Phase 3: everything else in the schema: retired, skipped, unknown. */
function classifyOtherTables(a: Analysis): Pick<Plan, 'retiredTables' | 'skippedTables' | 'unknownTables'> {
  const retiredTables: string[] = [];
  const skippedTables: string[] = [];
  const unknownTables: { name: string; hasRows: boolean }[] = [];
  for (const t of a.catalog.tables) {
    if (a.claimed.has(t.name)) continue;
    if (a.skip.has(t.name)) {
      skippedTables.push(t.name);
      a.decisions.push({ target: '-', source: t.name, decision: 'skipped on request: backed up, not migrated' });
    } else if (RETIRED_TABLES.some((r) => sameName(r, t.name))) {
      retiredTables.push(t.name);
      a.decisions.push({ target: '-', source: t.name, decision: 'known retired legacy table: backed up and reported, not migrated' });
    } else if (t.name.startsWith('_migration_') || t.name.startsWith('_mig_')) {
      continue;
    } else {
      unknownTables.push({ name: t.name, hasRows: t.hasRows });
      if (t.hasRows) {
        a.problems.push(`Table "${t.name}" has rows and maps to no target table. Map it in a mapping file ("tables": { "${t.name}": "<target>" }) or leave it out with --skip-table ${t.name} (it is backed up either way).`);
      } else {
        a.warnings.push(`Table "${t.name}" is empty and maps to nothing: ignored (backed up).`);
      }
    }
  }
  return { retiredTables, skippedTables, unknownTables };
}

function listUnmappedColumns(a: Analysis): Plan['unmappedColumns'] {
  const out: Plan['unmappedColumns'] = [];
  for (const name of a.claimed.keys()) {
    const table = a.byName.get(name)!;
    const usedCols = a.used.get(name) ?? new Set();
    const rest = table.columns.map((c) => c.name).filter((c) => !usedCols.has(c));
    if (rest.length) {
      out.push({ table: name, columns: rest });
      a.decisions.push({ target: '-', source: name, decision: `columns not migrated (kept in the backup): ${rest.join(', ')}` });
    }
  }
  return out;
}

function missingText(mapping: ColumnMapping): string {
  return mapping.derived ? 'no source column' : TRANSFORMS[mapping.kind].whenMissing(mapping);
}

function buildColumnMapping(a: Analysis, rule: ColumnRule, col: ColumnInfo | null, alias: string | null, table: TableInfo, target: TargetTable): ColumnMapping {
  const derivedKey = `${target}.${rule.target}`;
  const derivable = derivedKey in DERIVED_COLUMNS;
  const derived = derivable && (!col || a.options.recomputeSummaries === true);
  const maxLength = targetColumn(target, rule.target)?.maxLength;
  const base: ColumnMapping = {
    target: rule.target,
    source: col?.name ?? null,
    sourceType: col?.udtName ?? null,
    kind: rule.kind,
    ...(maxLength ? { maxLength } : {}),
    ...(rule.required ? { required: true } : {}),
    ...(rule.defaultNow ? { defaultNow: true } : {}),
    ...(rule.constantWhenMissing ? { constantWhenMissing: rule.constantWhenMissing } : {}),
    ...(rule.nonNegative ? { nonNegative: true } : {}),
    ...(derived ? { derived: true, derivedFrom: derivedKey } : derivable ? { derivedFrom: derivedKey } : {}),
  };
  if (rule.kind === 'ref') {
    const sourceTable = col ? resolveRefSource(a, table.name, col.name, rule.ref!) : null;
    const referenced = sourceTable ? a.byName.get(sourceTable) : undefined;
    if (col && referenced && pickKey(referenced).keyStrategy === 'single-batch') {
      // Its rows get generated ids: a legacy id in this column would land on whichever row got that number.
      a.problems.push(`${table.name}.${col.name} references ${sourceTable}, which has no integer id column: its rows get generated ids, so these references cannot be resolved. Give ${sourceTable} its id column (or a primary key), or leave ${table.name}.${col.name} out with a mapping file that names another column for ${target}.${rule.target}.`);
    }
    return { ...base, ref: { target: rule.ref!, sourceTable, onOrphan: rule.onOrphan ?? 'null' } };
  }
  if (rule.kind === 'password') {
    return { ...base, passwordSource: alias !== null && sameName(alias, 'password') ? 'plaintext-column' : 'hash-column' };
  }
  if (rule.kind === 'promotion_reason') {
    return { ...base, requestedRoleColumn: columnNamed(table, 'requested_role')?.name ?? null };
  }
  return base;
}

/** The plan of one target table, or undefined when nothing feeds it. */
export function tablePlan(plan: Plan, target: string): TablePlan | undefined {
  return plan.tables.find((t) => t.target === target);
}

/** Renders the plan for a person: one line per decision, then problems and warnings. */
export function renderPlanText(plan: Plan): string {
  const lines: string[] = [];
  lines.push(`Analysis of schema "${plan.sourceSchema}" → target schema "${plan.targetSchema}"`);
  for (const target of TARGET_ORDER) {
    const t = plan.tables.find((x) => x.target === target);
    const from = t ? `${t.sources.map((s) => s.table).join(' + ') || '(derived only)'}${t.merged ? '  [ids remapped]' : ''}` : '(nothing)';
    lines.push('', `${target} ← ${from}`);
    for (const d of plan.decisions.filter((d) => d.target === target || d.target.startsWith(`${target}.`))) {
      lines.push(`  ${d.target.padEnd(26)} ${d.source.padEnd(12)} ${d.decision}`);
    }
  }
  const other = plan.decisions.filter((d) => d.target === '-');
  if (other.length) {
    lines.push('', 'Not migrated:');
    for (const d of other) lines.push(`  ${d.source.padEnd(20)} ${d.decision}`);
  }
  if (plan.warnings.length) lines.push('', 'Warnings:', ...plan.warnings.map((w) => `  - ${w}`));
  if (plan.problems.length) lines.push('', 'PROBLEMS (the analysis refuses this source):', ...plan.problems.map((p) => `  - ${p}`));
  return lines.join('\n');
}
