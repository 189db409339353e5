import type { ColumnMapping, Plan, SourcePlan } from '../plan';
import { escapeIdentifier as id, qualified } from './ident';
import { sourceFrom, translatedRefExpr } from './mapping';
import type { MappingContext } from './values';

/**
 * Which bags the data says are parents (someone's parent) or children (someone's child): the rule of a
 * bag's type where the source has none. Every source column that references a bag as a parent
 * (bag.parent_id, link.parent_bag_id) or as a child (link.child_bag_id), in target ids.
 *
 * Bulk runs keep only the two sets (_mig_bag_parent, _mig_bag_child). Live runs also keep each source
 * row's references (_mig_bag_ref), so that catch-up re-derives the roles of the bags a change touched by
 * key lookups: a scan of the sources per change would make the cutover's write freeze grow with them.
 */
export type BagRole = 'p' | 'c';

export interface BagRoleRef {
  readonly sourceTable: string;
  readonly role: BagRole;
  /** `SELECT source_key, target_id FROM <source> s WHERE …` (alias s); `keys`: restricted to those source keys. */
  readonly select: (keys?: string) => string;
}

const ROLE_TABLE: Readonly<Record<BagRole, string>> = { p: '_mig_bag_parent', c: '_mig_bag_child' };

export function bagRolesNeeded(plan: Pick<Plan, 'tables'>): boolean {
  const bag = plan.tables.find((t) => t.target === 'bag');
  return bag !== undefined && bag.sources.some((s) => !s.impliedBagType);
}

/** Every source column that references a bag as a parent or as a child, with its source. */
function bagRoleColumns(plan: Pick<Plan, 'tables'>): { source: SourcePlan; role: BagRole; ref: ColumnMapping }[] {
  const out: { source: SourcePlan; role: BagRole; ref: ColumnMapping }[] = [];
  for (const table of plan.tables.filter((t) => t.target === 'bag' || t.target === 'link')) {
    for (const s of table.sources) {
      const parent = s.columns.find((c) => (c.target === 'parent_id' || c.target === 'parent_bag_id') && c.source);
      const child = s.columns.find((c) => c.target === 'child_bag_id' && c.source);
      for (const [role, ref] of [['p', parent], ['c', child]] as const) if (ref) out.push({ source: s, role, ref });
    }
  }
  return out;
}

/** The source tables the roles are read from (what `prepare` waits for: core/work-graph.ts). */
export function bagRoleSourceTables(plan: Pick<Plan, 'tables'>): string[] {
  return [...new Set(bagRoleColumns(plan).map((c) => c.source.table))];
}

export function bagRoleRefs(plan: Plan, ctx: MappingContext): BagRoleRef[] {
  return bagRoleColumns(plan).map(({ source: s, role, ref }) => {
    const key = s.key ? `s.${id(s.key)}::bigint` : 'NULL::bigint';
    return {
      sourceTable: s.table,
      role,
      select: (keys?: string) =>
        `SELECT ${key} AS source_key, ${translatedRefExpr(ref, ctx)} AS target_id FROM ${sourceFrom(s, ctx)} WHERE s.${id(ref.source!)} IS NOT NULL${keys && s.key ? ` AND s.${id(s.key)} = ANY(${keys})` : ''}`,
    };
  });
}

/** Bulk: the sets of parents and children, from every source row (prepare). */
export function renderBagRoleSets(schema: string, refs: readonly BagRoleRef[]): string[] {
  return (['p', 'c'] as const).flatMap((role) => {
    const of = refs.filter((r) => r.role === role);
    if (!of.length) return [];
    return [`INSERT INTO ${qualified(schema, ROLE_TABLE[role])} (target_id) SELECT DISTINCT target_id FROM (${of.map((r) => r.select()).join(' UNION ALL ')}) x WHERE target_id IS NOT NULL ON CONFLICT DO NOTHING`];
  });
}

/**
 * Live: every source row's references ($1: the reference's source table), then the two sets from them
 * (prepare, in one transaction). The indexes are built after the fill: maintaining them row by row
 * took 8 s of a 12 s prepare at scale 1.
 */
export function renderBagRefsFill(schema: string, refs: readonly BagRoleRef[]): { text: string; values: unknown[] }[] {
  const table = qualified(schema, '_mig_bag_ref');
  const plain = (text: string) => ({ text, values: [] as unknown[] });
  return [
    plain(`TRUNCATE ${table}`),
    plain(`DROP INDEX IF EXISTS ${qualified(schema, REF_KEY_INDEX)}`),
    plain(`DROP INDEX IF EXISTS ${qualified(schema, REF_TARGET_INDEX)}`),
    ...refs.map((r) => ({ text: renderRefInsert(schema, r, false), values: [r.sourceTable] as unknown[] })),
    plain(`CREATE UNIQUE INDEX ${id(REF_KEY_INDEX)} ON ${table} (source_table, source_key, role)`),
    plain(`CREATE INDEX ${id(REF_TARGET_INDEX)} ON ${table} (target_id, role)`),
    ...(['p', 'c'] as const).map((role) =>
      plain(`INSERT INTO ${qualified(schema, ROLE_TABLE[role])} (target_id) SELECT DISTINCT target_id FROM ${table} WHERE role = '${role}' ON CONFLICT DO NOTHING`),
    ),
  ];
}

const REF_KEY_INDEX = '_mig_bag_ref_key';
const REF_TARGET_INDEX = '_mig_bag_ref_target';

/**
 * Inserts a reference's rows ($1 its source table). `keyed` (catch-up): only the source keys $2, an
 * existing reference replaced, returning the referenced target ids; the bulk fill returns nothing.
 */
export function renderRefInsert(schema: string, ref: BagRoleRef, keyed: boolean): string {
  const insert = `INSERT INTO ${qualified(schema, '_mig_bag_ref')} (source_table, source_key, role, target_id)
          SELECT $1::text, x.source_key, '${ref.role}', x.target_id FROM (${ref.select(keyed ? '$2::bigint[]' : undefined)}) x
           WHERE x.target_id IS NOT NULL AND x.source_key IS NOT NULL`;
  if (!keyed) return insert;
  return `${insert}
          ON CONFLICT (source_table, source_key, role) DO UPDATE SET target_id = EXCLUDED.target_id
          RETURNING target_id`;
}

/** Catch-up: forget the references of these source rows ($1 table, $2 keys), returning the bags they referenced. */
export function renderRefDelete(schema: string): string {
  return `DELETE FROM ${qualified(schema, '_mig_bag_ref')} WHERE source_table = $1 AND source_key = ANY($2::bigint[]) RETURNING target_id`;
}

/** Catch-up: the roles of these bags ($1) again, from the references kept. */
export function renderRolesOf(schema: string): string[] {
  return (['p', 'c'] as const).flatMap((role) => [
    `DELETE FROM ${qualified(schema, ROLE_TABLE[role])} WHERE target_id = ANY($1::bigint[])`,
    `INSERT INTO ${qualified(schema, ROLE_TABLE[role])} (target_id) SELECT DISTINCT target_id FROM ${qualified(schema, '_mig_bag_ref')} WHERE role = '${role}' AND target_id = ANY($1::bigint[])`,
  ]);
}
