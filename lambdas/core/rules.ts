/**
 * The mapping rules, as data: an ordered list per target column, first present alias wins
 * (MIGRATION_SPEC.md §1). The planner applies them and records every decision; a user mapping
 * file (mapping-file.ts) overrides or extends them.
 */

export const TARGET_TABLES = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan', 'promotionrequest', 'audit_log'] as const;
export type TargetTable = (typeof TARGET_TABLES)[number];

/** Foreign-key order: a table comes after every table it references. */
export const TARGET_ORDER: readonly TargetTable[] = TARGET_TABLES;

export function isTargetTable(name: string): name is TargetTable {
  return (TARGET_TABLES as readonly string[]).includes(name);
}

/** How a value is read and checked; the SQL for each lives in sql/mapping.ts. */
export type ValueKind =
  | 'text'
  | 'int'
  | 'float'
  | 'bool'
  | 'timestamp'
  /** Reference to another target table's id, translated through the id map. */
  | 'ref'
  /** Named transforms with spec-defined behaviour. */
  | 'qr'
  | 'bag_type'
  | 'role'
  | 'password'
  | 'email'
  | 'weight'
  | 'bill_business_id'
  | 'promotion_reason';

export interface ColumnRule {
  readonly target: string;
  /** Source column names, first present wins. */
  readonly aliases: readonly string[];
  readonly kind: ValueKind;
  /** For `ref`: the target table referenced. */
  readonly ref?: TargetTable;
  /** For `ref`: what an id that does not resolve does to the row. */
  readonly onOrphan?: 'null' | 'reject';
  /** NULL (after transforms) rejects the row. */
  readonly required?: boolean;
  /** For `timestamp`: NULL or a missing column becomes the run's migration time (UTC). */
  readonly defaultNow?: boolean;
  /** A SQL literal used when no alias is present (the target default otherwise applies). */
  readonly constantWhenMissing?: 'true' | 'false' | '0';
  /** The target has a CHECK (>= 0): a negative value rejects the row instead of failing the batch. */
  readonly nonNegative?: boolean;
}

const ts = (target: string, aliases: string[], defaultNow = true): ColumnRule => ({ target, aliases, kind: 'timestamp', defaultNow });
const text = (target: string, aliases: string[], required = false): ColumnRule => ({ target, aliases, kind: 'text', required });
const int = (target: string, aliases: string[]): ColumnRule => ({ target, aliases, kind: 'int' });
const ref = (target: string, aliases: string[], table: TargetTable, onOrphan: 'null' | 'reject'): ColumnRule => ({
  target, aliases, kind: 'ref', ref: table, onOrphan, required: onOrphan === 'reject',
});

/**
 * Column rules per target table, in target column order. `id` is handled by the id strategy. Length limits
 * come from the target's column data (sql/target-ddl.ts): longer values are rejected, never truncated.
 */
export const COLUMN_RULES: Readonly<Record<TargetTable, readonly ColumnRule[]>> = {
  user: [
    { target: 'username', aliases: ['username', 'name', 'user_name'], kind: 'text', required: true },
    { target: 'email', aliases: ['email'], kind: 'email' },
    { target: 'password_hash', aliases: ['password_hash', 'password'], kind: 'password' },
    { target: 'role', aliases: ['role'], kind: 'role' },
    text('dispatch_area', ['dispatch_area', 'area']),
    text('verification_token', ['verification_token']),
    { target: 'verified', aliases: ['verified'], kind: 'bool', constantWhenMissing: 'true' },
    ts('created_at', ['created_at']),
    int('failed_login_attempts', ['failed_login_attempts']),
    ts('locked_until', ['locked_until'], false),
    ts('last_failed_login', ['last_failed_login'], false),
    text('password_reset_token', ['password_reset_token']),
    ts('password_reset_token_expires', ['password_reset_token_expires'], false),
    text('totp_secret', ['totp_secret']),
    { target: 'two_fa_enabled', aliases: ['two_fa_enabled'], kind: 'bool' },
  ],
  bag: [
    { target: 'qr_id', aliases: ['qr_id', 'qr_code'], kind: 'qr' },
    { target: 'type', aliases: ['type', 'bag_type', 'is_parent'], kind: 'bag_type' },
    text('name', ['name', 'bag_name', 'customer_name']),
    int('child_count', ['child_count', 'children_count']),
    ref('parent_id', ['parent_id', 'parent_bag_id'], 'bag', 'null'),
    ref('user_id', ['user_id', 'owner_id', 'created_by'], 'user', 'null'),
    text('dispatch_area', ['dispatch_area', 'area']),
    text('status', ['status']),
    { target: 'weight_kg', aliases: ['weight_kg', 'weight'], kind: 'weight' },
    ts('created_at', ['created_at']),
    ts('updated_at', ['updated_at']),
  ],
  link: [
    ref('parent_bag_id', ['parent_bag_id', 'parent_id'], 'bag', 'reject'),
    ref('child_bag_id', ['child_bag_id', 'child_id'], 'bag', 'reject'),
    ts('created_at', ['created_at', 'linked_at']),
  ],
  bill: [
    { target: 'bill_id', aliases: ['bill_id'], kind: 'bill_business_id' },
    { target: 'description', aliases: ['description', 'bill_description', 'notes'], kind: 'text' },
    int('parent_bag_count', ['parent_bag_count', 'bag_count']),
    { target: 'total_weight_kg', aliases: ['total_weight_kg', 'weight'], kind: 'weight' },
    { target: 'expected_weight_kg', aliases: ['expected_weight_kg'], kind: 'weight' },
    int('total_child_bags', ['total_child_bags', 'child_count']),
    { target: 'linked_parent_count', aliases: ['linked_parent_count'], kind: 'int', nonNegative: true },
    text('status', ['status']),
    text('destination', ['destination']),
    text('vehicle_number', ['vehicle_number']),
    ref('created_by_id', ['created_by_id', 'created_by', 'user_id'], 'user', 'null'),
    ts('created_at', ['created_at']),
    ts('updated_at', ['updated_at']),
  ],
  bill_bag: [
    ref('bill_id', ['bill_id'], 'bill', 'reject'),
    ref('bag_id', ['bag_id'], 'bag', 'reject'),
    ts('created_at', ['created_at', 'added_at']),
  ],
  scan: [
    ts('timestamp', ['timestamp', 'created_at', 'scanned_at']),
    ref('parent_bag_id', ['parent_bag_id', 'parent_id'], 'bag', 'null'),
    ref('child_bag_id', ['child_bag_id', 'child_id'], 'bag', 'null'),
    ref('user_id', ['user_id', 'scanner_id'], 'user', 'null'),
  ],
  promotionrequest: [
    ref('user_id', ['user_id'], 'user', 'reject'),
    { target: 'reason', aliases: ['reason'], kind: 'promotion_reason' },
    text('status', ['status']),
    ref('admin_id', ['admin_id', 'reviewed_by'], 'user', 'null'),
    text('admin_notes', ['admin_notes']),
    ts('requested_at', ['requested_at', 'created_at']),
    ts('processed_at', ['processed_at', 'reviewed_at'], false),
  ],
  audit_log: [
    ts('timestamp', ['timestamp', 'created_at']),
    ref('user_id', ['user_id'], 'user', 'null'),
    text('action', ['action'], true),
    text('entity_type', ['entity_type'], true),
    int('entity_id', ['entity_id']),
    text('details', ['details']),
    text('ip_address', ['ip_address']),
    text('before_state', ['before_state']),
    text('after_state', ['after_state']),
    text('request_id', ['request_id']),
  ],
};

/** Source table names per target table, in the order their rows are taken (first keeps its ids). */
export const TABLE_RULES: Readonly<Record<TargetTable, readonly string[]>> = {
  user: ['user', 'users'],
  bag: ['bag', 'bags', 'parent_bag', 'child_bag'],
  link: ['link', 'links'],
  bill: ['bill', 'bills'],
  bill_bag: ['bill_bag', 'bill_bags'],
  scan: ['scan', 'scans'],
  // Flask-SQLAlchemy's default name for class PromotionRequest in the admin/employee era.
  promotionrequest: ['promotionrequest', 'promotion_request', 'promotion_requests'],
  audit_log: ['audit_log', 'audit_logs'],
};

/** Shape D: the split bag tables carry their type in their name. */
export const IMPLIED_BAG_TYPE: Readonly<Record<string, 'parent' | 'child'>> = {
  parent_bag: 'parent',
  child_bag: 'child',
};

/** Legacy tables known to be retired: backed up and reported, never migrated. */
export const RETIRED_TABLES: readonly string[] = ['location', 'scan_log', 'statistics_cache', 'schema_migrations', 'alembic_version'];

/**
 * A scan with a single `bag_id` is split into parent/child by the scanned bag's type.
 * This alias list finds that column.
 */
export const SCAN_SINGLE_BAG_ALIASES: readonly string[] = ['bag_id'];

/** Source columns that hold secrets: never copied into a reject row, a log or a report. */
export const SECRET_COLUMNS: readonly string[] = ['password', 'password_hash', 'totp_secret', 'verification_token', 'password_reset_token'];

/** Roles (case-insensitive) → target role; anything else becomes `dispatcher` and is reported. */
export const ROLE_RULES: readonly { readonly from: readonly string[]; readonly to: 'admin' | 'biller' | 'dispatcher' }[] = [
  { from: ['admin', 'administrator', 'superuser'], to: 'admin' },
  { from: ['biller'], to: 'biller' },
  { from: ['dispatcher', 'employee', 'user', 'staff'], to: 'dispatcher' },
];

/** Unique keys of the target tables: a row that collides is rejected with the key's name. */
export const UNIQUE_KEYS: Readonly<Record<TargetTable, readonly { readonly name: string; readonly columns: readonly string[]; readonly expr?: string }[]>> = {
  user: [{ name: 'username', columns: ['username'] }, { name: 'email', columns: ['email'] }],
  bag: [{ name: 'QR code', columns: ['qr_id'], expr: 'upper(%s)' }],
  link: [{ name: 'child already linked to another parent', columns: ['child_bag_id'] }],
  bill: [{ name: 'bill_id', columns: ['bill_id'] }],
  bill_bag: [{ name: 'bill/bag pair', columns: ['bill_id', 'bag_id'] }],
  scan: [],
  promotionrequest: [],
  audit_log: [],
};

/** Pattern of parent QR codes, the last resort for a bag's type. */
export const PARENT_QR_PATTERN = '^SB[0-9]{5}$';

/** Placeholder e-mail domain for users without one. */
export const PLACEHOLDER_EMAIL_DOMAIN = 'invalid.tracetrack';

/**
 * Password hashes the application can check: werkzeug `scrypt:N:r:p$salt$hex` (its key is always 64 bytes,
 * so 128 hex digits), `pbkdf2:<hash>[:iterations]$salt$hex`, and bcrypt. The one definition, used by the
 * migration, Verify, the readiness report and the tests. POSIX regexes (no escapes; `$` inside brackets),
 * so the same string works in JavaScript (`new RegExp`) and in PostgreSQL (`value ~ pattern`).
 */
export const WERKZEUG_SCRYPT_HEX_DIGITS = 128;
const SCRYPT_PREFIX = 'scrypt:[0-9]+:[0-9]+:[0-9]+[$][^$]+[$]';
const PBKDF2_BRANCH = 'pbkdf2:sha(1|224|256|384|512)(:[0-9]+)?[$][^$]+[$][0-9a-f]+';
export const WERKZEUG_SCRYPT_HASH_PATTERN = `^${SCRYPT_PREFIX}[0-9a-f]{${WERKZEUG_SCRYPT_HEX_DIGITS}}$`;
export const WERKZEUG_PBKDF2_HASH_PATTERN = `^${PBKDF2_BRANCH}$`;
export const WERKZEUG_HASH_PATTERN = `^(${SCRYPT_PREFIX}[0-9a-f]{${WERKZEUG_SCRYPT_HEX_DIGITS}}|${PBKDF2_BRANCH})$`;
/**
 * WERKZEUG_HASH_PATTERN with the scrypt key's digits unbounded, for PostgreSQL: its regex engine takes ~25 µs a
 * value for the `{128}` repetition (0.32 s for 10,000 users, 10x this pattern's), so SQL checks the digits'
 * count with `split_part` instead (core/sql/values.ts checkableHashSql; the salt holds no `$`).
 */
export const WERKZEUG_HASH_PATTERN_UNBOUNDED = `^(${SCRYPT_PREFIX}[0-9a-f]+|${PBKDF2_BRANCH})$`;
/** Modular-crypt bcrypt: `$2b$12$` + 22 characters of salt + 31 of hash. */
export const BCRYPT_HASH_PATTERN = '^[$]2[abxy]?[$][0-9]{2}[$][./A-Za-z0-9]{53}$';

/** A parent bag is full with this many children (the application: 30 kg for a full parent at 1 kg a child). */
export const PARENT_CAPACITY = 30;

/**
 * Summary columns the application derives from other rows (APP_RULES.md "Values the application derives").
 * Where the source has no such column the value is computed from the migrated rows after the load; where it
 * has one, the value is copied and rows that disagree with the rule are counted in the readiness report
 * (`--recompute-summaries` computes them all). Each rule is SQL over the target row `t` and the aggregates
 * `x` of its table (sql/derived.ts): bags `x.children`; bills `x.bill_bags`, `x.children`.
 */
export interface DerivedColumnRule {
  readonly table: 'bag' | 'bill';
  readonly column: string;
  /** Only rows matching this are derived (bag summaries are of parents). */
  readonly rowsWhere: string;
  readonly sql: string;
  /** The rule in words, and where the application says so. */
  readonly rule: string;
}

export const DERIVED_COLUMNS: Readonly<Record<string, DerivedColumnRule>> = {
  'bag.child_count': {
    table: 'bag', column: 'child_count', rowsWhere: "t.type = 'parent'", sql: 'x.children',
    rule: "a parent's children through link (models.py Bag.child_count, 'For parent bags')",
  },
  'bag.weight_kg': {
    table: 'bag', column: 'weight_kg', rowsWhere: "t.type = 'parent'", sql: 'x.children::float8',
    rule: `a parent weighs 1 kg per child through link, ${PARENT_CAPACITY} kg when full (models.py Bag.weight_kg comment)`,
  },
  'bag.status': {
    table: 'bag', column: 'status', rowsWhere: "t.type = 'parent'", sql: `CASE WHEN x.children >= ${PARENT_CAPACITY} THEN 'completed' ELSE 'pending' END`,
    rule: `a parent is completed when full (${PARENT_CAPACITY} children), else pending (models.py Bag.status)`,
  },
  'bill.linked_parent_count': {
    table: 'bill', column: 'linked_parent_count', rowsWhere: 'TRUE', sql: 'x.bill_bags',
    rule: "the bill's bill_bag rows (the schema revision that added the column backfills it so)",
  },
  'bill.total_child_bags': {
    table: 'bill', column: 'total_child_bags', rowsWhere: 'TRUE', sql: 'x.children',
    rule: "distinct child bags linked to the bill's parent bags (Bill.recalculate_weights)",
  },
  'bill.total_weight_kg': {
    table: 'bill', column: 'total_weight_kg', rowsWhere: 'TRUE', sql: 'x.children::float8',
    rule: "1 kg per distinct child bag of the bill's parent bags (Bill.recalculate_weights)",
  },
  'bill.expected_weight_kg': {
    table: 'bill', column: 'expected_weight_kg', rowsWhere: 'TRUE', sql: 'GREATEST(COALESCE(t.parent_bag_count, 0), 0) * 30.0',
    rule: 'parent_bag_count × 30 kg (Bill.recalculate_weights; parent_bag_count is the capacity target)',
  },
};
