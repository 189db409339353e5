import { escapeIdentifier, escapeLiteral, qualified } from './ident';
import type { TargetTable } from '../rules';

/**
 * The project's own DDL of the target schema (../shared/target-schema.sql), versioned.
 * Phases (pgloader's order): tables with their primary keys, unique keys and checks first
 * (the load needs them to detect duplicates); secondary indexes and foreign keys after the
 * bulk load, which was measured 5.5× faster than loading with them in place.
 */
export const TARGET_DDL_VERSION = 1;

/**
 * ISO timestamps that always cast without error: day 29/30 only outside February, 31 only in long
 * months, hours 00-23, optional fraction and zone. Anything else goes through the careful path.
 */
export const FAST_TIMESTAMP_PATTERN =
  '^(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})-' +
  '((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)' +
  '([ T]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,6})?)?)?' +
  '(Z|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?)?$';

/** A column of the target schema (../shared/target-schema.sql), as data. */
export interface TargetColumn {
  readonly name: string;
  readonly type: 'serial' | 'integer' | 'varchar' | 'text' | 'boolean' | 'timestamp' | 'float8';
  /** VARCHAR(n): longer values are rejected, never truncated. */
  readonly maxLength?: number;
  readonly notNull?: boolean;
  readonly unique?: boolean;
  /** SQL default expression. */
  readonly default?: string;
  readonly check?: string;
  readonly checkName?: string;
}

interface TableDdl {
  readonly columns: readonly TargetColumn[];
  /** Table constraints (multi-column unique keys). */
  readonly constraints?: readonly string[];
  readonly indexes: readonly { name: string; unique?: boolean; on: string }[];
  readonly foreignKeys: readonly { name: string; column: string; ref: TargetTable; onDelete?: string }[];
}

const NOW_UTC = "(now() AT TIME ZONE 'utc')";

export const TARGET_TABLE_DDL: Readonly<Record<TargetTable, TableDdl>> = {
  user: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'username', type: 'varchar', maxLength: 64, notNull: true, unique: true },
      { name: 'email', type: 'varchar', maxLength: 120, notNull: true, unique: true },
      { name: 'password_hash', type: 'varchar', maxLength: 256, notNull: true },
      { name: 'role', type: 'varchar', maxLength: 20, default: "'dispatcher'" },
      { name: 'dispatch_area', type: 'varchar', maxLength: 30 },
      { name: 'verification_token', type: 'varchar', maxLength: 100 },
      { name: 'verified', type: 'boolean', default: 'FALSE' },
      { name: 'created_at', type: 'timestamp', default: NOW_UTC },
      { name: 'failed_login_attempts', type: 'integer', default: '0' },
      { name: 'locked_until', type: 'timestamp' },
      { name: 'last_failed_login', type: 'timestamp' },
      { name: 'password_reset_token', type: 'varchar', maxLength: 100 },
      { name: 'password_reset_token_expires', type: 'timestamp' },
      { name: 'totp_secret', type: 'varchar', maxLength: 32 },
      { name: 'two_fa_enabled', type: 'boolean', default: 'FALSE' },
    ],
    indexes: [
      { name: 'idx_user_role_dispatch_area', on: '(role, dispatch_area)' },
      { name: 'idx_user_created_at', on: '(created_at)' },
      { name: 'idx_user_role_created', on: '(role, created_at)' },
    ],
    foreignKeys: [],
  },
  bag: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'qr_id', type: 'varchar', maxLength: 255, notNull: true },
      { name: 'type', type: 'varchar', maxLength: 10, notNull: true },
      { name: 'name', type: 'varchar', maxLength: 100 },
      { name: 'child_count', type: 'integer' },
      { name: 'parent_id', type: 'integer' },
      { name: 'user_id', type: 'integer' },
      { name: 'dispatch_area', type: 'varchar', maxLength: 30 },
      { name: 'status', type: 'varchar', maxLength: 20, default: "'pending'" },
      { name: 'weight_kg', type: 'float8', default: '0.0', checkName: 'check_bag_weight_non_negative', check: 'weight_kg >= 0' },
      { name: 'created_at', type: 'timestamp', default: NOW_UTC },
      { name: 'updated_at', type: 'timestamp', default: NOW_UTC },
    ],
    indexes: [
      // Unique: present during the load (duplicates are detected by it).
      { name: 'idx_bag_qr_id_unique_ci', unique: true, on: '(UPPER(qr_id))' },
      { name: 'idx_bag_type_created', on: '(type, created_at)' },
      { name: 'idx_bag_parent_id', on: '(parent_id)' },
      { name: 'idx_bag_user_id', on: '(user_id)' },
      { name: 'idx_bag_type_area_created', on: '(type, dispatch_area, created_at)' },
      // The application looks bags up by exact qr_id on every scan; the unique index is on UPPER(qr_id).
      { name: 'idx_bag_qr_id', on: '(qr_id)' },
      { name: 'idx_bag_created_at', on: '(created_at)' },
      { name: 'idx_bag_name', on: '(name)' },
      { name: 'idx_bag_dispatch_area', on: '(dispatch_area)' },
      { name: 'idx_bag_user_type', on: '(user_id, type)' },
    ],
    foreignKeys: [{ name: 'bag_user_id_fkey', column: 'user_id', ref: 'user', onDelete: 'SET NULL' }],
  },
  link: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'parent_bag_id', type: 'integer', notNull: true },
      { name: 'child_bag_id', type: 'integer', notNull: true },
      { name: 'created_at', type: 'timestamp', default: NOW_UTC },
    ],
    constraints: [
      'CONSTRAINT uq_parent_child UNIQUE (parent_bag_id, child_bag_id)',
      'CONSTRAINT link_child_bag_id_unique UNIQUE (child_bag_id)',
    ],
    indexes: [{ name: 'idx_link_parent_id', on: '(parent_bag_id)' }],
    foreignKeys: [
      { name: 'link_parent_bag_id_fkey', column: 'parent_bag_id', ref: 'bag', onDelete: 'CASCADE' },
      { name: 'link_child_bag_id_fkey', column: 'child_bag_id', ref: 'bag', onDelete: 'CASCADE' },
    ],
  },
  bill: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'bill_id', type: 'varchar', maxLength: 50, notNull: true, unique: true },
      { name: 'description', type: 'text' },
      { name: 'parent_bag_count', type: 'integer', default: '1' },
      { name: 'total_weight_kg', type: 'float8', default: '0.0', check: 'total_weight_kg >= 0' },
      { name: 'expected_weight_kg', type: 'float8', default: '0.0', check: 'expected_weight_kg >= 0' },
      { name: 'total_child_bags', type: 'integer', default: '0' },
      { name: 'linked_parent_count', type: 'integer', notNull: true, default: '0', check: 'linked_parent_count >= 0' },
      { name: 'status', type: 'varchar', maxLength: 20, default: "'new'" },
      { name: 'destination', type: 'varchar', maxLength: 200 },
      { name: 'vehicle_number', type: 'varchar', maxLength: 50 },
      { name: 'created_by_id', type: 'integer' },
      { name: 'created_at', type: 'timestamp', default: NOW_UTC },
      { name: 'updated_at', type: 'timestamp', default: NOW_UTC },
    ],
    indexes: [
      { name: 'idx_bill_status_created', on: '(status, created_at)' },
      { name: 'idx_bill_created_at', on: '(created_at)' },
    ],
    foreignKeys: [{ name: 'bill_created_by_id_fkey', column: 'created_by_id', ref: 'user', onDelete: 'SET NULL' }],
  },
  bill_bag: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'bill_id', type: 'integer', notNull: true },
      { name: 'bag_id', type: 'integer', notNull: true },
      { name: 'created_at', type: 'timestamp', default: NOW_UTC },
    ],
    constraints: [
      'CONSTRAINT uq_bill_bag_new UNIQUE (bill_id, bag_id)',
    ],
    indexes: [{ name: 'idx_bill_bag_bag_id', on: '(bag_id)' }],
    foreignKeys: [
      { name: 'bill_bag_bill_id_fkey', column: 'bill_id', ref: 'bill', onDelete: 'CASCADE' },
      { name: 'bill_bag_bag_id_fkey', column: 'bag_id', ref: 'bag', onDelete: 'CASCADE' },
    ],
  },
  scan: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'timestamp', type: 'timestamp', default: NOW_UTC },
      { name: 'parent_bag_id', type: 'integer' },
      { name: 'child_bag_id', type: 'integer' },
      { name: 'user_id', type: 'integer' },
    ],
    indexes: [
      { name: 'idx_scan_parent_bag', on: '(parent_bag_id)' },
      { name: 'idx_scan_child_bag', on: '(child_bag_id)' },
      { name: 'idx_scan_user_timestamp', on: '(user_id, "timestamp")' },
      { name: 'idx_scan_timestamp_user', on: '("timestamp", user_id)' },
    ],
    foreignKeys: [
      { name: 'scan_parent_bag_id_fkey', column: 'parent_bag_id', ref: 'bag' },
      { name: 'scan_child_bag_id_fkey', column: 'child_bag_id', ref: 'bag' },
      { name: 'scan_user_id_fkey', column: 'user_id', ref: 'user', onDelete: 'SET NULL' },
    ],
  },
  promotionrequest: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'user_id', type: 'integer', notNull: true },
      { name: 'reason', type: 'text', notNull: true },
      { name: 'status', type: 'varchar', maxLength: 20, default: "'pending'" },
      { name: 'admin_id', type: 'integer' },
      { name: 'admin_notes', type: 'text' },
      { name: 'requested_at', type: 'timestamp', default: NOW_UTC },
      { name: 'processed_at', type: 'timestamp' },
    ],
    indexes: [
      { name: 'idx_promotion_status_requested', on: '(status, requested_at)' },
      { name: 'idx_promotion_user_id', on: '(user_id)' },
      { name: 'idx_promotion_requested_at', on: '(requested_at)' },
    ],
    foreignKeys: [
      { name: 'promotionrequest_user_id_fkey', column: 'user_id', ref: 'user', onDelete: 'CASCADE' },
      { name: 'promotionrequest_admin_id_fkey', column: 'admin_id', ref: 'user', onDelete: 'SET NULL' },
    ],
  },
  audit_log: {
    columns: [
      { name: 'id', type: 'serial' },
      { name: 'timestamp', type: 'timestamp', notNull: true, default: NOW_UTC },
      { name: 'user_id', type: 'integer' },
      { name: 'action', type: 'varchar', maxLength: 50, notNull: true },
      { name: 'entity_type', type: 'varchar', maxLength: 20, notNull: true },
      { name: 'entity_id', type: 'integer' },
      { name: 'details', type: 'text' },
      { name: 'ip_address', type: 'varchar', maxLength: 45 },
      { name: 'before_state', type: 'text' },
      { name: 'after_state', type: 'text' },
      { name: 'request_id', type: 'varchar', maxLength: 36 },
    ],
    indexes: [
      { name: 'idx_audit_entity', on: '(entity_type, entity_id)' },
      { name: 'idx_audit_user_timestamp', on: '(user_id, "timestamp")' },
      { name: 'idx_audit_action_timestamp', on: '(action, "timestamp")' },
      { name: 'idx_audit_timestamp', on: '("timestamp")' },
      { name: 'idx_audit_request_id', on: '(request_id)' },
    ],
    foreignKeys: [{ name: 'audit_log_user_id_fkey', column: 'user_id', ref: 'user', onDelete: 'SET NULL' }],
  },
};

/**
 * The indexes the application's newest models declare (APP_RULES.md), by their columns. Each is served
 * by an index of the target (its own, or one whose leading columns are these, such as a unique key's):
 * test/integration/legacy-reality.test.ts proves it on a migrated schema.
 */
export const APP_INDEXES: Readonly<Record<TargetTable, readonly (readonly string[])[]>> = {
  bag: [['qr_id'], ['type'], ['created_at'], ['type', 'created_at'], ['name'], ['parent_id'], ['user_id'], ['dispatch_area'], ['type', 'dispatch_area'], ['type', 'dispatch_area', 'created_at'], ['user_id', 'type']],
  link: [['parent_bag_id'], ['child_bag_id'], ['parent_bag_id', 'child_bag_id']],
  bill: [['bill_id'], ['status'], ['created_at'], ['status', 'created_at']],
  bill_bag: [['bill_id'], ['bag_id']],
  scan: [['timestamp'], ['parent_bag_id'], ['child_bag_id'], ['user_id'], ['user_id', 'timestamp'], ['timestamp', 'user_id']],
  promotionrequest: [['user_id'], ['status'], ['requested_at']],
  audit_log: [['timestamp'], ['user_id'], ['action'], ['entity_type', 'entity_id'], ['request_id']],
  user: [['username'], ['email'], ['role'], ['created_at'], ['role', 'dispatch_area'], ['role', 'created_at']],
};

const SQL_TYPES: Readonly<Record<TargetColumn['type'], string>> = {
  serial: 'SERIAL PRIMARY KEY', integer: 'INTEGER', varchar: 'VARCHAR', text: 'TEXT', boolean: 'BOOLEAN', timestamp: 'TIMESTAMP', float8: 'DOUBLE PRECISION',
};

function renderColumn(c: TargetColumn, withUnique = true): string {
  return [
    escapeIdentifier(c.name),
    `${SQL_TYPES[c.type]}${c.maxLength ? `(${c.maxLength})` : ''}`,
    c.notNull ? 'NOT NULL' : '',
    c.unique && withUnique ? 'UNIQUE' : '',
    c.default ? `DEFAULT ${c.default}` : '',
    c.check ? `${c.checkName ? `CONSTRAINT ${escapeIdentifier(c.checkName)} ` : ''}CHECK (${c.check})` : '',
  ].filter(Boolean).join(' ');
}

/** The target column, or undefined. */
export function targetColumn(table: TargetTable, column: string): TargetColumn | undefined {
  return TARGET_TABLE_DDL[table].columns.find((c) => c.name === column);
}

const UNIQUE_CONSTRAINT = /^CONSTRAINT (\S+) UNIQUE (\(.*\))$/;

/** The column list of a CREATE TABLE; `withUnique` false: without the unique keys (renderUniqueKeys adds them). */
export function renderColumns(table: TargetTable, withUnique = true): string {
  const ddl = TARGET_TABLE_DDL[table];
  const constraints = (ddl.constraints ?? []).filter((c) => withUnique || !UNIQUE_CONSTRAINT.test(c));
  return [...ddl.columns.map((c) => renderColumn(c, withUnique)), ...constraints].map((l) => `\n  ${l}`).join(',');
}

/**
 * Phase 1: the schema and the eight tables with keys and checks. Idempotent. The tables in `deferUniqueKeys`
 * get their unique keys after the load (renderUniqueKeys, in finalize): see deferredUniqueKeyTables.
 */
export function renderCreateTables(schema: string, deferUniqueKeys: readonly TargetTable[] = []): string[] {
  const out = [`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`];
  for (const table of Object.keys(TARGET_TABLE_DDL) as TargetTable[]) {
    const deferred = deferUniqueKeys.includes(table);
    out.push(`CREATE TABLE IF NOT EXISTS ${qualified(schema, table)} (${renderColumns(table, !deferred)}\n)`);
    if (!deferred) out.push(...renderUniqueIndexes(schema, table));
  }
  return out;
}

function renderUniqueIndexes(schema: string, table: TargetTable): string[] {
  return TARGET_TABLE_DDL[table].indexes.filter((i) => i.unique)
    .map((idx) => `CREATE UNIQUE INDEX IF NOT EXISTS ${escapeIdentifier(idx.name)} ON ${qualified(schema, table)} ${idx.on}`);
}

/**
 * A table's unique keys, with the names CREATE TABLE gives them (a column's UNIQUE is `<table>_<column>_key`):
 * in finalize, for a table created without them. Idempotent: a key already there (the table was created with
 * its keys) is left alone.
 */
export function renderUniqueKeys(schema: string, table: TargetTable): string[] {
  return [
    ...uniqueConstraints(table).map(({ name, columns }) => addConstraintIfMissing(schema, table, name, `UNIQUE ${columns}`)),
    ...renderUniqueIndexes(schema, table),
  ];
}

/** A table's unique constraints (not its unique indexes), with the names CREATE TABLE gives them. */
export function uniqueConstraints(table: TargetTable): { name: string; columns: string }[] {
  const ddl = TARGET_TABLE_DDL[table];
  return [
    ...ddl.columns.filter((c) => c.unique).map((c) => ({ name: `${table}_${c.name}_key`, columns: `(${escapeIdentifier(c.name)})` })),
    ...(ddl.constraints ?? []).map((c) => UNIQUE_CONSTRAINT.exec(c)).filter((m) => m !== null).map((m) => ({ name: m[1]!, columns: m[2]! })),
  ];
}

/**
 * Whether an index of the table (a unique constraint included) leads with the column: its values can be read in order
 * from the index alone (Verify's references items). `parent_bag_id` of `(parent_bag_id, child_bag_id)`: yes; of `UPPER(qr_id)`: no.
 */
export function indexedReference(table: TargetTable, column: string): boolean {
  const ddl = TARGET_TABLE_DDL[table];
  const leading = [
    ...ddl.indexes.map((i) => i.on),
    ...uniqueConstraints(table).map((c) => c.columns),
  ].map((on) => /^\(\s*"?([a-z_][a-z0-9_]*)"?\s*[,)]/.exec(on)?.[1] ?? null);
  return leading.includes(column);
}

/** Phase 3 (after the load): the secondary indexes of one table. Idempotent. */
export function renderIndexes(schema: string, table: TargetTable): string[] {
  return TARGET_TABLE_DDL[table].indexes.filter((i) => !i.unique)
    .map((idx) => `CREATE INDEX IF NOT EXISTS ${escapeIdentifier(idx.name)} ON ${qualified(schema, table)} ${idx.on}`);
}

/**
 * Phase 3: the foreign keys of one table, added NOT VALID (no scan, a moment's lock); renderValidateForeignKeys
 * then checks the rows under a lock that lets the other tables' validations run beside it. Idempotent.
 */
export function renderForeignKeys(schema: string, table: TargetTable, options: { notValid?: boolean } = { notValid: true }): string[] {
  return TARGET_TABLE_DDL[table].foreignKeys.map((fk) =>
    addConstraintIfMissing(schema, table, fk.name, `FOREIGN KEY (${escapeIdentifier(fk.column)}) REFERENCES ${qualified(schema, fk.ref)}(id)${fk.onDelete ? ` ON DELETE ${fk.onDelete}` : ''}${options.notValid ? ' NOT VALID' : ''}`));
}

/** ALTER TABLE … ADD CONSTRAINT, unless the table already has a constraint of that name (idempotent DDL). */
function addConstraintIfMissing(schema: string, table: TargetTable, name: string, definition: string): string {
  const add = `ALTER TABLE ${qualified(schema, table)} ADD CONSTRAINT ${escapeIdentifier(name)} ${definition}`;
  return `DO $ddl$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = ${escapeLiteral(name)} AND conrelid = ${escapeLiteral(qualified(schema, table))}::regclass) THEN ${add}; END IF; END $ddl$`;
}

/** The single-connection form (the bench's floor): indexes, then foreign keys checked as they are added. */
export function renderPostLoad(schema: string, table: TargetTable): string[] {
  return [...renderIndexes(schema, table), ...renderForeignKeys(schema, table, { notValid: false })];
}

/** VALIDATE CONSTRAINT of each foreign key of the table (a no-op for one already valid). */
export function renderValidateForeignKeys(schema: string, table: TargetTable): string[] {
  return TARGET_TABLE_DDL[table].foreignKeys.map((fk) => `ALTER TABLE ${qualified(schema, table)} VALIDATE CONSTRAINT ${escapeIdentifier(fk.name)}`);
}

/** Sets the table's sequence past its largest id (a new row inserts without a clash). */
export function renderResetSequence(schema: string, table: TargetTable): string {
  return `SELECT setval(pg_get_serial_sequence(${escapeLiteral(qualified(schema, table))}, 'id'), GREATEST((SELECT max(id) FROM ${qualified(schema, table)}), 1), (SELECT max(id) IS NOT NULL FROM ${qualified(schema, table)}))`;
}

/** Work tables that the batches and the verification join (the bookkeeping tables are looked up by key). */
export const WORK_TABLES = ['_migration_reject', '_migration_id_map', '_mig_qr_rename', '_mig_bag_parent', '_mig_bag_child', '_mig_bag_ref'] as const;

/**
 * Fresh planner statistics for the given tables. Tables filled moments ago have none (autovacuum comes
 * later), and a join planned on none went badly wrong: at scale 1 the verification joined the
 * 1,000,000 bags with the not yet analysed reject store in a nested loop (minutes instead of seconds).
 */
export function renderAnalyze(schema: string, tables: readonly string[], options: { vacuum?: boolean } = {}): string {
  // With `vacuum`, also an up-to-date visibility map (index-only probes skip the heap); runs outside a transaction.
  return `${options.vacuum ? 'VACUUM (ANALYZE)' : 'ANALYZE'} ${tables.map((t) => qualified(schema, t)).join(', ')}`;
}

/**
 * The migration's own bookkeeping, in the target schema beside the eight tables:
 * runs, the lease, batch checkpoints, rejected rows, the persistent id map, and work tables.
 */
export function renderInternalTables(schema: string): string[] {
  return [`CREATE SCHEMA IF NOT EXISTS ${escapeIdentifier(schema)}`, ...renderRunTables(schema), ...renderWorkTables(schema), ...renderTimestampParser(schema)];
}

/** Runs, the lease, batch checkpoints and rejected rows. */
function renderRunTables(schema: string): string[] {
  const q = (t: string) => qualified(schema, t);
  return [
    `CREATE TABLE IF NOT EXISTS ${q('_migration_run')} (
  run_id        TEXT PRIMARY KEY,
  status        TEXT NOT NULL,
  source_schema TEXT NOT NULL,
  run_time      TIMESTAMP NOT NULL,
  started_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at   TIMESTAMPTZ,
  ddl_version   INTEGER NOT NULL,
  plan          JSONB,
  steps         JSONB NOT NULL DEFAULT '{}',
  verification  JSONB,
  cutover       JSONB
)`,
    `CREATE TABLE IF NOT EXISTS ${q('_migration_lease')} (
  singleton   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
  run_id      TEXT NOT NULL,
  holder      TEXT NOT NULL,
  acquired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  expires_at  TIMESTAMPTZ NOT NULL
)`,
    `CREATE TABLE IF NOT EXISTS ${q('_migration_checkpoint')} (
  run_id       TEXT NOT NULL,
  step         TEXT NOT NULL,
  source_table TEXT NOT NULL,
  batch_no     INTEGER NOT NULL,
  key_lo       BIGINT,
  key_hi       BIGINT,
  migrated     BIGINT NOT NULL,
  rejected     BIGINT NOT NULL,
  already      BIGINT NOT NULL DEFAULT 0,
  seconds      DOUBLE PRECISION NOT NULL,
  done_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, step, source_table, batch_no)
)`,
    `CREATE TABLE IF NOT EXISTS ${q('_migration_reject')} (
  run_id       TEXT NOT NULL,
  target_table TEXT NOT NULL,
  source_table TEXT NOT NULL,
  source_key   TEXT NOT NULL,
  reason       TEXT NOT NULL,
  row_data     JSONB,
  rejected_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, source_table, source_key)
)`,
    // Verify's work items of the run's current round (lambdas/engine/verify.ts): each item's result so far,
    // committed with its cursor (the key range end of its last chunk) in one transaction.
    `CREATE TABLE IF NOT EXISTS ${q('_migration_verify')} (
  run_id     TEXT NOT NULL,
  item_no    INTEGER NOT NULL,
  round      TEXT NOT NULL,
  spec       JSONB NOT NULL,
  sizes      JSONB NOT NULL,
  options    JSONB NOT NULL DEFAULT '{}',
  chunks     INTEGER NOT NULL DEFAULT 0,
  cursor     BIGINT,
  done       BOOLEAN NOT NULL DEFAULT FALSE,
  result     JSONB,
  seconds    DOUBLE PRECISION NOT NULL DEFAULT 0,
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, item_no)
)`,
  ];
}

/** The persistent id offsets and id map of merged sources, and the work tables of `prepare`. */
function renderWorkTables(schema: string): string[] {
  const q = (t: string) => qualified(schema, t);
  return [
    `CREATE TABLE IF NOT EXISTS ${q('_migration_id_offset')} (
  source_table TEXT PRIMARY KEY,
  target_table TEXT NOT NULL,
  id_offset    BIGINT NOT NULL
)`,
    `CREATE TABLE IF NOT EXISTS ${q('_migration_id_map')} (
  source_table TEXT NOT NULL,
  source_key   BIGINT NOT NULL,
  target_table TEXT NOT NULL,
  target_id    BIGINT NOT NULL,
  PRIMARY KEY (source_table, source_key)
)`,
    `CREATE TABLE IF NOT EXISTS ${q('_mig_qr_rename')} (target_id BIGINT PRIMARY KEY, qr_id TEXT NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS ${q('_mig_bag_parent')} (target_id BIGINT PRIMARY KEY)`,
    `CREATE TABLE IF NOT EXISTS ${q('_mig_bag_child')} (target_id BIGINT PRIMARY KEY)`,
    // Live runs: every source row's bag references (role 'p' parent, 'c' child), so that catch-up
    // re-derives the roles of the bags a change touched by key lookups, not by scanning the sources.
    // (Its indexes are built by prepare after the fill: core/sql/bag-roles.ts.)
    `CREATE TABLE IF NOT EXISTS ${q('_mig_bag_ref')} (
  source_table TEXT NOT NULL,
  source_key   BIGINT NOT NULL,
  role         "char" NOT NULL,
  target_id    BIGINT NOT NULL
)`,
  ];
}

function renderTimestampParser(schema: string): string[] {
  const q = (t: string) => qualified(schema, t);
  return [
    // Parses text timestamps; NULL when unparseable (the row is then rejected, never aborted).
    // The exception block costs a subtransaction per call, so only values that are not plainly
    // valid ISO timestamps (FAST_TIMESTAMP_PATTERN) take that path.
    `CREATE OR REPLACE FUNCTION ${q('_mig_try_timestamp_slow')}(value TEXT) RETURNS TIMESTAMP
LANGUAGE plpgsql STABLE AS $fn$
BEGIN
  IF value IS NULL OR btrim(value) = '' THEN RETURN NULL; END IF;
  RETURN (value::timestamptz AT TIME ZONE 'UTC');
EXCEPTION WHEN others THEN
  RETURN NULL;
END $fn$`,
    `CREATE OR REPLACE FUNCTION ${q('_mig_try_timestamp')}(value TEXT) RETURNS TIMESTAMP
LANGUAGE sql STABLE AS $fn$
  SELECT CASE WHEN btrim(value) ~ ${escapeLiteral(FAST_TIMESTAMP_PATTERN)} THEN (btrim(value)::timestamptz AT TIME ZONE 'UTC')
              ELSE ${q('_mig_try_timestamp_slow')}(value) END
$fn$`,
  ];
}
