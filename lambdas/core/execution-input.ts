import { assertRunId } from './backup-keys';
import type { ExecutionInput, RunContext } from './contract';
import { InputError } from './errors';
import { TARGET_TABLES } from './rules';

/**
 * The execution input, parsed: untrusted until every field is checked, and every problem reported at once.
 * Pure; Preflight calls it with the execution name as the fallback run id.
 */

export const DEFAULT_BATCH_SIZE = 200_000;
/** Work items (and connections) at once when neither the input nor the stack says otherwise. */
export const DEFAULT_CONCURRENCY = 4;
export const MAX_CONCURRENCY = 64;
const IDENT = /^[A-Za-z_][A-Za-z0-9_$ -]{0,62}$/;

/** Validates the execution input; every problem is reported at once. */
export function resolveExecutionInput(
  input: ExecutionInput | unknown, fallbackRunId: () => string, defaultConcurrency = DEFAULT_CONCURRENCY,
): Omit<RunContext, 'runTime' | 'crossDatabase'> & { readonly retryRejects?: true } {
  const raw = (input ?? {}) as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof input !== 'object' || input === null || Array.isArray(input)) problems.push('the input must be a JSON object');
  const known = ['runId', 'sourceSchema', 'targetSchema', 'tables', 'skipTables', 'batchSize', 'cutover', 'dryRun', 'mappingKey', 'appSchema', 'legacyJsonBackup', 'recomputeSummaries', 'retryRejects', 'live', 'concurrency'];
  for (const k of Object.keys(raw)) if (!known.includes(k)) problems.push(`unknown field "${k}" (allowed: ${known.join(', ')})`);
  const str = (k: string, def: string) => {
    const v = raw[k];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'string' || !IDENT.test(v)) problems.push(`"${k}" must be a schema name (letters, digits, _; at most 63)`);
    return String(v);
  };
  const list = (k: string): string[] | null => {
    const v = raw[k];
    if (v === undefined || v === null) return null;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      problems.push(`"${k}" must be a list of table names`);
      return null;
    }
    return v as string[];
  };
  const bool = (k: string) => {
    const v = raw[k];
    if (v === undefined || v === null) return false;
    if (typeof v !== 'boolean') problems.push(`"${k}" must be true or false`);
    return v === true;
  };
  let runId = raw.runId === undefined || raw.runId === null ? '' : String(raw.runId);
  if (!runId) runId = fallbackRunId();
  try {
    assertRunId(runId);
  } catch (e) {
    problems.push((e as Error).message);
  }
  const tables = list('tables');
  for (const t of tables ?? []) if (!(TARGET_TABLES as readonly string[]).includes(t)) problems.push(`"tables" has "${t}", not a target table (${TARGET_TABLES.join(', ')})`);
  const batchSize = raw.batchSize === undefined || raw.batchSize === null ? DEFAULT_BATCH_SIZE : Number(raw.batchSize);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 5_000_000) problems.push('"batchSize" must be a whole number from 1 to 5,000,000');
  const concurrency = raw.concurrency === undefined || raw.concurrency === null ? defaultConcurrency : Number(raw.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > MAX_CONCURRENCY) problems.push(`"concurrency" must be a whole number from 1 to ${MAX_CONCURRENCY} (at most that many source/target connections)`);
  const mappingKey = raw.mappingKey === undefined || raw.mappingKey === null ? null : String(raw.mappingKey);
  const ctx = {
    runId,
    sourceSchema: str('sourceSchema', 'public'),
    targetSchema: str('targetSchema', 'tracetrack'),
    appSchema: str('appSchema', 'public'),
    tables,
    skipTables: list('skipTables') ?? [],
    batchSize,
    concurrency,
    cutover: bool('cutover'),
    dryRun: bool('dryRun'),
    legacyJsonBackup: bool('legacyJsonBackup'),
    recomputeSummaries: bool('recomputeSummaries'),
    retryRejects: bool('retryRejects'),
    live: bool('live'),
    mappingKey,
    prefix: `runs/${runId}/`,
  };
  if (ctx.retryRejects && (raw.runId === undefined || raw.runId === null)) problems.push('"retryRejects" needs the "runId" of the run whose rejected rows are retried');
  if (ctx.live && ctx.dryRun) problems.push('"live" and "dryRun" exclude each other (a dry run writes nothing, a live run installs change capture)');
  if (ctx.retryRejects && ctx.dryRun) problems.push('"retryRejects" and "dryRun" exclude each other');
  if (ctx.sourceSchema === ctx.targetSchema) problems.push(`"targetSchema" must differ from "sourceSchema" (both are "${ctx.sourceSchema}")`);
  const { retryRejects, ...resolved } = ctx;
  if (problems.length) {
    throw new InputError(`The execution input has ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\nFix the input and start a new execution.`);
  }
  return { ...resolved, ...(retryRejects ? { retryRejects: true } : {}) };
}

