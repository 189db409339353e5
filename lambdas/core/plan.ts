import type { MappingOverrides } from './mapping-file';
import type { TargetTable, ValueKind } from './rules';

/**
 * The plan: every decision of the analysis, JSON-serialisable, readable by a person.
 * Built from the catalog and the rules alone (no I/O), so it can be tested without a database.
 */
export interface Plan {
  readonly version: 1;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly tables: TablePlan[];
  /** Workflow migration steps in one foreign-key order (the workflow runs them as a graph: core/work-graph.ts). */
  readonly steps: string[];
  readonly decisions: Decision[];
  /** Source columns no rule reads (kept in the backup); `withData`: those holding a value in some row (set by the analysis). */
  readonly unmappedColumns: { readonly table: string; readonly columns: string[]; withData?: string[] }[];
  readonly retiredTables: string[];
  readonly skippedTables: string[];
  readonly unknownTables: { readonly name: string; readonly hasRows: boolean }[];
  /** Non-empty: the analysis refuses the source (each says what to do). */
  readonly problems: string[];
  readonly warnings: string[];
  /** Summary columns recomputed from the migrated rows even where the source has them (--recompute-summaries). */
  readonly recomputeSummaries?: boolean;
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
  /** A summary the application derives (DERIVED_COLUMNS key, e.g. `bill.linked_parent_count`). */
  readonly derivedFrom?: string;
  /** True: not read from the source; computed from the migrated rows after the load. */
  readonly derived?: boolean;
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
  /** Recompute the application's summary columns even where the source has them. */
  readonly recomputeSummaries?: boolean;
}
