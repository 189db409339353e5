import { describe, expect, it } from 'vitest';
import type { Catalog, ColumnInfo, TableInfo } from '../../lambdas/core/catalog';
import { EMPTY_OVERRIDES } from '../../lambdas/core/mapping-file';
import { planMigration, type Plan } from '../../lambdas/core/planner';
import { TARGET_TABLES } from '../../lambdas/core/rules';
import { escapeIdentifier, escapeLiteral, Params, qualified } from '../../lambdas/core/sql/ident';
import { buildBatchInsert, buildDerivedLinkSelect, buildMappingSelect, derivedSourceName, type MappingContext } from '../../lambdas/core/sql/mapping';
import { renderTriggerFunction, renderTriggers } from '../../lambdas/core/sql/capture';
import { renderCreateTables, renderInternalTables, renderPostLoad, renderResetSequence, TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';

/** The SQL builders: parameterised text, quoted identifiers, the complete target DDL. Pure, no database. */

const WEIRD_TABLE = 'we"ird; table';
const WEIRD_QR = 'qr "code"; DROP TABLE x';
const WEIRD_SCHEMA = 'tgt"; --';
const RUN_ID = 'run-7f3a-UNIQUE';
const RUN_TIME = '2031-02-03T04:05:06';

function col(name: string, udt: string, ordinal: number): ColumnInfo {
  return { name, dataType: udt, udtName: udt, nullable: true, defaultExpr: null, ordinal };
}

function table(name: string, cols: [string, string][]): TableInfo {
  return {
    schema: 'src', name, columns: cols.map(([n, u], i) => col(n, u, i + 1)), primaryKey: ['id'], foreignKeys: [],
    rowEstimate: 5, hasRows: true, minKey: 1, maxKey: 5,
  };
}

const catalog: Catalog = {
  schema: 'src',
  serverVersion: '16.0',
  tables: [
    table('user', [['id', 'int4'], ['name', 'text'], ['password', 'text'], ['created_at', 'text']]),
    table(WEIRD_TABLE, [['id', 'int4'], [WEIRD_QR, 'text'], ['parent_bag_id', 'int4'], ['weight', 'text'], ['owner_id', 'int4']]),
  ],
};

const plan: Plan = planMigration(catalog, {
  targetSchema: WEIRD_SCHEMA,
  overrides: { ...EMPTY_OVERRIDES, tables: { [WEIRD_TABLE]: 'bag' }, columns: { bag: { qr_id: [WEIRD_QR] } } },
});
const ctx: MappingContext = { sourceSchema: 'src', targetSchema: WEIRD_SCHEMA, offsets: {}, mode: 'load', runTime: RUN_TIME };
const tablePlan = (target: string) => plan.tables.find((t) => t.target === target)!;

describe('escapeIdentifier / escapeLiteral / qualified', () => {
  it.each([
    ['user', '"user"'],
    [WEIRD_TABLE, '"we""ird; table"'],
    ['a b', '"a b"'],
    ['"', '""""'],
  ])('escapeIdentifier(%j) = %s', (name, quoted) => {
    expect(escapeIdentifier(name)).toBe(quoted);
  });

  it('qualified quotes both parts', () => {
    expect(qualified(WEIRD_SCHEMA, WEIRD_TABLE)).toBe('"tgt""; --"."we""ird; table"');
  });

  it.each([
    ["it's", "'it''s'"],
    ['a\\b', " E'a\\\\b'"],
  ])('escapeLiteral(%j) = %s', (text, literal) => {
    expect(escapeLiteral(text)).toBe(literal);
  });

  it('Params numbers placeholders and keeps the values', () => {
    const p = new Params();
    expect(p.add(RUN_TIME, 'timestamp')).toBe('$1::timestamp');
    expect(p.add(RUN_ID)).toBe('$2');
    expect(p.values).toEqual([RUN_TIME, RUN_ID]);
  });

  it('Params binds a named value once, however often it is used', () => {
    const p = new Params();
    expect(p.add(7)).toBe('$1');
    expect(p.named('runTime', RUN_TIME, 'timestamp')).toBe('$2::timestamp');
    expect(p.named('runTime', RUN_TIME, 'timestamp')).toBe('$2::timestamp');
    expect(p.values).toEqual([7, RUN_TIME]);
  });
});

describe('mapping and batch SQL', () => {
  it('the plan maps the weird table through the mapping file', () => {
    expect(plan.problems).toEqual([]);
    expect(tablePlan('bag').sources[0]!.columns.find((c) => c.target === 'qr_id')!.source).toBe(WEIRD_QR);
  });

  it('buildMappingSelect quotes every identifier and takes the run time and key range as parameters', () => {
    const params = new Params();
    const bag = tablePlan('bag');
    const m = buildMappingSelect(bag, bag.sources[0]!, ctx, params, { lo: 40, hi: 4711 });
    expect(m.text).toContain('"src"."we""ird; table" s');
    expect(m.text).toContain('s."qr ""code""; DROP TABLE x"');
    expect(m.text).toContain('"tgt""; --"."_mig_qr_rename"');
    expect(m.text).not.toContain(RUN_TIME);
    expect(m.text).not.toContain('4711');
    expect(m.text).toMatch(/s\."id" > \$2::bigint/);
    expect(m.text).toMatch(/s\."id" <= \$3::bigint/);
    expect(params.values).toEqual([RUN_TIME, 40, 4711]);
    expect(m.columns[0]).toBe('id');
    expect(m.columns).toEqual(expect.arrayContaining(['qr_id', 'type', 'parent_id', 'user_id', 'weight_kg', 'created_at']));
  });

  it('rehashed passwords are parameters, never inlined', () => {
    const params = new Params();
    const user = tablePlan('user');
    const hash = 'scrypt:32768:8:1$SALTsaltSALTsalt$' + 'ab'.repeat(64);
    const m = buildMappingSelect(user, user.sources[0]!, ctx, params, null, { keys: [3], hashes: [hash] });
    expect(m.text).not.toContain(hash);
    expect(m.text).not.toContain('SALTsalt');
    expect(params.values).toEqual([[3], [hash], RUN_TIME]);
    expect(m.text).toContain('unnest($1::bigint[], $2::text[])');
  });

  it('buildBatchInsert takes the run id and the source label as parameters', () => {
    const params = new Params();
    const bag = tablePlan('bag');
    const mapping = buildMappingSelect(bag, bag.sources[0]!, ctx, params, { lo: null, hi: 10 });
    const q = buildBatchInsert(
      { runId: RUN_ID, target: 'bag', sourceLabel: WEIRD_TABLE, mapping, sourceSchema: 'src', targetSchema: WEIRD_SCHEMA, source: bag.sources[0]! },
      params,
    );
    expect(q.values).toEqual([RUN_TIME, 10, RUN_ID, WEIRD_TABLE]);
    expect(q.text).not.toContain(RUN_ID);
    expect(q.text).not.toContain(RUN_TIME);
    expect(q.text).toContain('INSERT INTO "tgt""; --"."bag"');
    expect(q.text).toContain('INSERT INTO "tgt""; --"."_migration_reject"');
    expect(q.text).toMatch(/SELECT \$3, 'bag', \$4, m\._rkey/);
    // Secrets are stripped from the reject row copy.
    expect(q.text).toMatch(/- ARRAY\['password', 'password_hash'/);
  });

  // Both levels of a mapping are subqueries of their own: a query that names a value or `_reject` several times
  // (Verify's aggregates filter on `_reject` three times) must not get them computed once per mention.
  it('a mapping keeps both its levels fenced (OFFSET 0), a derived link too', () => {
    const bag = tablePlan('bag');
    const fenced = /^SELECT q\.\*, [\s\S]+ AS _reject FROM \(\n {2}SELECT [\s\S]+\n {2}OFFSET 0\) q OFFSET 0$/;
    expect(buildMappingSelect(bag, bag.sources[0]!, ctx, new Params(), { lo: 40, hi: 4711 }).text).toMatch(fenced);
    expect(buildDerivedLinkSelect(tablePlan('link').derivedLinks[0]!, bag.sources[0]!, ctx, new Params(), { lo: 5, hi: 9 }).text).toMatch(fenced);
  });

  it('buildDerivedLinkSelect quotes the parent column and binds the run time by name', () => {
    const link = tablePlan('link');
    expect(link.derivedLinks).toHaveLength(1);
    const d = link.derivedLinks[0]!;
    expect(derivedSourceName(d)).toBe(`${WEIRD_TABLE}.parent_bag_id (derived link)`);
    const params = new Params();
    const m = buildDerivedLinkSelect(d, tablePlan('bag').sources[0]!, ctx, params, { lo: 5, hi: 9 });
    expect(m.text).toContain('$3::timestamp AS created_at');
    expect(m.text).toContain('"src"."we""ird; table" s');
    expect(m.text).not.toContain(RUN_TIME);
    // The child's own target bag, looked up in the batch's range of target ids only (key + offset): unbounded, every
    // batch read all the target's bags.
    expect(m.text).toMatch(/LEFT JOIN "tgt""; --"\."bag" rc ON rc\.id = s\."id" AND rc\.id > \$4::bigint AND rc\.id <= \$5::bigint\n/);
    expect(params.values).toEqual([5, 9, RUN_TIME, 5, 9]);
    expect(m.columns).toEqual(['id', 'parent_bag_id', 'child_bag_id', 'created_at']);
    // A source with an id offset (a second bag source): the bounds and the join through the offset.
    const shiftedParams = new Params();
    const shifted = buildDerivedLinkSelect(d, tablePlan('bag').sources[0]!, { ...ctx, offsets: { [WEIRD_TABLE]: 1000 } }, shiftedParams, { lo: 5, hi: 9 });
    expect(shiftedParams.values.slice(3)).toEqual([1005, 1009]);
    expect(shifted.text).toMatch(/rc ON rc\.id = \(s\."id"::bigint \+ 1000\) AND rc\.id > \$4::bigint AND rc\.id <= \$5::bigint/);
    // A key set (catch-up): no bounds.
    expect(buildDerivedLinkSelect(d, tablePlan('bag').sources[0]!, ctx, new Params(), { keys: [5, 7] }).text).toMatch(/rc ON rc\.id = s\."id"\n/);
  });
});

describe('target DDL', () => {
  const create = renderCreateTables(WEIRD_SCHEMA);

  it('creates the schema and all eight tables, quoted', () => {
    expect(create[0]).toBe('CREATE SCHEMA IF NOT EXISTS "tgt""; --"');
    expect(TARGET_TABLES).toHaveLength(8);
    for (const t of TARGET_TABLES) {
      expect(create.filter((s) => s.startsWith(`CREATE TABLE IF NOT EXISTS "tgt""; --"."${t}" (`)), t).toHaveLength(1);
    }
    expect(create.filter((s) => s.startsWith('CREATE TABLE'))).toHaveLength(8);
  });

  it('creates only the unique indexes before the load', () => {
    expect(create.filter((s) => s.startsWith('CREATE UNIQUE INDEX'))).toEqual([
      'CREATE UNIQUE INDEX IF NOT EXISTS "idx_bag_qr_id_unique_ci" ON "tgt""; --"."bag" (UPPER(qr_id))',
    ]);
    expect(create.some((s) => s.includes('FOREIGN KEY'))).toBe(false);
  });

  it.each(TARGET_TABLES)('post-load SQL of %s: its secondary indexes and every foreign key, idempotent', (t) => {
    const sql = renderPostLoad(WEIRD_SCHEMA, t);
    const ddl = TARGET_TABLE_DDL[t];
    expect(sql.filter((s) => s.startsWith('CREATE INDEX IF NOT EXISTS'))).toHaveLength(ddl.indexes.filter((i) => !i.unique).length);
    for (const fk of ddl.foreignKeys) {
      const stmt = sql.find((s) => s.includes(`ADD CONSTRAINT "${fk.name}"`));
      expect(stmt, fk.name).toBeDefined();
      expect(stmt).toContain(`FOREIGN KEY ("${fk.column}") REFERENCES "tgt""; --"."${fk.ref}"(id)`);
      expect(stmt).toContain(`IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '${fk.name}'`);
      // The regclass literal of a quoted name is itself a correctly escaped literal.
      expect(stmt).toContain(`conrelid = '"tgt""; --"."${t}"'::regclass`);
    }
  });

  // The twelve REFERENCES of ../shared/target-schema.sql: [table, column, referenced table, ON DELETE].
  const SCHEMA_FKS = [
    ['bag', 'user_id', 'user', 'SET NULL'],
    ['link', 'parent_bag_id', 'bag', 'CASCADE'],
    ['link', 'child_bag_id', 'bag', 'CASCADE'],
    ['bill', 'created_by_id', 'user', 'SET NULL'],
    ['bill_bag', 'bill_id', 'bill', 'CASCADE'],
    ['bill_bag', 'bag_id', 'bag', 'CASCADE'],
    ['scan', 'parent_bag_id', 'bag', null],
    ['scan', 'child_bag_id', 'bag', null],
    ['scan', 'user_id', 'user', 'SET NULL'],
    ['promotionrequest', 'user_id', 'user', 'CASCADE'],
    ['promotionrequest', 'admin_id', 'user', 'SET NULL'],
    ['audit_log', 'user_id', 'user', 'SET NULL'],
  ] as const;

  it('post-load foreign keys are exactly those of the target schema', () => {
    const all = TARGET_TABLES.flatMap((t) => renderPostLoad('tracetrack', t).filter((s) => s.includes('FOREIGN KEY')).map((s) => [t, s] as const));
    expect(all).toHaveLength(SCHEMA_FKS.length);
    const rendered = all.map(([t, s]) => {
      const m = /FOREIGN KEY \("([^"]+)"\) REFERENCES "tracetrack"\."([^"]+)"\(id\)(?: ON DELETE (SET NULL|CASCADE))?;/.exec(s);
      expect(m, s).not.toBeNull();
      return [t, m![1], m![2], m![3] ?? null];
    });
    expect(rendered).toEqual(SCHEMA_FKS);
  });

  it('the sequence reset goes past the largest id', () => {
    expect(renderResetSequence('tracetrack', 'user')).toBe(
      `SELECT setval(pg_get_serial_sequence('"tracetrack"."user"', 'id'), GREATEST((SELECT max(id) FROM "tracetrack"."user"), 1), (SELECT max(id) IS NOT NULL FROM "tracetrack"."user"))`,
    );
  });

  it('the internal tables are in the target schema, quoted', () => {
    const sql = renderInternalTables(WEIRD_SCHEMA);
    for (const t of ['_migration_run', '_migration_lease', '_migration_checkpoint', '_migration_reject', '_migration_id_offset', '_migration_id_map']) {
      expect(sql.some((s) => s.startsWith(`CREATE TABLE IF NOT EXISTS "tgt""; --"."${t}"`)), t).toBe(true);
    }
  });
});

describe('live source: key sets and change capture', () => {
  it('buildMappingSelect takes a key set as one bigint[] parameter, the same mapping otherwise', () => {
    const byRange = buildMappingSelect(tablePlan('bag'), tablePlan('bag').sources[0]!, ctx, new Params(), { lo: 0, hi: 9 });
    const params = new Params();
    const byKeys = buildMappingSelect(tablePlan('bag'), tablePlan('bag').sources[0]!, ctx, params, { keys: [3, 7] });
    // The run time is bound by name where the first column needs it (created_at, missing → migration time).
    expect(params.values).toEqual([RUN_TIME, [3, 7]]);
    expect(byKeys.text).toContain('s."id" = ANY($2::bigint[])');
    expect(byKeys.columns).toEqual(byRange.columns);
    // The key set replaces the range and nothing else.
    const strip = (t: string) => t.replace(/WHERE[^\n]*/g, 'WHERE …');
    expect(strip(byKeys.text)).toBe(strip(byRange.text));
  });

  it('the capture logs keys only: no row value, no password, reaches the change log', () => {
    const fn = renderTriggerFunction(RUN_ID, { table: 'user', oid: 16384, key: 'id' });
    expect(fn).toContain(`SELECT o."id"::bigint AS k FROM o UNION SELECT n."id"::bigint FROM n`);
    expect(fn).toContain('SECURITY DEFINER SET search_path = pg_catalog, pg_temp');
    expect(fn).not.toMatch(/to_jsonb|row_to_json|n\.\*|o\.\*|password/);
    const keyless = renderTriggerFunction(RUN_ID, { table: 'log', oid: 16385, key: null });
    expect(keyless).toContain('NULL::bigint WHERE EXISTS (SELECT 1 FROM n)');
    expect(renderTriggers(WEIRD_SCHEMA, { table: WEIRD_TABLE, oid: 1, key: 'id' })).toEqual([
      `CREATE TRIGGER "tracetrack_capture_ins" AFTER INSERT ON "tgt""; --"."we""ird; table" REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION "tracetrack_capture"."capture_1"()`,
      `CREATE TRIGGER "tracetrack_capture_upd" AFTER UPDATE ON "tgt""; --"."we""ird; table" REFERENCING OLD TABLE AS o NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION "tracetrack_capture"."capture_1"()`,
      `CREATE TRIGGER "tracetrack_capture_del" AFTER DELETE ON "tgt""; --"."we""ird; table" REFERENCING OLD TABLE AS o FOR EACH STATEMENT EXECUTE FUNCTION "tracetrack_capture"."capture_1"()`,
      `CREATE TRIGGER "tracetrack_capture_trunc" AFTER TRUNCATE ON "tgt""; --"."we""ird; table" FOR EACH STATEMENT EXECUTE FUNCTION "tracetrack_capture"."capture_1"()`,
    ]);
  });
});
