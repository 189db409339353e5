import { findColumn, type Catalog, type ColumnInfo, type TableInfo } from './catalog';
import { EMPTY_OVERRIDES, type MappingOverrides } from './mapping-file';
import {
  COLUMN_RULES,
  IMPLIED_BAG_TYPE,
  RETIRED_TABLES,
  SCAN_SINGLE_BAG_ALIASES,
  TABLE_RULES,
  TARGET_ORDER,
  type ColumnRule,
  type TargetTable,
  type ValueKind,
} from './rules';

/**
 * The plan: every decision of the analysis, JSON-serialisable, readable by a person.
 * Built from the catalog and the rules alone (no I/O), so it can be tested without a database.
 */
export interface Plan {
  readonly version: 1;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly tables: TablePlan[];
  /** Workflow migration steps in foreign-key order. */
  readonly steps: string[];
  readonly decisions: Decision[];
  readonly unmappedColumns: { readonly table: string; readonly columns: string[] }[];
  readonly retiredTables: string[];
  readonly skippedTables: string[];
  readonly unknownTables: { readonly name: string; readonly hasRows: boolean }[];
  /** Non-empty: the analysis refuses the source (each says what to do). */
  readonly problems: string[];
  readonly warnings: string[];
}

export interface Decision {
  readonly target: string;
  readonly source: string;
  readonly decision: string;
}

export interface TablePlan {
  readonly target: TargetTable;
  readonly sources: SourcePlan[];
  /** Two or more sources feed the table: their ids are remapped through the id map. */
  readonly merged: boolean;
  /** link only: links derived from child → parent references of bag sources. */
  readonly derivedLinks: DerivedLinkPlan[];
}

export interface SourcePlan {
  readonly table: string;
  /** Single integer key used for batches and ids; null → the table is read in one batch with generated ids. */
  readonly key: string | null;
  readonly keyStrategy: 'primary-key' | 'id-column' | 'single-batch';
  readonly idStrategy: 'keep' | 'remap';
  readonly columns: ColumnMapping[];
  /** Shape D: the type implied by the table (`parent_bag` → parent). */
  readonly impliedBagType?: 'parent' | 'child';
  /** Scans with a single `bag_id`: split into parent/child by the scanned bag's type. */
  readonly singleBag?: { readonly column: string; readonly refSource: string | null };
  readonly rowEstimate: number;
}

export interface ColumnMapping {
  readonly target: string;
  /** Source column, or null when no alias is present. */
  readonly source: string | null;
  /** `pg_type.typname` of the source column. */
  readonly sourceType: string | null;
  readonly kind: ValueKind;
  readonly maxLength?: number;
  readonly required?: boolean;
  readonly defaultNow?: boolean;
  readonly constantWhenMissing?: string;
  readonly nonNegative?: boolean;
  /** For refs: the referenced target table and the source table the ids belong to. */
  readonly ref?: { readonly target: TargetTable; readonly sourceTable: string | null; readonly onOrphan: 'null' | 'reject' };
  /** password: which column kind it came from ('password' holds plaintext in legacy rows). */
  readonly passwordSource?: 'plaintext-column' | 'hash-column';
  /** promotion_reason: the column naming the requested role, if any. */
  readonly requestedRoleColumn?: string | null;
}

export interface DerivedLinkPlan {
  /** Bag source table whose parent reference yields the link. */
  readonly fromSource: string;
  readonly key: string;
  readonly parentColumn: string;
  /** Source table the parent ids belong to. */
  readonly parentSource: string | null;
}

export interface PlanOptions {
  readonly targetSchema: string;
  readonly skipTables?: readonly string[];
  /** Only these target tables (default all). */
  readonly onlyTables?: readonly string[] | null;
  readonly overrides?: MappingOverrides;
}

const INTEGER_TYPES = ['int2', 'int4', 'int8'];
const PARENT_COLUMNS = ['parent_bag_id', 'parent_id'];
const CHILD_COLUMNS = ['child_bag_id', 'child_id'];

function pickKey(table: TableInfo): Pick<SourcePlan, 'key' | 'keyStrategy'> {
  if (table.primaryKey.length === 1) {
    const col = findColumn(table, table.primaryKey[0]!);
    if (col && INTEGER_TYPES.includes(col.udtName)) return { key: col.name, keyStrategy: 'primary-key' };
  }
  const id = findColumn(table, 'id');
  if (id && INTEGER_TYPES.includes(id.udtName)) return { key: 'id', keyStrategy: 'id-column' };
  return { key: null, keyStrategy: 'single-batch' };
}

function describeKind(m: ColumnMapping): string {
  switch (m.kind) {
    case 'qr': return 'trimmed and upper-cased; a duplicate after folding keeps the oldest row and the others become <QR>_DUP_<id>';
    case 'bag_type': return 'parent|child';
    case 'role': return 'admin|administrator|superuser → admin, biller → biller, dispatcher|employee|user|staff → dispatcher, anything else → dispatcher (reported)';
    case 'password':
      return m.passwordSource === 'plaintext-column'
        ? 'legacy plaintext column: valid werkzeug/bcrypt hashes copied, plaintext hashed with werkzeug scrypt, nothing else kept in clear'
        : 'copied verbatim; values that are not werkzeug/bcrypt hashes are kept and their users listed as needing a password reset';
    case 'email': return `trimmed; missing → <username>@invalid.tracetrack; duplicates rejected`;
    case 'weight': return "number of kg ('12.5kg' parsed); negative or unparseable rejected";
    case 'timestamp': return m.defaultNow ? 'timestamp (UTC); missing → migration time' : 'timestamp (UTC); missing stays NULL';
    case 'ref': return `reference to ${m.ref?.target}${m.ref?.sourceTable ? ` (ids of ${m.ref.sourceTable})` : ''}; unresolved → ${m.ref?.onOrphan === 'reject' ? 'row rejected' : 'NULL (reported)'}`;
    case 'bill_business_id': return "business id; missing → BILL-<id, 6 digits>";
    case 'promotion_reason': return `reason; missing → text naming the requested role`;
    default: return m.kind + (m.maxLength ? ` (longer than ${m.maxLength} → rejected)` : '');
  }
}

/** Builds the plan. Never throws for a bad source: problems are listed in `plan.problems`. */
export function planMigration(catalog: Catalog, options: PlanOptions): Plan {
  const overrides = options.overrides ?? EMPTY_OVERRIDES;
  const skip = new Set([...(options.skipTables ?? []), ...overrides.skipTables]);
  const decisions: Decision[] = [];
  const problems: string[] = [];
  const warnings: string[] = [];
  const byName = new Map(catalog.tables.map((t) => [t.name, t]));
  const used = new Map<string, Set<string>>();
  const markUsed = (table: string, column: string) => {
    if (!used.has(table)) used.set(table, new Set());
    used.get(table)!.add(column);
  };

  if (catalog.schema === options.targetSchema) {
    problems.push(`The target schema "${options.targetSchema}" is the source schema: choose another --target-schema (default tracetrack).`);
  }
  for (const name of skip) {
    if (!byName.has(name)) warnings.push(`--skip-table ${name}: no such table in schema "${catalog.schema}".`);
  }

  // 1. Which source tables feed which target (rules, then the mapping file's extra tables).
  const sourcesOf = new Map<TargetTable, string[]>();
  const claimed = new Set<string>();
  for (const target of TARGET_ORDER) {
    const names = [...TABLE_RULES[target], ...Object.entries(overrides.tables).filter(([, t]) => t === target).map(([s]) => s)];
    const present = names.filter((n) => byName.has(n) && !skip.has(n));
    for (const n of present) claimed.add(n);
    sourcesOf.set(target, present);
  }
  for (const [source, target] of Object.entries(overrides.tables)) {
    if (!byName.has(source)) problems.push(`The mapping file maps table "${source}" to ${target}, but there is no such table in schema "${catalog.schema}".`);
  }

  const only = options.onlyTables && options.onlyTables.length ? new Set(options.onlyTables) : null;
  if (only) {
    for (const t of only) if (!(TARGET_ORDER as readonly string[]).includes(t)) problems.push(`"${t}" in tables is not a target table (one of ${TARGET_ORDER.join(', ')}).`);
  }

  /** Resolves which source table a reference column's ids belong to. */
  const resolveRefSource = (fromTable: string, column: string, refTarget: TargetTable): string | null => {
    const candidates = sourcesOf.get(refTarget) ?? [];
    if (candidates.length === 0) return null;
    const override = overrides.references[`${fromTable}.${column}`];
    if (override) {
      if (!candidates.includes(override)) problems.push(`The mapping file says ${fromTable}.${column} references "${override}", which does not feed ${refTarget} (sources: ${candidates.join(', ')}).`);
      return override;
    }
    if (candidates.length === 1) return candidates[0]!;
    const fk = byName.get(fromTable)?.foreignKeys.find((f) => f.columns.length === 1 && f.columns[0] === column);
    if (fk && candidates.includes(fk.refTable)) return fk.refTable;
    if (refTarget === 'bag') {
      if (PARENT_COLUMNS.includes(column) && candidates.includes('parent_bag')) return 'parent_bag';
      if (CHILD_COLUMNS.includes(column) && candidates.includes('child_bag')) return 'child_bag';
    }
    // Family: plural tables (bags, scans, users …) reference plural tables, singular ones singular.
    const plural = fromTable.endsWith('s');
    const family = candidates.filter((c) => c.endsWith('s') === plural && !(c in IMPLIED_BAG_TYPE));
    if (family.length === 1) return family[0]!;
    problems.push(
      `Cannot tell which of ${candidates.join(', ')} the ids in ${fromTable}.${column} refer to. Add a foreign key, or a mapping file entry "references": { "${fromTable}.${column}": "<table>" }.`,
    );
    return null;
  };

  // 2. Per target table, per source: the column mappings.
  const tables: TablePlan[] = [];
  for (const target of TARGET_ORDER) {
    const sourceNames = sourcesOf.get(target)!;
    if (only && !only.has(target)) {
      for (const s of sourceNames) decisions.push({ target, source: s, decision: 'not migrated in this run (not in "tables")' });
      continue;
    }
    const merged = sourceNames.length > 1;
    const sources: SourcePlan[] = [];
    for (const sourceName of sourceNames) {
      const table = byName.get(sourceName)!;
      const keyInfo = pickKey(table);
      if (keyInfo.key) markUsed(sourceName, keyInfo.key);
      decisions.push({
        target, source: sourceName,
        decision: keyInfo.keyStrategy === 'single-batch'
          ? 'no single-column integer key: read in one batch, ids generated in a stable order (row text)'
          : `${merged ? `ids remapped through the id map (${sourceNames.length} sources feed ${target})` : 'ids kept'}; batches by ${keyInfo.key}${keyInfo.keyStrategy === 'id-column' ? ' (no primary key: the "id" column is used, duplicates rejected)' : ''}`,
      });
      const userColumns = overrides.columns[target] ?? {};
      const columns: ColumnMapping[] = [];
      for (const rule of COLUMN_RULES[target]) {
        const aliases = [...(userColumns[rule.target] ?? []), ...rule.aliases];
        // A split bag table's parent column names its parent, not a column of the same meaning as bag.parent_id for parents.
        const col = aliases.map((a) => findColumn(table, a)).find((c): c is ColumnInfo => c !== undefined && c.name !== keyInfo.key);
        const mapping = buildColumnMapping(rule, col ?? null, table, target, resolveRefSource);
        if (col) markUsed(sourceName, col.name);
        if (!col && rule.required) {
          problems.push(`Table "${sourceName}" has no column for ${target}.${rule.target} (looked for ${aliases.join(', ')}); every row would be rejected. Name the column in a mapping file: "columns": { "${target}": { "${rule.target}": ["<column>"] } }.`);
        }
        if (mapping.requestedRoleColumn) markUsed(sourceName, mapping.requestedRoleColumn);
        columns.push(mapping);
        const from = col ? `${sourceName}.${col.name}${userColumns[rule.target]?.includes(col.name) ? ' (mapping file)' : ''}` : missingText(rule, mapping);
        decisions.push({ target: `${target}.${rule.target}`, source: sourceName, decision: `← ${from}: ${describeKind(mapping)}` });
      }
      let singleBag: SourcePlan['singleBag'];
      if (target === 'scan') {
        const hasPair = columns.some((c) => (c.target === 'parent_bag_id' || c.target === 'child_bag_id') && c.source);
        const single = SCAN_SINGLE_BAG_ALIASES.map((a) => findColumn(table, a)).find(Boolean);
        if (!hasPair && single) {
          singleBag = { column: single.name, refSource: resolveRefSource(sourceName, single.name, 'bag') };
          markUsed(sourceName, single.name);
          if (findColumn(table, 'scan_type')) markUsed(sourceName, 'scan_type');
          decisions.push({ target: 'scan.parent_bag_id/child_bag_id', source: sourceName, decision: `← ${sourceName}.${single.name}: split by the scanned bag's type (parent → parent_bag_id, child → child_bag_id); a missing bag rejects the scan` });
        } else if (!hasPair) {
          problems.push(`Scan table "${sourceName}" has no bag reference (parent_bag_id/child_bag_id, parent_id/child_id or bag_id): map one in a mapping file.`);
        }
      }
      const impliedBagType = target === 'bag' ? IMPLIED_BAG_TYPE[sourceName] : undefined;
      if (impliedBagType) decisions.push({ target: 'bag.type', source: sourceName, decision: `all rows are ${impliedBagType} bags (split bag table)` });
      sources.push({
        table: sourceName,
        ...keyInfo,
        idStrategy: merged ? 'remap' : 'keep',
        columns,
        impliedBagType,
        singleBag,
        rowEstimate: Math.max(0, table.rowEstimate),
      });
    }
    const derivedLinks: DerivedLinkPlan[] = [];
    if (target === 'link') {
      const bagPlan = tables.find((t) => t.target === 'bag');
      for (const bagSource of bagPlan?.sources ?? []) {
        const parentCol = bagSource.columns.find((c) => c.target === 'parent_id' && c.source);
        if (!parentCol || !bagSource.key) continue;
        derivedLinks.push({ fromSource: bagSource.table, key: bagSource.key, parentColumn: parentCol.source!, parentSource: parentCol.ref?.sourceTable ?? null });
        decisions.push({ target: 'link', source: bagSource.table, decision: `links derived from ${bagSource.table}.${parentCol.source} where no link row names that child; a child with another parent in a link row is rejected (one parent per child)` });
      }
    }
    if (sources.length === 0 && derivedLinks.length === 0) {
      decisions.push({ target, source: '-', decision: 'no source table: created empty' });
      continue;
    }
    tables.push({ target, sources, merged, derivedLinks });
  }

  // 3. Everything else in the schema: retired, skipped, unknown.
  const retiredTables: string[] = [];
  const skippedTables: string[] = [];
  const unknownTables: { name: string; hasRows: boolean }[] = [];
  for (const t of catalog.tables) {
    if (claimed.has(t.name)) continue;
    if (skip.has(t.name)) {
      skippedTables.push(t.name);
      decisions.push({ target: '-', source: t.name, decision: 'skipped on request: backed up, not migrated' });
    } else if (RETIRED_TABLES.includes(t.name)) {
      retiredTables.push(t.name);
      decisions.push({ target: '-', source: t.name, decision: 'known retired legacy table: backed up and reported, not migrated' });
    } else if (t.name.startsWith('_migration_') || t.name.startsWith('_mig_')) {
      continue;
    } else {
      unknownTables.push({ name: t.name, hasRows: t.hasRows });
      if (t.hasRows) {
        problems.push(`Table "${t.name}" has rows and maps to no target table. Map it in a mapping file ("tables": { "${t.name}": "<target>" }) or leave it out with --skip-table ${t.name} (it is backed up either way).`);
      } else {
        warnings.push(`Table "${t.name}" is empty and maps to nothing: ignored (backed up).`);
      }
    }
  }
  const unmappedColumns: Plan['unmappedColumns'] = [];
  for (const name of claimed) {
    const table = byName.get(name)!;
    const usedCols = used.get(name) ?? new Set();
    const rest = table.columns.map((c) => c.name).filter((c) => !usedCols.has(c));
    if (rest.length) {
      unmappedColumns.push({ table: name, columns: rest });
      decisions.push({ target: '-', source: name, decision: `columns not migrated (kept in the backup): ${rest.join(', ')}` });
    }
  }
  if (tables.length === 0 && problems.length === 0) {
    problems.push(`No TraceTrack table found in schema "${catalog.schema}" (looked for ${Object.values(TABLE_RULES).flat().join(', ')}). Is --source-schema right?`);
  }

  const steps = ['prepare', ...tables.map((t) => t.target), 'finalize'];
  return {
    version: 1,
    sourceSchema: catalog.schema,
    targetSchema: options.targetSchema,
    tables,
    steps,
    decisions,
    unmappedColumns,
    retiredTables,
    skippedTables,
    unknownTables,
    problems,
    warnings,
  };
}

function missingText(rule: ColumnRule, mapping: ColumnMapping): string {
  if (mapping.kind === 'qr') return 'no QR column: the id as text';
  if (mapping.kind === 'bag_type') return 'no type column: inferred from the data (has children / has a parent), else the QR pattern';
  if (mapping.kind === 'role') return 'no role column: dispatcher';
  if (mapping.kind === 'email') return 'no email column: <username>@invalid.tracetrack';
  if (mapping.kind === 'bill_business_id') return 'no bill_id column: generated';
  if (mapping.kind === 'promotion_reason') return mapping.requestedRoleColumn ? `no reason column: from ${mapping.requestedRoleColumn}` : 'no reason column: a fixed text';
  if (rule.constantWhenMissing) return `no source column: ${rule.constantWhenMissing.toUpperCase()}`;
  if (rule.kind === 'timestamp' && rule.defaultNow) return 'no source column: migration time';
  if (rule.kind === 'password') return 'no password column: users need a password reset';
  return 'no source column: target default';
}

function buildColumnMapping(
  rule: ColumnRule,
  col: ColumnInfo | null,
  table: TableInfo,
  target: TargetTable,
  resolveRefSource: (from: string, column: string, ref: TargetTable) => string | null,
): ColumnMapping {
  const base: ColumnMapping = {
    target: rule.target,
    source: col?.name ?? null,
    sourceType: col?.udtName ?? null,
    kind: rule.kind,
    ...(rule.maxLength ? { maxLength: rule.maxLength } : {}),
    ...(rule.required ? { required: true } : {}),
    ...(rule.defaultNow ? { defaultNow: true } : {}),
    ...(rule.constantWhenMissing ? { constantWhenMissing: rule.constantWhenMissing } : {}),
    ...(rule.nonNegative ? { nonNegative: true } : {}),
  };
  if (rule.kind === 'ref') {
    const sourceTable = col ? resolveRefSource(table.name, col.name, rule.ref!) : null;
    return { ...base, ref: { target: rule.ref!, sourceTable, onOrphan: rule.onOrphan ?? 'null' } };
  }
  if (rule.kind === 'password') {
    return { ...base, passwordSource: col?.name === 'password' ? 'plaintext-column' : 'hash-column' };
  }
  if (rule.kind === 'promotion_reason') {
    return { ...base, requestedRoleColumn: findColumn(table, 'requested_role')?.name ?? null };
  }
  void target;
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
