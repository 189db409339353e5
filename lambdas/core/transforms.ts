import { NUMBER_TYPES } from './catalog';
import type { ColumnMapping, SourcePlan, TablePlan } from './plan';
import {
  PARENT_QR_PATTERN,
  PLACEHOLDER_EMAIL_DOMAIN,
  ROLE_RULES,
  type ValueKind,
} from './rules';
import { escapeIdentifier as id, escapeLiteral as lit, qualified, type Params } from './sql/ident';
import {
  asBigint,
  checkableHashSql,
  floatExpr,
  foldedQrExpr,
  inTargetTerms,
  keyExpr,
  offsetOf,
  plaintextPasswordSql,
  plus,
  runTimeParam,
  targetIdExpr,
  timestampExpr,
  type MappingContext,
} from './sql/values';

/**
 * The value transforms, one entry per value kind, the pgloader way: what the plan says of it, what it does
 * when the source has no such column, the SQL that computes it (and the problems that reject a row), and
 * input → output examples. The examples are data: test/integration/transforms.test.ts runs every one on
 * PostgreSQL through the entry's own SQL.
 */

/**
 * Plaintext passwords hashed in Node for this batch, joined by source key. `deferred`: none are hashed yet;
 * their rows get PENDING_PASSWORD_HASH and the `passwords` step (engine/migrate.ts) hashes them after the load, off the critical path.
 */
export interface PasswordHashes {
  readonly keys: number[];
  readonly hashes: string[];
  readonly deferred?: boolean;
}

/**
 * What a row whose legacy plaintext is hashed later holds meanwhile: not the plaintext, not a hash the
 * application accepts. The `passwords` step replaces it (only it, by key) before `finalize`.
 */
export const PENDING_PASSWORD_HASH = '!pending-rehash';

export interface TransformInput {
  readonly m: ColumnMapping;
  readonly table: TablePlan;
  readonly source: SourcePlan;
  readonly ctx: MappingContext;
  readonly params: Params;
  readonly passwords: PasswordHashes | null;
  /** The source column as `s."name"`, null when no alias is present. */
  readonly col: string | null;
  /** The quoted target column: the name of the computed value in level 1, which problems refer to. */
  readonly name: string;
  /** Helper columns of this mapping are numbered with it (`_r3`, `_t3`, `r3`). */
  readonly n: number;
  /** A reject reason as SQL text, naming the column (and its source name where it differs). */
  readonly label: (text: string) => string;
}

export interface TransformSql {
  readonly value: string;
  /** Extra level-1 columns (raw values the problems look at). */
  readonly level1?: readonly string[];
  /**
   * `CASE WHEN … THEN <reason> END` expressions over level-1 columns: a non-NULL one rejects the row. Every row of
   * every batch (and of Verify's re-derivation) evaluates them, and PostgreSQL evaluates an AND's terms in order, so
   * the cheap test comes first (the parsed value IS NULL) and the raw value's text only for rows that did not parse:
   * `btrim(weight::text)` first took 0.5 s of a 1.9 s Verify item (350,000 bags, a float's text for every row).
   */
  readonly problems?: readonly string[];
  readonly joins?: readonly string[];
}

export interface TransformExample {
  /** The source value, as SQL text of `type` (null: SQL NULL); null `type`: the source has no such column. */
  readonly input: string | null;
  readonly type: string | null;
  /** The target value as PostgreSQL prints it (`::text`), or null. */
  readonly output: string | null;
  /** A reject reason containing this, instead of a value. */
  readonly rejected?: string;
  /** Mapping attributes the example needs (`defaultNow`, `passwordSource`, …). */
  readonly mapping?: Partial<ColumnMapping>;
}

export interface Transform {
  /** What the plan says the transform does. */
  readonly describe: (m: ColumnMapping) => string;
  /** What the plan says happens without a source column. */
  readonly whenMissing: (m: ColumnMapping) => string;
  readonly sql: (t: TransformInput) => TransformSql;
  readonly examples: readonly TransformExample[];
}

const lengthNote = (m: ColumnMapping) => (m.maxLength ? ` (longer than ${m.maxLength} → rejected)` : '');
const targetDefault = () => 'no source column: target default';

function roleExpr(expr: string): string {
  const whens = ROLE_RULES.map((r) => `WHEN lower(btrim(${expr}::text)) IN (${r.from.map(lit).join(', ')}) THEN ${lit(r.to)}`);
  return `CASE ${whens.join(' ')} ELSE 'dispatcher' END`;
}

function bagTypeSql(t: TransformInput): TransformSql {
  const { m, source, ctx, name } = t;
  const problem = `CASE WHEN ${name} IS NULL THEN ${lit('type: cannot tell whether the bag is a parent or a child (no type, no children, no parent, QR not like SB#####)')} END`;
  if (source.impliedBagType) return { value: lit(source.impliedBagType), problems: [problem] };
  const tid = targetIdExpr(source, ctx);
  const chain: string[] = [];
  if (t.col) {
    if (m.sourceType === 'bool') chain.push(`WHEN ${t.col} IS NOT NULL THEN CASE WHEN ${t.col} THEN 'parent' ELSE 'child' END`);
    else {
      const v = `lower(btrim(${t.col}::text))`;
      chain.push(`WHEN ${v} IN ('parent','p','parent_bag','parent bag') THEN 'parent'`, `WHEN ${v} IN ('child','c','child_bag','child bag') THEN 'child'`);
      chain.push(`WHEN ${v} IN ('true','t','1','yes') THEN 'parent'`, `WHEN ${v} IN ('false','f','0','no') THEN 'child'`);
    }
  }
  chain.push(`WHEN bp.target_id IS NOT NULL THEN 'parent'`);
  const parent = source.columns.find((c) => c.target === 'parent_id' && c.source);
  chain.push(`WHEN bc.target_id IS NOT NULL${parent ? ` OR s.${id(parent.source!)} IS NOT NULL` : ''} THEN 'child'`);
  chain.push(`WHEN ${foldedQrExpr(source, ctx)} ~ ${lit(PARENT_QR_PATTERN)} THEN 'parent'`);
  return {
    value: `CASE ${chain.join(' ')} END`,
    problems: [problem],
    joins: [
      `LEFT JOIN ${qualified(ctx.targetSchema, '_mig_bag_parent')} bp ON bp.target_id = ${tid}`,
      `LEFT JOIN ${qualified(ctx.targetSchema, '_mig_bag_child')} bc ON bc.target_id = ${tid}`,
    ],
  };
}

function passwordSql(t: TransformInput): TransformSql {
  const { m, col, ctx, params, source, passwords } = t;
  if (!col) return { value: `''` };
  const isHash = checkableHashSql(`${col}::text`);
  if (m.passwordSource !== 'plaintext-column') return { value: `COALESCE(${col}::text, '')` };
  // Rehashed values carry a random salt: the checksum covers verbatim hashes only.
  if (ctx.mode === 'checksum') return { value: `CASE WHEN ${isHash} THEN ${col}::text ELSE NULL END` };
  if (passwords?.deferred) {
    return { value: `CASE WHEN ${isHash} THEN ${col}::text WHEN COALESCE(${col}::text, '') = '' THEN '' ELSE ${params.add(PENDING_PASSWORD_HASH, 'text')} END` };
  }
  const keys = params.add(passwords?.keys ?? [], 'bigint[]');
  const hashes = params.add(passwords?.hashes ?? [], 'text[]');
  return {
    value: `CASE WHEN ${isHash} THEN ${col}::text WHEN COALESCE(${col}::text, '') = '' THEN '' ELSE pw.hash END`,
    joins: [`LEFT JOIN unnest(${keys}, ${hashes}) AS pw(key, hash) ON pw.key = ${keyExpr(source)}`],
    // Plaintext never reaches the target: a plaintext without its hash rejects the row.
    level1: [`(${plaintextPasswordSql(`${col}::text`)} AND pw.hash IS NULL) AS _pwbad`],
    problems: [`CASE WHEN _pwbad THEN 'password_hash: plaintext password was not hashed (internal error)' END`],
  };
}

function refSql(t: TransformInput): TransformSql {
  const { m, col, ctx, table, name, n, label } = t;
  const ref = m.ref!;
  if (!col) return { value: 'NULL::bigint' };
  const raw = `_r${n}`;
  const sourceValue = asBigint(col, m.sourceType);
  const translated = plus(sourceValue, offsetOf(ctx, ref.sourceTable));
  const level1 = [`${translated} AS ${raw}`, `${sourceValue} AS _v${n}`];
  const problems = ref.onOrphan === 'reject'
    ? [`CASE WHEN ${raw} IS NULL THEN ${label('missing')} WHEN ${name} IS NULL THEN ${label(`${ref.target} `)} || ${inTargetTerms(`_v${n}`, raw)} || ' does not exist or was rejected' END`]
    : [];
  // A reference into the table being loaded is resolved after the whole table is in (its row may come later).
  if (ref.target === table.target && ctx.mode === 'load' && !ctx.resolveSelfRefs) return { value: translated, level1, problems };
  const alias = `r${n}`;
  if (ctx.mode === 'checksum') {
    // The same value (the referenced row's id, NULL when there is none), looked up only where the target row does not
    // already hold the translated reference: a target row that holds it proves the referenced row exists (its foreign
    // key, and Verify's orphan check). Joining every source row to the referenced table took ~60 % of a scan chunk.
    const lookup = `(SELECT ${alias}.id::bigint FROM ${qualified(ctx.targetSchema, ref.target)} ${alias} WHERE ${alias}.id = ${translated})`;
    return { value: `CASE WHEN ${translated} IS NULL THEN NULL::bigint WHEN ${CHECKSUM_TARGET_ROW}.${name} = ${translated} THEN ${translated} ELSE ${lookup} END`, level1, problems };
  }
  return { value: `${alias}.id::bigint`, level1, problems, joins: [`LEFT JOIN ${qualified(ctx.targetSchema, ref.target)} ${alias} ON ${alias}.id = ${translated}`] };
}

/** Checksum mode: the target row of the same id, joined to the source row (see refSql). */
export const CHECKSUM_TARGET_ROW = '_tt';

export const TRANSFORMS: Readonly<Record<ValueKind, Transform>> = {
  text: {
    describe: (m) => `text${lengthNote(m)}`,
    whenMissing: targetDefault,
    sql: ({ col }) => ({ value: col ? `${col}::text` : 'NULL::text' }),
    examples: [
      { input: 'Rice lot 1', type: 'text', output: 'Rice lot 1' },
      { input: '42', type: 'int4', output: '42' },
      { input: 'x'.repeat(31), type: 'text', output: null, rejected: 'longer than 30 characters', mapping: { maxLength: 30 } },
    ],
  },
  int: {
    describe: () => 'integer (text parsed; not an integer or out of range → rejected)',
    whenMissing: (m) => (m.constantWhenMissing ? `no source column: ${m.constantWhenMissing}` : targetDefault()),
    sql: ({ m, col, name, n, label }) => {
      const constant = m.constantWhenMissing ? `${m.constantWhenMissing}::bigint` : 'NULL::bigint';
      if (!col) return { value: constant };
      const raw = `_r${n}`;
      const parsed = `(${asBigint(col, m.sourceType)})`;
      return {
        value: m.constantWhenMissing ? `COALESCE(${parsed}, ${m.constantWhenMissing})` : parsed,
        level1: [`${col} AS ${raw}`],
        problems: [`CASE WHEN ${raw} IS NOT NULL AND ${name} IS NULL THEN ${label('not an integer: ')} || left(${raw}::text, 40) WHEN ${name} NOT BETWEEN -2147483648 AND 2147483647 THEN ${label('out of range')} END`],
      };
    },
    examples: [
      { input: ' 7 ', type: 'text', output: '7' },
      { input: '3.0', type: 'numeric', output: '3' },
      { input: 'seven', type: 'text', output: null, rejected: 'not an integer: seven' },
      { input: '3000000000', type: 'int8', output: null, rejected: 'out of range' },
    ],
  },
  float: {
    describe: () => 'number',
    whenMissing: targetDefault,
    sql: (t) => TRANSFORMS.weight.sql(t),
    examples: [{ input: '2.5', type: 'text', output: '2.5' }],
  },
  weight: {
    describe: () => "number of kg ('12.5kg' parsed); negative or unparseable rejected",
    whenMissing: targetDefault,
    sql: ({ m, col, name, n, label }) => {
      if (!col) return { value: 'NULL::float8' };
      const raw = `_r${n}`;
      return {
        value: `(${floatExpr(col, m.sourceType)})`,
        level1: [`${col} AS ${raw}`],
        problems: [`CASE WHEN ${name} IS NULL AND ${raw} IS NOT NULL AND btrim(${raw}::text) <> '' THEN ${label('unparseable weight ')} || quote_literal(left(${raw}::text, 40)) WHEN ${name} < 0 THEN ${label('negative weight ')} || ${name}::text WHEN ${name} = 'NaN'::float8 OR ${name} IN ('Infinity'::float8, '-Infinity'::float8) THEN ${label('not a number')} END`],
      };
    },
    examples: [
      { input: '12.5kg', type: 'text', output: '12.5' },
      { input: ' 9 KG ', type: 'text', output: '9' },
      { input: '3,5', type: 'text', output: '3.5' },
      { input: '25', type: 'float8', output: '25' },
      { input: 'heavy', type: 'text', output: null, rejected: "unparseable weight 'heavy'" },
      { input: '-2.5', type: 'float8', output: null, rejected: 'negative weight -2.5' },
    ],
  },
  bool: {
    describe: () => 'boolean (t/true/1/yes/on and f/false/0/no/off)',
    whenMissing: (m) => (m.constantWhenMissing ? `no source column: ${m.constantWhenMissing.toUpperCase()}` : targetDefault()),
    sql: ({ m, col, name, n, label }) => {
      if (!col) return { value: m.constantWhenMissing ? `${m.constantWhenMissing.toUpperCase()}::boolean` : 'NULL::boolean' };
      if (m.sourceType === 'bool') return { value: col };
      if (m.sourceType && NUMBER_TYPES.includes(m.sourceType)) return { value: `(${col} <> 0)` };
      const raw = `_r${n}`;
      return {
        value: `CASE WHEN lower(btrim(${col}::text)) IN ('t','true','1','yes','y','on') THEN TRUE WHEN lower(btrim(${col}::text)) IN ('f','false','0','no','n','off') THEN FALSE END`,
        level1: [`${col} AS ${raw}`],
        problems: [`CASE WHEN ${name} IS NULL AND ${raw} IS NOT NULL AND btrim(${raw}::text) <> '' THEN ${label('not a boolean: ')} || quote_literal(left(${raw}::text, 40)) END`],
      };
    },
    examples: [
      { input: 'Yes', type: 'text', output: 'true' },
      { input: '0', type: 'int4', output: 'false' },
      { input: 'maybe', type: 'text', output: null, rejected: "not a boolean: 'maybe'" },
      { input: null, type: null, output: 'true', mapping: { constantWhenMissing: 'true' } },
    ],
  },
  timestamp: {
    describe: (m) => (m.defaultNow ? 'timestamp (UTC); missing → migration time' : 'timestamp (UTC); missing stays NULL'),
    whenMissing: (m) => (m.defaultNow ? 'no source column: migration time' : targetDefault()),
    sql: ({ m, col, ctx, params, name, n, label }) => {
      void name;
      const parsed = col ? timestampExpr(ctx, col, m.sourceType) : 'NULL::timestamp';
      const value = m.defaultNow ? `COALESCE(${parsed}, ${runTimeParam(ctx, params)})` : parsed;
      if (!col || ['timestamp', 'timestamptz', 'date'].includes(m.sourceType ?? '')) return { value };
      return {
        value,
        level1: [`${col} AS _r${n}`, `${parsed} AS _t${n}`],
        problems: [`CASE WHEN _t${n} IS NULL AND _r${n} IS NOT NULL AND btrim(_r${n}::text) <> '' THEN ${label('unparseable timestamp ')} || quote_literal(left(_r${n}::text, 40)) END`],
      };
    },
    examples: [
      { input: '2024-03-01 12:00:00+05:30', type: 'text', output: '2024-03-01 06:30:00' },
      { input: '2024-01-12T11:00:00Z', type: 'text', output: '2024-01-12 11:00:00' },
      { input: '2024-01-01 08:00:00+00', type: 'timestamptz', output: '2024-01-01 08:00:00' },
      { input: null, type: 'timestamp', output: '2026-01-01 00:00:00', mapping: { defaultNow: true } },
      { input: 'not a date', type: 'text', output: null, rejected: "unparseable timestamp 'not a date'" },
    ],
  },
  ref: {
    describe: (m) => `reference to ${m.ref?.target}${m.ref?.sourceTable ? ` (ids of ${m.ref.sourceTable})` : ''}; unresolved → ${m.ref?.onOrphan === 'reject' ? 'row rejected' : 'NULL (reported)'}`,
    whenMissing: targetDefault,
    sql: refSql,
    examples: [
      { input: '999', type: 'int4', output: null, mapping: { ref: { target: 'user', sourceTable: null, onOrphan: 'null' } } },
      { input: '999', type: 'int4', output: null, rejected: 'user 999 does not exist or was rejected', mapping: { ref: { target: 'user', sourceTable: null, onOrphan: 'reject' } } },
    ],
  },
  qr: {
    describe: () => 'trimmed and upper-cased; a duplicate after folding keeps the oldest row and the others become <QR>_DUP_<id>',
    whenMissing: () => 'no QR column: the id as text',
    sql: ({ source, ctx, n }) => ({
      value: `COALESCE(qr${n}.qr_id, ${foldedQrExpr(source, ctx)})`,
      joins: [`LEFT JOIN ${qualified(ctx.targetSchema, '_mig_qr_rename')} qr${n} ON qr${n}.target_id = ${targetIdExpr(source, ctx)}`],
    }),
    examples: [
      { input: ' sb00001 ', type: 'text', output: 'SB00001' },
      { input: null, type: null, output: '1' },
    ],
  },
  bag_type: {
    describe: () => 'parent|child: explicit type, else is_parent, else the data (has children / has a parent), else the QR pattern',
    whenMissing: () => 'no type column: inferred from the data (has children / has a parent), else the QR pattern',
    sql: bagTypeSql,
    examples: [
      { input: 'Parent', type: 'text', output: 'parent' },
      { input: 'false', type: 'bool', output: 'child' },
      { input: 'crate', type: 'text', output: null, rejected: 'cannot tell whether the bag is a parent or a child' },
    ],
  },
  role: {
    describe: () => `${ROLE_RULES.map((r) => `${r.from.join('|')} → ${r.to}`).join(', ')}, anything else → dispatcher (reported)`,
    whenMissing: () => 'no role column: dispatcher',
    sql: ({ col }) => ({ value: col ? roleExpr(col) : `'dispatcher'` }),
    examples: [
      { input: 'ADMINISTRATOR', type: 'text', output: 'admin' },
      { input: ' employee', type: 'text', output: 'dispatcher' },
      { input: 'Supervisor', type: 'text', output: 'dispatcher' },
    ],
  },
  password: {
    describe: (m) => (m.passwordSource === 'plaintext-column'
      ? 'legacy plaintext column: valid werkzeug/bcrypt hashes copied, plaintext hashed with werkzeug scrypt, nothing else kept in clear'
      : 'copied verbatim; values that are not werkzeug/bcrypt hashes are kept and their users listed as needing a password reset'),
    whenMissing: () => 'no password column: users need a password reset',
    sql: passwordSql,
    examples: [
      { input: 'RESET', type: 'text', output: 'RESET', mapping: { passwordSource: 'hash-column' } },
      { input: 'hunter2', type: 'text', output: 'scrypt:32768:8:1$example$hash', mapping: { passwordSource: 'plaintext-column' } },
      { input: null, type: null, output: '' },
    ],
  },
  email: {
    describe: () => `trimmed; missing → <username>@${PLACEHOLDER_EMAIL_DOMAIN}; duplicates rejected`,
    whenMissing: () => `no email column: <username>@${PLACEHOLDER_EMAIL_DOMAIN}`,
    sql: ({ col, source }) => {
      const username = source.columns.find((c) => c.target === 'username');
      const fallback = username?.source ? `(s.${id(username.source)}::text || '@${PLACEHOLDER_EMAIL_DOMAIN}')` : 'NULL::text';
      return { value: col ? `COALESCE(NULLIF(btrim(${col}::text), ''), ${fallback})` : fallback };
    },
    examples: [
      { input: ' kiran@example.org ', type: 'text', output: 'kiran@example.org' },
      { input: '', type: 'text', output: null },
    ],
  },
  bill_business_id: {
    describe: () => 'business id; missing → BILL-<id, 6 digits>',
    whenMissing: () => 'no bill_id column: generated',
    sql: ({ col, source, ctx }) => {
      const generated = `('BILL-' || lpad(${targetIdExpr(source, ctx)}::text, 6, '0'))`;
      return { value: col ? `COALESCE(NULLIF(btrim(${col}::text), ''), ${generated})` : generated };
    },
    examples: [
      { input: 'BILL-0007', type: 'text', output: 'BILL-0007' },
      { input: ' ', type: 'text', output: 'BILL-000001' },
    ],
  },
  promotion_reason: {
    describe: () => 'reason; missing → text naming the requested role',
    whenMissing: (m) => (m.requestedRoleColumn ? `no reason column: from ${m.requestedRoleColumn}` : 'no reason column: a fixed text'),
    sql: ({ m, col }) => {
      const fromRole = m.requestedRoleColumn ? `'Requested role: ' || s.${id(m.requestedRoleColumn)}::text` : 'NULL::text';
      return { value: `COALESCE(${col ? `NULLIF(btrim(${col}::text), ''), ` : ''}${fromRole}, 'Migrated without a reason')` };
    },
    examples: [
      { input: 'Runs the night shift', type: 'text', output: 'Runs the night shift' },
      { input: null, type: 'text', output: 'Migrated without a reason' },
    ],
  },
};
