import type pg from 'pg';
import { hashPasswords } from '../../lambdas/io/password';
import { escapeIdentifier } from '../../lambdas/core/sql/ident';

/**
 * A realistic shape-A legacy TraceTrack database (the column shape of test/fixtures/shape-a.sql),
 * generated inside PostgreSQL with generate_series: no row travels through Node.
 *
 * Sizes at scale 1: 10,000 users, 1,000,000 bags (every 21st a parent `SB00001`…, the others
 * children `CB0000002`… pointing at the parent of their group of 21), 3,000,000 scans, 50,000 bills,
 * 1,000,000 bill_bag rows. Any positive scale works (0.003 gives a few thousand bags).
 *
 * Dirty rows, at fixed proportions (every row number ≡ k mod 400 for bags and scans, mod 50 for users):
 * - duplicate QR after case folding: a child whose code is ` cb…` of the bag just before it;
 * - negative weight; orphan parent (a child whose parent_bag_id names no bag);
 * - missing created_at (bags and scans);
 * - duplicate email (a user with the email of the user before it);
 * - plaintext password. Every other user has a real werkzeug scrypt hash of {@link DEMO_PASSWORD},
 *   computed a few times in Node and reused (scrypt costs ~0.1 s per hash).
 *
 * Tables are created plain (logged), filled, then primary keys, secondary indexes, sequences, ANALYZE.
 */

export interface SeedOptions {
  /** 1 = 1,000,000 bags; fractional values allowed. Must be > 0. */
  readonly scale: number;
  /** Schema for the legacy tables. @default 'public' */
  readonly schema?: string;
}

export interface SeedSummary {
  readonly schema: string;
  readonly scale: number;
  /** Rows per legacy table. */
  readonly rows: { user: number; bag: number; scan: number; bill: number; bill_bag: number };
  /** How many dirty rows of each kind were generated (counted in the database afterwards). */
  readonly dirty: {
    /** Groups of bags whose QR codes collide after trim + upper-case. */
    duplicateQr: number;
    negativeWeight: number;
    /** Child bags whose parent_bag_id names no bag. */
    orphanParent: number;
    /** Users whose email another, older user already has. */
    duplicateEmail: number;
    plaintextPassword: number;
    /** Bags and scans with a NULL created_at. */
    missingCreatedAt: number;
  };
  /** The password every hashed demo user logs in with. */
  readonly demoPassword: string;
  readonly elapsedMs: number;
}

export const DEMO_PASSWORD = 'tracetrack-demo';
/** Distinct salts, so the user table does not look like one hash copied everywhere. */
const DISTINCT_HASHES = 4;
const GROUP = 21;
const DIRTY_MOD = 400;

function sizes(scale: number) {
  const at = (n: number) => Math.max(1, Math.round(n * scale));
  return {
    user: Math.max(2, at(10_000)),
    bag: Math.max(GROUP, at(1_000_000)),
    scan: at(3_000_000),
    bill: at(50_000),
    bill_bag: at(1_000_000),
  };
}



export async function seedLegacyShapeA(client: pg.ClientBase, options: SeedOptions): Promise<SeedSummary> {
  const started = Date.now();
  if (!(options.scale > 0) || !Number.isFinite(options.scale)) {
    throw new RangeError(`seedLegacyShapeA: scale must be a positive number (got ${options.scale}).`);
  }
  const schema = options.schema ?? 'public';
  const s = escapeIdentifier(schema);
  const n = sizes(options.scale);
  const parents = Math.ceil(n.bag / GROUP);
  const hashes = await hashPasswords(Array.from({ length: DISTINCT_HASHES }, () => DEMO_PASSWORD));
  const q = (text: string, values?: unknown[]) => client.query(text, values);
  const c: SeedContext = { q, s, n, parents, hashes };
  await createTables(c);
  await seedUsers(c);
  await seedBags(c);
  await seedScans(c);
  await seedBills(c);
  await seedBillBags(c);
  await finishTables(c);
  const d = await countDirty(q, s);
  return {
    schema,
    scale: options.scale,
    rows: n,
    dirty: {
      duplicateQr: d.dup_qr!,
      negativeWeight: d.neg_weight!,
      orphanParent: d.orphan!,
      duplicateEmail: d.dup_email!,
      plaintextPassword: d.plaintext!,
      missingCreatedAt: d.missing_ts!,
    },
    demoPassword: DEMO_PASSWORD,
    elapsedMs: Date.now() - started,
  };
}

type Query = (text: string, values?: unknown[]) => Promise<pg.QueryResult>;
type SeedSizes = ReturnType<typeof sizes>;
interface SeedContext { readonly q: Query; readonly s: string; readonly n: SeedSizes; readonly parents: number; readonly hashes: string[] }

/** The five legacy tables of shape A, without keys (added after the load). */
async function createTables(c: SeedContext): Promise<void> {
  const { q, s } = c;
  await q(`CREATE SCHEMA IF NOT EXISTS ${s}`);
  await q(`
    CREATE TABLE ${s}."user" (
      id serial, name varchar(64) NOT NULL, email varchar(120), password varchar(256),
      role varchar(20), area varchar(30), created_at timestamp);
    CREATE TABLE ${s}.bag (
      id serial, qr_code varchar(255) NOT NULL, bag_name varchar(100), children_count integer DEFAULT 0,
      parent_bag_id integer, owner_id integer, area varchar(30), weight double precision,
      status varchar(20), created_at timestamp);
    CREATE TABLE ${s}.scan (
      id serial, created_at timestamp, parent_id integer, child_id integer, scanner_id integer);
    CREATE TABLE ${s}.bill (
      id serial, bill_id varchar(50) NOT NULL, description text, bag_count integer, weight text,
      status varchar(20), user_id integer, created_at text);
    CREATE TABLE ${s}.bill_bag (
      id serial, bill_id integer, bag_id integer, created_at timestamp);`);
}

async function seedUsers(c: SeedContext): Promise<void> {
  const { q, s, n, hashes } = c;
  // Users: id 1 is the admin; every 10th a biller; dirty: id ≡ 7 (mod 50) plaintext, ≡ 13 duplicate email.
  await q(
    `INSERT INTO ${s}."user" (id, name, email, password, role, area, created_at)
     SELECT g,
            CASE WHEN g = 1 THEN 'admin' ELSE format('user%s', g) END,
            CASE WHEN g % 50 = 13 THEN format('user%s@tracetrack.example', g - 1)
                 WHEN g = 1 THEN 'admin@tracetrack.example'
                 ELSE format('user%s@tracetrack.example', g) END,
            CASE WHEN g % 50 = 7 THEN format('plain-%s', g) ELSE ($2::text[])[1 + g % $3] END,
            CASE WHEN g = 1 THEN 'admin' WHEN g % 10 = 2 THEN 'biller' ELSE 'dispatcher' END,
            (ARRAY['north','south','east','west'])[1 + g % 4],
            timestamp '2022-01-01' + g * interval '1 hour'
       FROM generate_series(1, $1::int) g`,
    [n.user, hashes, DISTINCT_HASHES],
  );
}

async function seedBags(c: SeedContext): Promise<void> {
  const { q, s, n } = c;
  // Bags: ids 1, 22, 43, … are parents; each child points at the first id of its group of 21.
  await q(
    `INSERT INTO ${s}.bag (id, qr_code, bag_name, children_count, parent_bag_id, owner_id, area, weight, status, created_at)
     SELECT g,
            CASE WHEN is_parent THEN format('SB%s', lpad(((g - 1) / ${GROUP} + 1)::text, 5, '0'))
                 WHEN dup THEN ' ' || lower(format('CB%s', lpad((g - 1)::text, 7, '0')))
                 ELSE format('CB%s', lpad(g::text, 7, '0')) END,
            CASE WHEN is_parent THEN format('Lot %s', (g - 1) / ${GROUP} + 1) END,
            CASE WHEN is_parent THEN least(${GROUP - 1}, $1::int - g) ELSE NULL END,
            CASE WHEN is_parent THEN NULL
                 WHEN g % ${DIRTY_MOD} = 100 THEN $1::int + 1000000 + g
                 ELSE g - (g - 1) % ${GROUP} END,
            1 + g % $2::int,
            (ARRAY['north','south','east','west'])[1 + (g / ${GROUP}) % 4],
            CASE WHEN g % ${DIRTY_MOD} = 300 THEN -1.5
                 WHEN is_parent THEN 20 + (g % 10) ELSE 1 + (g % 5) * 0.25 END,
            CASE WHEN g % 3 = 0 THEN 'completed' ELSE 'pending' END,
            CASE WHEN g % ${DIRTY_MOD} = 350 THEN NULL
                 ELSE timestamp '2023-01-01' + g * interval '30 seconds' END
       FROM generate_series(1, $1::int) g,
            LATERAL (SELECT (g - 1) % ${GROUP} = 0 AS is_parent,
                            g % ${DIRTY_MOD} = 200 AND (g - 1) % ${GROUP} NOT IN (0, 1) AS dup) k`,
    [n.bag, n.user],
  );
}

async function seedScans(c: SeedContext): Promise<void> {
  const { q, s, n } = c;
  // Scans: a pseudo-random bag per scan; a child scan also names its group's parent.
  await q(
    `INSERT INTO ${s}.scan (id, created_at, parent_id, child_id, scanner_id)
     SELECT g,
            CASE WHEN g % ${DIRTY_MOD} = 350 THEN NULL ELSE timestamp '2023-01-01' + g * interval '10 seconds' END,
            b - (b - 1) % ${GROUP},
            CASE WHEN (b - 1) % ${GROUP} = 0 THEN NULL ELSE b END,
            1 + g % $3::int
       FROM generate_series(1, $1::int) g,
            LATERAL (SELECT 1 + ((g::bigint * 7919) % $2::int)::int AS b) k`,
    [n.scan, n.bag, n.user],
  );
}

/** Bills with text weights and text timestamps, as shape A has them. */
async function seedBills(c: SeedContext): Promise<void> {
  const { q, s, n } = c;
  await q(
    `INSERT INTO ${s}.bill (id, bill_id, description, bag_count, weight, status, user_id, created_at)
     SELECT g, format('BILL-%s', lpad(g::text, 6, '0')), format('Dispatch %s', g),
            1 + g % 20, ((1 + g % 20) * 21.5)::text,
            (ARRAY['new','processing','completed'])[1 + g % 3],
            1 + g % $2::int,
            to_char(timestamp '2023-06-01' + g * interval '5 minutes', 'YYYY-MM-DD HH24:MI:SS')
       FROM generate_series(1, $1::int) g`,
    [n.bill, n.user],
  );
}

async function seedBillBags(c: SeedContext): Promise<void> {
  const { q, s, n, parents } = c;
  // bill_bag: row i pairs bill (i-1) mod B with parent ((i-1) mod B + (i-1) div B) mod P: pairs are unique.
  await q(
    `INSERT INTO ${s}.bill_bag (id, bill_id, bag_id, created_at)
     SELECT g, 1 + (g - 1) % $2::int,
            1 + ${GROUP} * (((g - 1) % $2::int + (g - 1) / $2::int) % $3::int),
            timestamp '2023-06-01' + g * interval '1 minute'
       FROM generate_series(1, $1::int) g`,
    [n.bill_bag, n.bill, parents],
  );
}

/** Keys, indexes, sequences and statistics, after the load. */
async function finishTables(c: SeedContext): Promise<void> {
  const { q, s } = c;
  await q(`
    ALTER TABLE ${s}."user" ADD PRIMARY KEY (id);
    ALTER TABLE ${s}.bag ADD PRIMARY KEY (id);
    ALTER TABLE ${s}.scan ADD PRIMARY KEY (id);
    ALTER TABLE ${s}.bill ADD PRIMARY KEY (id);
    ALTER TABLE ${s}.bill_bag ADD PRIMARY KEY (id);
    CREATE INDEX ON ${s}.bag (qr_code);
    CREATE INDEX ON ${s}.bag (parent_bag_id);
    CREATE INDEX ON ${s}.bag (owner_id);
    CREATE INDEX ON ${s}.scan (parent_id);
    CREATE INDEX ON ${s}.scan (child_id);
    CREATE INDEX ON ${s}.bill (bill_id);
    CREATE INDEX ON ${s}.bill_bag (bill_id);
    CREATE INDEX ON ${s}.bill_bag (bag_id);`);
  for (const table of ['"user"', 'bag', 'scan', 'bill', 'bill_bag']) {
    await q(`SELECT setval(pg_get_serial_sequence($1, 'id'), (SELECT coalesce(max(id), 1) FROM ${s}.${table}))`, [
      `${s}.${table}`,
    ]);
  }
  await q(`ANALYZE ${s}."user", ${s}.bag, ${s}.scan, ${s}.bill, ${s}.bill_bag`);
}

/** The dirty rows the seed made, counted in the database. */
async function countDirty(q: Query, s: string): Promise<Record<string, number>> {
  const { rows } = await q(
    `SELECT
       (SELECT count(*) FROM (SELECT 1 FROM ${s}.bag GROUP BY upper(btrim(qr_code)) HAVING count(*) > 1) d)::int AS dup_qr,
       (SELECT count(*) FROM ${s}.bag WHERE weight < 0)::int AS neg_weight,
       (SELECT count(*) FROM ${s}.bag b WHERE b.parent_bag_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM ${s}.bag p WHERE p.id = b.parent_bag_id))::int AS orphan,
       (SELECT count(*) FROM ${s}."user" u WHERE EXISTS
           (SELECT 1 FROM ${s}."user" o WHERE o.email = u.email AND o.id < u.id))::int AS dup_email,
       (SELECT count(*) FROM ${s}."user" WHERE password !~ '^scrypt:')::int AS plaintext,
       ((SELECT count(*) FROM ${s}.bag WHERE created_at IS NULL)
         + (SELECT count(*) FROM ${s}.scan WHERE created_at IS NULL))::int AS missing_ts`,
  );
  return rows[0] as Record<string, number>;
}
