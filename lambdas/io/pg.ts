import pg from 'pg';
import {
  ConnectionConfigError,
  DatabaseError,
  MigrationError,
  PermissionError,
  TransientDatabaseError,
} from '../core/errors';

/** Where to connect. Built from a URL (CLI, tests) or from an RDS secret (Lambda). */
export interface DatabaseConfig {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  readonly database: string;
  /** `disable` only on loopback by default; `verify-full` otherwise. */
  readonly sslmode: 'disable' | 'require' | 'verify-ca' | 'verify-full' | 'prefer' | 'allow';
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|::1|\[::1\])$/i;
const SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full'] as const;

export function defaultSslMode(host: string): DatabaseConfig['sslmode'] {
  return LOOPBACK.test(host) || host.startsWith('/') ? 'disable' : 'verify-full';
}

/** Parses `postgres://user:pass@host:port/db?sslmode=...`. Never echoes the password back. */
export function parseDatabaseUrl(url: string, label = 'database URL'): DatabaseConfig {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not echoed: an unparseable string may hold a password anywhere in it.
    throw new ConnectionConfigError(
      `The ${label} is not a valid URL (not shown, it may contain a password). Expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, with special characters in the password percent-encoded.`,
    );
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ConnectionConfigError(
      `The ${label} must start with postgres:// or postgresql:// (got ${parsed.protocol}//).`,
    );
  }
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''));
  if (!parsed.hostname || !database) {
    throw new ConnectionConfigError(
      `The ${label} (${redactUrl(url)}) needs a host and a database name: postgres://USER:PASSWORD@HOST:PORT/DATABASE.`,
    );
  }
  const port = parsed.port ? Number(parsed.port) : 5432;
  const sslParam = parsed.searchParams.get('sslmode');
  if (sslParam && !(SSL_MODES as readonly string[]).includes(sslParam)) {
    throw new ConnectionConfigError(`The ${label} has sslmode=${sslParam}; use one of ${SSL_MODES.join(', ')}.`);
  }
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  return {
    host,
    port,
    user: decodeURIComponent(parsed.username || 'postgres'),
    password: decodeURIComponent(parsed.password),
    database,
    sslmode: (sslParam as DatabaseConfig['sslmode']) ?? defaultSslMode(host),
  };
}

/** The standard RDS secret JSON: `{engine, host, port, username, password, dbname}`. */
export function parseRdsSecret(secretString: string, label: string): DatabaseConfig {
  let value: unknown;
  try {
    value = JSON.parse(secretString);
  } catch {
    throw new ConnectionConfigError(
      `The secret ${label} is not valid JSON. Store the standard RDS secret: {"engine":"postgres","host":…,"port":5432,"username":…,"password":…,"dbname":…}.`,
    );
  }
  const problems: string[] = [];
  const obj = (value ?? {}) as Record<string, unknown>;
  for (const key of ['host', 'username', 'password'] as const) {
    if (typeof obj[key] !== 'string' || obj[key] === '') problems.push(`"${key}" (a non-empty string)`);
  }
  if (obj.port !== undefined && !Number.isInteger(Number(obj.port))) problems.push('"port" (a number)');
  if (problems.length) {
    throw new ConnectionConfigError(`The secret ${label} lacks ${problems.join(', ')}. Fix the secret and redrive.`);
  }
  const host = String(obj.host);
  const sslmode = typeof obj.sslmode === 'string' && (SSL_MODES as readonly string[]).includes(obj.sslmode)
    ? (obj.sslmode as DatabaseConfig['sslmode'])
    : defaultSslMode(host);
  return {
    host,
    port: obj.port === undefined ? 5432 : Number(obj.port),
    user: String(obj.username),
    password: String(obj.password),
    database: typeof obj.dbname === 'string' && obj.dbname ? obj.dbname : 'postgres',
    sslmode,
  };
}

/** Masks the password of a URL: everything between the user name and the LAST '@' of the authority. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^/]*@/, '$1***@');
}

export function describeDatabase(config: DatabaseConfig): string {
  return `${config.user}@${config.host}:${config.port}/${config.database}`;
}

function sslOption(config: DatabaseConfig): pg.ClientConfig['ssl'] {
  switch (config.sslmode) {
    case 'disable':
    case 'allow':
    case 'prefer':
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      return { rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { rejectUnauthorized: true };
  }
}

export interface ClientOptions {
  /** Per-statement timeout; 0 disables. */
  readonly statementTimeoutMs?: number;
  /** Wait for locks at most this long (cutover uses it to fail instead of hanging). */
  readonly lockTimeoutMs?: number;
  readonly applicationName?: string;
}

/**
 * The tool's own session limits (README "Session limits"). They are sent in the startup packet, which
 * PostgreSQL ranks above `ALTER ROLE … SET` and `ALTER DATABASE … SET`: a role-level statement_timeout
 * shorter than one batch no longer cancels the batch. statement_timeout: 30 minutes (a Lambda lives 15;
 * no statement of ours usefully runs longer); lock_timeout: 2 minutes (a blocked lock fails with the
 * retryable 55P03 instead of hanging). TRACETRACK_STATEMENT_TIMEOUT_MS / TRACETRACK_LOCK_TIMEOUT_MS
 * change them (0 = no limit).
 */
export const DEFAULT_STATEMENT_TIMEOUT_MS = 30 * 60 * 1000;
export const DEFAULT_LOCK_TIMEOUT_MS = 2 * 60 * 1000;

export function resolveSessionLimits(env: NodeJS.ProcessEnv = process.env): { statementTimeoutMs: number; lockTimeoutMs: number } {
  const read = (name: string, def: number) => {
    const raw = env[name];
    if (raw === undefined || raw === '') return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0) throw new ConnectionConfigError(`${name} must be a whole number of milliseconds ≥ 0 (got "${raw}").`);
    return n;
  };
  return { statementTimeoutMs: read('TRACETRACK_STATEMENT_TIMEOUT_MS', DEFAULT_STATEMENT_TIMEOUT_MS), lockTimeoutMs: read('TRACETRACK_LOCK_TIMEOUT_MS', DEFAULT_LOCK_TIMEOUT_MS) };
}

export async function connect(config: DatabaseConfig, options: ClientOptions = {}): Promise<pg.Client> {
  // row_security=off (as pg_dump does): a read that a row-level security policy would filter fails
  // instead, so no query of the migration ever sees part of a table without saying so.
  // jit=off: a server built with LLVM (Debian's, RDS) JIT-compiled every batch statement, whose cost estimate is
  // far above jit_above_cost, for 0.4-1.0 s each (inlining + optimization of ~100 functions), on every batch:
  // 20 s of a scale-0.25 run on PostgreSQL 15, the 2x per row against 18 (built without LLVM) in test/bench/RESULTS.md.
  const startup = ['-c TimeZone=UTC', '-c DateStyle=ISO', '-c row_security=off', '-c jit=off'];
  const limits = resolveSessionLimits();
  // Always sent, 0 included: the role's own setting must not apply to our sessions.
  startup.push(`-c statement_timeout=${Math.floor(options.statementTimeoutMs ?? limits.statementTimeoutMs)}`);
  startup.push(`-c lock_timeout=${Math.floor(options.lockTimeoutMs ?? limits.lockTimeoutMs)}`);
  const client = new pg.Client({
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password,
    database: config.database,
    ssl: sslOption(config),
    connectionTimeoutMillis: 20_000,
    keepAlive: true,
    application_name: options.applicationName ?? 'tracetrack-migrate',
    options: startup.join(' '),
  });
  // An idle client whose server went away emits 'error'; without a listener that kills the process.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw toMigrationError(err, `connecting to ${describeDatabase(config)}`, config);
  }
  return client;
}

export async function withClient<T>(
  config: DatabaseConfig,
  fn: (client: pg.Client) => Promise<T>,
  options: ClientOptions = {},
): Promise<T> {
  const client = await connect(config, options);
  try {
    return await fn(client);
  } catch (err) {
    // Anything the driver throws mid-task (a terminated connection between batches, say) becomes a
    // named error, so Step Functions retries what is transient and fails fast on the rest.
    const e = toMigrationError(err, `Working on ${describeDatabase(config)}`, config);
    if (sqlStateOf(err) === '57014') await explainCancellation(client, e, options.statementTimeoutMs ?? resolveSessionLimits().statementTimeoutMs);
    throw e;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs `fn` in one transaction: committed when it returns, rolled back when it throws. */
export async function withTransaction<T>(client: pg.ClientBase, fn: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await fn();
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** PostgreSQL SQLSTATE codes (and Node socket codes) a rerun of the same step can survive. */
const TRANSIENT_SQLSTATES = new Set([
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '53300', // too_many_connections
  '53400', // configuration_limit_exceeded
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '08000', '08003', '08006', '08001', '08004', // connection exceptions
  '55P03', // lock_not_available (lock_timeout)
]);
const TRANSIENT_NODE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH']);
const PERMISSION_SQLSTATES = new Set(['42501']);
const CONFIG_SQLSTATES = new Set(['28P01', '28000', '3D000']);

export function isTransientDatabaseError(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e || typeof e !== 'object') return false;
  if (e.code && (TRANSIENT_SQLSTATES.has(e.code) || TRANSIENT_NODE_CODES.has(e.code))) return true;
  return /Connection terminated|connection .* closed|Client has encountered a connection error/i.test(e.message ?? '');
}

/** The SQLSTATE of a driver error, also when it is the cause of one of our errors. */
export function sqlStateOf(err: unknown): string | undefined {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 5; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return e.code;
  }
  return undefined;
}

/**
 * A statement cancelled by the server (57014): the message names the session's statement_timeout and
 * the role's own setting, so the operator knows which one fired and what to change.
 */
async function explainCancellation(client: pg.Client, e: MigrationError, sessionMs: number): Promise<void> {
  try {
    // This query must not be cancelled in turn.
    await client.query('SET statement_timeout = 0');
    const r = await client.query(
      `SELECT current_user AS role,
              (SELECT string_agg(cfg, ', ') FROM pg_db_role_setting s, unnest(s.setconfig) cfg
                WHERE s.setrole = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND cfg LIKE 'statement_timeout=%') AS role_setting`,
    );
    const { role, role_setting: roleSetting } = r.rows[0];
    const session = sessionMs === 0 ? '0 (none)' : `${sessionMs}ms`;
    e.message +=
      `\nThe server cancelled the statement. This session ran with statement_timeout = ${session} (tracetrack-migrate sets its own, ` +
      `TRACETRACK_STATEMENT_TIMEOUT_MS, default ${DEFAULT_STATEMENT_TIMEOUT_MS / 60000} min, over the role's); role "${role}" has ` +
      `${roleSetting ? `${roleSetting} (ALTER ROLE … SET)` : 'no statement_timeout of its own'}. ` +
      `Raise TRACETRACK_STATEMENT_TIMEOUT_MS (or 0 for none), or if another session cancelled it (pg_cancel_backend), just rerun with the same --run-id.`;
  } catch {
    // the connection is gone: the message stays as it is
  }
}

/** Strips anything that could be a secret from a driver message. */
export function scrubMessage(message: string, config?: DatabaseConfig): string {
  let out = message.replace(/postgres(ql)?:\/\/[^\s]+/g, (m) => redactUrl(m));
  if (config?.password) out = out.split(config.password).join('***');
  return out;
}

/** Turns a driver error into one of our named errors, with what failed and what to do. */
export function toMigrationError(err: unknown, doing: string, config?: DatabaseConfig): MigrationError {
  if (err instanceof MigrationError) return err;
  const e = err as { code?: string; message?: string };
  const detail = scrubMessage(e?.message ?? String(err), config);
  const code = e?.code ? ` [${e.code}]` : '';
  if (isTransientDatabaseError(err)) {
    return new TransientDatabaseError(`${doing} failed for a transient reason${code}: ${detail}. It is safe to retry (redrive / rerun with the same --run-id).`, { cause: err });
  }
  if (e?.code === 'ENOTFOUND') {
    return new ConnectionConfigError(`${doing}: host not found${code}. Check the host name in the URL or secret.`, { cause: err });
  }
  if (e?.code === '25006') {
    return new PermissionError(
      `${doing} was refused${code}: ${detail}. The role runs read-only transactions (default_transaction_read_only is on for it, ` +
        `or the server is a read replica), but a migration writes its target schema. Use a role that may write ` +
        `(ALTER ROLE <role> SET default_transaction_read_only = off), or keep the read-only role for --source and pass --target ` +
        `with a writable database; then rerun.`,
      { cause: err },
    );
  }
  if (e?.code && PERMISSION_SQLSTATES.has(e.code)) {
    return new PermissionError(`${doing} was refused${code}: ${detail}. Grant the privilege to the migration role (see README "Privileges") and rerun.`, { cause: err });
  }
  if (e?.code === '28P01' || e?.code === '28000') {
    return new ConnectionConfigError(`${doing}: authentication failed${code}. Check the user name and password in the URL or secret.`, { cause: err });
  }
  if (e?.code && CONFIG_SQLSTATES.has(e.code)) {
    return new ConnectionConfigError(`${doing} failed${code}: ${detail}. Check the database name.`, { cause: err });
  }
  if (/timeout expired|timed out/i.test(detail)) {
    return new ConnectionConfigError(`${doing} timed out: ${detail}. Is the host reachable from here (VPC, security group, firewall)?`, { cause: err });
  }
  return new DatabaseError(`${doing} failed${code}: ${detail}`, { cause: err });
}
