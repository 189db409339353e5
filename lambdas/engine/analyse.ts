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
  readonly recomputeSummaries?: boolean;
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
    recomputeSummaries: options.recomputeSummaries,
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
  await findUnmappedData(client, options.sourceSchema, plan);
  return { plan, catalog };
}

/**
 * Which unmapped columns hold data: those are values the target will not have, so the run says so
 * (warnings, printed by every run and kept in its plan and report), not only the analysis.
 */
async function findUnmappedData(client: pg.ClientBase, schema: string, plan: Plan): Promise<void> {
  for (const entry of plan.unmappedColumns) {
    const probes = entry.columns.map((c, i) => `EXISTS (SELECT 1 FROM ${qualified(schema, entry.table)} WHERE ${id(c)} IS NOT NULL) AS c${i}`);
    const row = (await client.query(`SELECT ${probes.join(', ')}`)).rows[0] as Record<string, boolean>;
    entry.withData = entry.columns.filter((_, i) => row[`c${i}`]);
    if (entry.withData.length) {
      plan.warnings.push(`Table "${entry.table}": column${entry.withData.length > 1 ? 's' : ''} ${entry.withData.map((c) => `"${c}"`).join(', ')} hold${entry.withData.length > 1 ? '' : 's'} data that maps to no target column (kept in the backup only). If a rule should read it, name it in a mapping file ("columns").`);
    }
  }
}

/** Refuses a plan with problems, listing every one and what to do. */
export function assertPlan(plan: Plan): void {
  if (plan.problems.length) {
    throw new PlanError(
      `The analysis refuses schema "${plan.sourceSchema}" (${plan.problems.length} problem${plan.problems.length > 1 ? 's' : ''}):\n${plan.problems.map((p) => `  - ${p}`).join('\n')}`,
    );
  }
}
