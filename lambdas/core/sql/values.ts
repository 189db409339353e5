import { INTEGER_TYPES, NUMBER_TYPES } from '../catalog';
import type { SourcePlan } from '../plan';
import { BCRYPT_HASH_PATTERN, WERKZEUG_HASH_PATTERN_UNBOUNDED, WERKZEUG_SCRYPT_HEX_DIGITS } from '../rules';
import { escapeIdentifier as id, escapeLiteral as lit, Params, qualified } from './ident';

/**
 * The small SQL value expressions every mapping query is made of: keys and target ids, integers, floats
 * and timestamps read from any column type, the run time. Pure text; values always go in as parameters.
 */

export interface MappingContext {
  /** Schema the source tables are read from (the source schema, or the staging copy). */
  readonly sourceSchema: string;
  readonly targetSchema: string;
  /** Id offset per source table (0 where ids are kept). */
  readonly offsets: Readonly<Record<string, number>>;
  /** `load`: self references taken as they are (fixed after the table is complete); `checksum`: resolved. */
  readonly mode: 'load' | 'checksum';
  /**
   * `load` only: resolve self references against the target now (a missing row → NULL) instead of after
   * the table; a retry of rejected rows (lambdas/engine/retry-rejects.ts) inserts into a table that
   * already has its foreign keys.
   */
  readonly resolveSelfRefs?: boolean;
  /** The run's migration time (UTC, ISO without zone): replaces missing timestamps. */
  readonly runTime: string;
}

/** The run time as a query parameter, bound once per query by name (see Params.named). */
export function runTimeParam(ctx: MappingContext, params: Params): string {
  return params.named('runTime', ctx.runTime, 'timestamp');
}

export function offsetOf(ctx: MappingContext, source: string | null): number {
  return source ? ctx.offsets[source] ?? 0 : 0;
}

export function plus(expr: string, offset: number): string {
  return offset === 0 ? expr : `(${expr} + ${offset})`;
}

/** An integer read from any column type; text that is not an integer yields NULL. */
export function asBigint(expr: string, udt: string | null): string {
  if (udt && INTEGER_TYPES.includes(udt)) return `${expr}::bigint`;
  if (udt && NUMBER_TYPES.includes(udt)) return `CASE WHEN ${expr} = trunc(${expr}) THEN ${expr}::bigint END`;
  return `CASE WHEN btrim(${expr}::text) ~ '^[+-]?[0-9]{1,18}$' THEN btrim(${expr}::text)::bigint END`;
}

export function timestampExpr(ctx: MappingContext, expr: string, udt: string | null): string {
  switch (udt) {
    case 'timestamp': return expr;
    case 'timestamptz': return `(${expr} AT TIME ZONE 'UTC')`;
    case 'date': return `${expr}::timestamp`;
    case 'int4': case 'int8': case 'numeric': case 'float8': return `(to_timestamp(${expr}) AT TIME ZONE 'UTC')`;
    default: return `${qualified(ctx.targetSchema, '_mig_try_timestamp')}(${expr}::text)`;
  }
}

// One capturing group (the number); the others are non-capturing: with capturing groups PostgreSQL's
// regex engine was 8x slower (1.26 s against 0.16 s for 50,000 text weights).
const WEIGHT_REGEX = "'(?i)^\\s*([+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+))\\s*(?:kg|kgs|kilo|kilos|kilogram|kilograms)?\\s*$'";

export function floatExpr(expr: string, udt: string | null): string {
  if (udt && NUMBER_TYPES.includes(udt)) return `${expr}::float8`;
  return `replace(substring(${expr}::text from ${WEIGHT_REGEX}), ',', '.')::float8`;
}

/** The target id of the row being read. */
export function targetIdExpr(source: SourcePlan, ctx: MappingContext): string {
  if (!source.key) return plus('s._rownum', offsetOf(ctx, source.table));
  return plus(`s.${id(source.key)}::bigint`, offsetOf(ctx, source.table));
}

/** The source key of the row being read (its id, or the generated row number of a table without one). */
export function keyExpr(source: SourcePlan): string {
  return source.key ? `s.${id(source.key)}::bigint` : 's._rownum';
}

/** Folded QR of a bag source row (before duplicate renaming). */
export function foldedQrExpr(source: SourcePlan, ctx: MappingContext): string {
  const qr = source.columns.find((c) => c.target === 'qr_id');
  const idText = `${targetIdExpr(source, ctx)}::text`;
  if (!qr?.source) return idText;
  return `COALESCE(NULLIF(upper(btrim(s.${id(qr.source)}::text)), ''), ${idText})`;
}

/** A source id as a reason shows it: `404`, or `404 (target id 414)` where the id map moved it. */
export function inTargetTerms(sourceValue: string, targetId: string): string {
  return `${sourceValue}::text || CASE WHEN ${targetId} IS DISTINCT FROM ${sourceValue} THEN ' (target id ' || ${targetId}::text || ')' ELSE '' END`;
}

/**
 * SQL: `expr` (text) is a password hash the application can check: WERKZEUG_HASH_PATTERN or BCRYPT_HASH_PATTERN
 * (rules.ts, the one definition), the scrypt key's digit count checked by length (WERKZEUG_HASH_PATTERN_UNBOUNDED).
 */
export function checkableHashSql(expr: string): string {
  const scryptDigits = `(${expr} NOT LIKE 'scrypt:%' OR length(split_part(${expr}, '$', 3)) = ${WERKZEUG_SCRYPT_HEX_DIGITS})`;
  return `((${expr} ~ ${lit(WERKZEUG_HASH_PATTERN_UNBOUNDED)} AND ${scryptDigits}) OR ${expr} ~ ${lit(BCRYPT_HASH_PATTERN)})`;
}

/** SQL: `expr` (text) is a legacy plaintext password: not empty and not a checkable hash (the migration hashes it). */
export function plaintextPasswordSql(expr: string): string {
  return `(COALESCE(${expr}, '') <> '' AND NOT ${checkableHashSql(expr)})`;
}
