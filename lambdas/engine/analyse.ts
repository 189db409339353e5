import type pg from 'pg';
import type { Catalog } from '../core/catalog';
import { PlanError } from '../core/errors';
import type { MappingOverrides } from '../core/mapping-file';
import { planMigration, type Plan } from '../core/planner';
import { ROLE_RULES } from '../core/rules';
import { escapeIdentifier as id, qualified } from '../core/sql/ident';
import { readCatalog } from '../io/catalog';

export interface AnalyseOptions {
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly skipTables?: readonly string[];
  readonly tables?: readonly string[] | null;
  readonly overrides?: MappingOverrides;
}

/**
 * Reads the source catalog and plans the migration; adds what only the data can tell
 * (role values no rule knows). Read-only. Does not throw for a refused source: see `assertPlan`.
 */
export async function analyseSource(client: pg.ClientBase, options: AnalyseOptions): Promise<{ plan: Plan; catalog: Catalog }> {
  const catalog = await readCatalog(client, options.sourceSchema);
  const plan = planMigration(catalog, {
    targetSchema: options.targetSchema,
    skipTables: options.skipTables,
    onlyTables: options.tables ?? null,
    overrides: options.overrides,
  });
  const known = ROLE_RULES.flatMap((r) => r.from);
  for (const source of plan.tables.find((t) => t.target === 'user')?.sources ?? []) {
    const role = source.columns.find((c) => c.target === 'role')?.source;
    if (!role) continue;
    const r = await client.query(
      `SELECT ${id(role)}::text AS role, count(*)::bigint AS n FROM ${qualified(options.sourceSchema, source.table)}
        WHERE ${id(role)} IS NULL OR NOT (lower(btrim(${id(role)}::text)) = ANY($1::text[])) GROUP BY 1 ORDER BY 1`,
      [known],
    );
    if (r.rows.length) {
      const list = r.rows.map((row) => `${row.role === null ? 'NULL' : JSON.stringify(row.role)} (${row.n})`).join(', ');
      plan.warnings.push(`${source.table}.${role}: values no rule knows become dispatcher: ${list}.`);
      plan.decisions.push({ target: 'user.role', source: source.table, decision: `unknown roles → dispatcher: ${list}` });
    }
  }
  return { plan, catalog };
}

/** Refuses a plan with problems, listing every one and what to do. */
export function assertPlan(plan: Plan): void {
  if (plan.problems.length) {
    throw new PlanError(
      `The analysis refuses schema "${plan.sourceSchema}" (${plan.problems.length} problem${plan.problems.length > 1 ? 's' : ''}):\n${plan.problems.map((p) => `  - ${p}`).join('\n')}`,
    );
  }
}
