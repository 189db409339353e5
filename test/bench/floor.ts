import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import { renderCreateTables, renderPostLoad, renderResetSequence, TARGET_TABLE_DDL } from '../../lambdas/core/sql/target-ddl';
import type { TargetTable } from '../../lambdas/core/rules';

/**
 * The floors the migration is compared with: hand-written SQL doing the same renames, with the
 * minimum filtering the target's keys, checks and foreign keys need to accept the rows (the
 * migration rejects those rows too): duplicate e-mails / QR codes skipped (ON CONFLICT DO NOTHING),
 * negative weights skipped, references to skipped rows either dropped (scan, bill_bag, link rows) or
 * nulled (user references, which are ON DELETE SET NULL in the target).
 */

export const FLOOR_SCHEMA = 'floor';
/** Session options of every floor connection (psql included): no JIT, as the migration's sessions (lambdas/io/pg.ts). */
export const FLOOR_SESSION_OPTIONS = '-c jit=off';
export const FLOOR_ORDER: TargetTable[] = ['user', 'bag', 'link', 'bill', 'bill_bag', 'scan'];
const NOW = "(now() AT TIME ZONE 'utc')";

export interface FloorTable {
  readonly table: TargetTable;
  /** Source table the rows come from (for rows/s). */
  readonly source: string;
  readonly columns: string;
  /** SELECT producing the renamed rows; `f` is the schema holding the already loaded floor tables (for filters). */
  select(src: string, f: string): string;
  /** In-place only: ON CONFLICT clause. */
  readonly onConflict?: string;
  /** Cross-database: filter so the COPY needs no ON CONFLICT (rows the in-place floor accepted). */
  crossSelect?(src: string, f: string): string;
}

export const FLOOR_TABLES: FloorTable[] = [
  {
    table: 'user',
    source: 'user',
    columns: 'id, username, email, password_hash, role, dispatch_area, verified, created_at',
    select: (s) => `SELECT u.id, u.name, u.email, u.password, u.role, u.area, true, COALESCE(u.created_at, ${NOW}) FROM ${s}."user" u`,
    onConflict: 'ON CONFLICT DO NOTHING',
    crossSelect: (s, f) =>
      `SELECT u.id, u.name, u.email, u.password, u.role, u.area, true, COALESCE(u.created_at, ${NOW}) FROM ${s}."user" u WHERE EXISTS (SELECT 1 FROM ${f}."user" x WHERE x.id = u.id)`,
  },
  {
    table: 'bag',
    source: 'bag',
    columns: 'id, qr_id, type, name, child_count, parent_id, user_id, dispatch_area, status, weight_kg, created_at, updated_at',
    select: (s, f) =>
      `SELECT b.id, upper(btrim(b.qr_code)), CASE WHEN b.parent_bag_id IS NULL THEN 'parent' ELSE 'child' END, b.bag_name, b.children_count,
              b.parent_bag_id, u.id, b.area, b.status, b.weight, COALESCE(b.created_at, ${NOW}), COALESCE(b.created_at, ${NOW})
         FROM ${s}.bag b LEFT JOIN ${f}."user" u ON u.id = b.owner_id
        WHERE b.weight IS NULL OR b.weight >= 0`,
    onConflict: 'ON CONFLICT DO NOTHING',
    crossSelect: (s, f) =>
      `SELECT b.id, upper(btrim(b.qr_code)), CASE WHEN b.parent_bag_id IS NULL THEN 'parent' ELSE 'child' END, b.bag_name, b.children_count,
              b.parent_bag_id, u.id, b.area, b.status, b.weight, COALESCE(b.created_at, ${NOW}), COALESCE(b.created_at, ${NOW})
         FROM ${s}.bag b LEFT JOIN ${f}."user" u ON u.id = b.owner_id
        WHERE EXISTS (SELECT 1 FROM ${f}.bag x WHERE x.id = b.id)`,
  },
  {
    // Derived: one link per child whose parent is a (kept) bag.
    table: 'link',
    source: 'bag',
    columns: 'parent_bag_id, child_bag_id, created_at',
    select: (s, f) =>
      `SELECT b.parent_bag_id, b.id, COALESCE(b.created_at, ${NOW}) FROM ${s}.bag b
        WHERE b.parent_bag_id IS NOT NULL
          AND EXISTS (SELECT 1 FROM ${f}.bag c WHERE c.id = b.id) AND EXISTS (SELECT 1 FROM ${f}.bag p WHERE p.id = b.parent_bag_id)`,
  },
  {
    table: 'bill',
    source: 'bill',
    columns: 'id, bill_id, description, parent_bag_count, total_weight_kg, status, created_by_id, created_at, updated_at',
    select: (s, f) =>
      `SELECT b.id, b.bill_id, b.description, b.bag_count, substring(b.weight from '[0-9]+(?:\\.[0-9]+)?')::double precision,
              b.status, u.id, b.created_at::timestamp, b.created_at::timestamp
         FROM ${s}.bill b LEFT JOIN ${f}."user" u ON u.id = b.user_id`,
  },
  {
    table: 'bill_bag',
    source: 'bill_bag',
    columns: 'id, bill_id, bag_id, created_at',
    select: (s, f) =>
      `SELECT bb.id, bb.bill_id, bb.bag_id, COALESCE(bb.created_at, ${NOW}) FROM ${s}.bill_bag bb
        WHERE EXISTS (SELECT 1 FROM ${f}.bag x WHERE x.id = bb.bag_id) AND EXISTS (SELECT 1 FROM ${f}.bill y WHERE y.id = bb.bill_id)`,
  },
  {
    table: 'scan',
    source: 'scan',
    columns: 'id, "timestamp", parent_bag_id, child_bag_id, user_id',
    select: (s, f) =>
      // LEFT JOINs, not `IS NULL OR EXISTS` (which PostgreSQL runs as a per-row subplan).
      `SELECT sc.id, COALESCE(sc.created_at, ${NOW}), sc.parent_id, sc.child_id, u.id
         FROM ${s}.scan sc LEFT JOIN ${f}."user" u ON u.id = sc.scanner_id
              LEFT JOIN ${f}.bag p ON p.id = sc.parent_id LEFT JOIN ${f}.bag c ON c.id = sc.child_id
        WHERE (sc.parent_id IS NULL OR p.id IS NOT NULL) AND (sc.child_id IS NULL OR c.id IS NOT NULL)`,
  },
];

export interface FloorTableTiming {
  table: string;
  rows: number;
  sourceRows: number;
  loadSeconds: number;
  postLoadSeconds: number;
  seconds: number;
}

const secondsSince = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e9;

/** 1a: INSERT … SELECT into schema `floor` (keys only), then per table its secondary indexes and FKs. */
export async function insertSelectFloor(client: pg.ClientBase, sourceRows: Record<string, number>): Promise<{ tables: FloorTableTiming[]; createSeconds: number; sequenceSeconds: number; total: number }> {
  const all = process.hrtime.bigint();
  await client.query(`DROP SCHEMA IF EXISTS ${FLOOR_SCHEMA} CASCADE`);
  let t = process.hrtime.bigint();
  for (const sql of renderCreateTables(FLOOR_SCHEMA)) await client.query(sql);
  const createSeconds = secondsSince(t);
  const tables: FloorTableTiming[] = [];
  for (const ft of FLOOR_TABLES) {
    t = process.hrtime.bigint();
    const r = await client.query(`INSERT INTO ${FLOOR_SCHEMA}.${q(ft.table)} (${ft.columns}) ${ft.select('public', FLOOR_SCHEMA)} ${ft.onConflict ?? ''}`);
    const loadSeconds = secondsSince(t);
    t = process.hrtime.bigint();
    for (const sql of renderPostLoad(FLOOR_SCHEMA, ft.table)) await client.query(sql);
    await client.query(`ANALYZE ${FLOOR_SCHEMA}.${q(ft.table)}`);
    const postLoadSeconds = secondsSince(t);
    tables.push({ table: ft.table, rows: r.rowCount ?? 0, sourceRows: sourceRows[ft.source] ?? 0, loadSeconds, postLoadSeconds, seconds: loadSeconds + postLoadSeconds });
  }
  t = process.hrtime.bigint();
  for (const ft of FLOOR_TABLES) if (ft.table !== 'link') await client.query(renderResetSequence(FLOOR_SCHEMA, ft.table));
  await client.query(renderResetSequence(FLOOR_SCHEMA, 'link'));
  const sequenceSeconds = secondsSince(t);
  return { tables, createSeconds, sequenceSeconds, total: secondsSince(all) };
}

export const BARE_SCHEMA = 'floor_bare';

/**
 * Rows a keyed floor table would refuse, filtered without its keys (the bare tables have none while they
 * load): the later row of a duplicate username/e-mail or QR code. Appended to the floor's SELECT.
 */
const BARE_FILTERS: Partial<Record<TargetTable, (s: string) => string>> = {
  user: (s) =>
    ` AND NOT EXISTS (SELECT 1 FROM ${s}."user" o WHERE o.email = u.email AND o.id < u.id)` +
    ` AND NOT EXISTS (SELECT 1 FROM ${s}."user" o WHERE o.name = u.name AND o.id < u.id)`,
  bag: (s) =>
    ` AND NOT EXISTS (SELECT 1 FROM ${s}.bag o WHERE upper(btrim(o.qr_code)) = upper(btrim(b.qr_code)) AND o.id < b.id AND (o.weight IS NULL OR o.weight >= 0))`,
};

/**
 * 1d, the bare physical floor: every table loaded by the same renaming SELECT into a table without keys,
 * indexes or checks (`LIKE` the keyed one, defaults and NOT NULL only), then per table its primary key,
 * unique keys, secondary indexes, foreign keys and ANALYZE — the shape of a dump restore.
 */
export async function bareFloor(client: pg.ClientBase, sourceRows: Record<string, number>): Promise<{ tables: FloorTableTiming[]; createSeconds: number; total: number }> {
  const all = process.hrtime.bigint();
  const keyed = `${BARE_SCHEMA}_keys`;
  for (const schema of [BARE_SCHEMA, keyed]) await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  let t = process.hrtime.bigint();
  for (const sql of renderCreateTables(keyed)) await client.query(sql);
  await client.query(`CREATE SCHEMA ${BARE_SCHEMA}`);
  for (const ft of FLOOR_TABLES) await client.query(`CREATE TABLE ${BARE_SCHEMA}.${q(ft.table)} (LIKE ${keyed}.${q(ft.table)} INCLUDING DEFAULTS)`);
  const createSeconds = secondsSince(t);
  const loads = new Map<string, { rows: number; seconds: number }>();
  for (const ft of FLOOR_TABLES) {
    t = process.hrtime.bigint();
    const select = ft.select('public', BARE_SCHEMA);
    const filter = BARE_FILTERS[ft.table]?.('public') ?? '';
    // The floor's own WHERE (if any) parenthesised, then the filter.
    const filtered = !filter ? select : /\bWHERE\b/.test(select) ? `${select.replace(/\bWHERE\b([\s\S]*)$/, 'WHERE ($1)')}${filter}` : `${select} WHERE TRUE${filter}`;
    const r = await client.query(`INSERT INTO ${BARE_SCHEMA}.${q(ft.table)} (${ft.columns}) ${filtered}`);
    // Statistics for the loads that join this table: without them PostgreSQL 15 planned the scan load's
    // joins to the key-less bare bag table as nested loops (130 s at scale 1 instead of ~5 s).
    await client.query(`ANALYZE ${BARE_SCHEMA}.${q(ft.table)}`);
    loads.set(ft.table, { rows: r.rowCount ?? 0, seconds: secondsSince(t) });
  }
  const tables: FloorTableTiming[] = [];
  for (const ft of FLOOR_TABLES) {
    t = process.hrtime.bigint();
    for (const sql of renderKeys(BARE_SCHEMA, ft.table)) await client.query(sql);
    for (const sql of renderPostLoad(BARE_SCHEMA, ft.table)) await client.query(sql);
    await client.query(`ANALYZE ${BARE_SCHEMA}.${q(ft.table)}`);
    const load = loads.get(ft.table)!;
    const postLoadSeconds = secondsSince(t);
    tables.push({ table: ft.table, rows: load.rows, sourceRows: sourceRows[ft.source] ?? 0, loadSeconds: load.seconds, postLoadSeconds, seconds: load.seconds + postLoadSeconds });
  }
  await client.query(`DROP SCHEMA ${keyed} CASCADE`);
  return { tables, createSeconds, total: secondsSince(all) };
}

/** The keys a keyed table has from the start (primary key, unique columns, unique indexes and constraints), added afterwards. */
function renderKeys(schema: string, table: TargetTable): string[] {
  const ddl = TARGET_TABLE_DDL[table];
  const t = `${schema}.${q(table)}`;
  return [
    `ALTER TABLE ${t} ADD PRIMARY KEY (id)`,
    ...ddl.columns.filter((c) => c.unique).map((c) => `ALTER TABLE ${t} ADD UNIQUE (${c.name})`),
    ...(ddl.constraints ?? []).filter((c) => /\bUNIQUE\b/.test(c)).map((c) => `ALTER TABLE ${t} ADD ${c}`),
    ...ddl.indexes.filter((i) => i.unique).map((i) => `CREATE UNIQUE INDEX ${i.name}_bare ON ${t} ${i.on}`),
  ];
}

function q(table: string): string {
  return table === 'user' ? '"user"' : table;
}

export const GZIP_BINARY = ['/bin/gzip', '/usr/bin/gzip'].find((p) => existsSync(p));

/** COPY one table TO STDOUT through `gzip -1 > /dev/null` (or node zlib level 1 without the binary). */
async function copyGzip(client: pg.ClientBase, table: string): Promise<number> {
  const t = process.hrtime.bigint();
  const source = client.query(copyTo(`COPY public.${q(table)} TO STDOUT`));
  if (GZIP_BINARY) {
    const gz = spawn(GZIP_BINARY, ['-1'], { stdio: ['pipe', 'ignore', 'inherit'] });
    const exited = new Promise<void>((resolve, reject) => gz.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`gzip exited ${code}`)))));
    await pipeline(source, gz.stdin);
    await exited;
  } else {
    const { Writable } = await import('node:stream');
    await pipeline(source, createGzip({ level: 1 }), new Writable({ write: (_c, _e, cb) => cb() }));
  }
  return secondsSince(t);
}

/** 1b: every source table COPY|gzip, sequentially (per-table figures) and two at a time (the workflow's backup concurrency). */
export async function copyGzipFloor(connect: () => Promise<pg.Client>, tables: string[]): Promise<{ perTable: Record<string, number>; sequential: number; concurrent2: number }> {
  const c = await connect();
  const perTable: Record<string, number> = {};
  let t = process.hrtime.bigint();
  try {
    for (const table of tables) perTable[table] = await copyGzip(c, table);
  } finally {
    await c.end();
  }
  const sequential = secondsSince(t);
  t = process.hrtime.bigint();
  const queue = [...tables].sort((a, b) => perTable[b]! - perTable[a]!);
  await Promise.all(
    [0, 1].map(async () => {
      const w = await connect();
      try {
        for (let next = queue.shift(); next; next = queue.shift()) await copyGzip(w, next);
      } finally {
        await w.end();
      }
    }),
  );
  return { perTable, sequential, concurrent2: secondsSince(t) };
}

export interface PsqlConn {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
}

function sh(cmd: string, env: NodeJS.ProcessEnv): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', ['-o', 'pipefail', '-c', cmd], { stdio: ['ignore', 'ignore', 'pipe'], env });
    let err = '';
    p.stderr.on('data', (d) => (err += String(d)));
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd.slice(0, 200)}… exited ${code}: ${err}`))));
  });
}

/**
 * 1c: for each table `psql -c "COPY (SELECT renamed) TO STDOUT" | psql -c "COPY floor.t FROM STDIN"` into
 * another database (tables with keys first, then secondary indexes and FKs, timed per table). The source
 * side filters against the in-place floor schema (which must exist) so the rows satisfy the target's keys.
 */
export async function psqlPipeFloor(conn: PsqlConn, sourceDb: string, targetDb: string, targetClient: pg.ClientBase, sourceRows: Record<string, number>): Promise<{ tables: FloorTableTiming[]; createSeconds: number; total: number }> {
  const all = process.hrtime.bigint();
  let t = process.hrtime.bigint();
  for (const sql of renderCreateTables(FLOOR_SCHEMA)) await targetClient.query(sql);
  const createSeconds = secondsSince(t);
  const env = { ...process.env, PGPASSWORD: conn.password, PGHOST: conn.host, PGPORT: String(conn.port), PGUSER: conn.user, PGOPTIONS: FLOOR_SESSION_OPTIONS };
  const tables: FloorTableTiming[] = [];
  for (const ft of FLOOR_TABLES) {
    const select = (ft.crossSelect ?? ft.select)('public', FLOOR_SCHEMA).replace(/\s+/g, ' ');
    const out = `COPY (${select}) TO STDOUT`;
    const inp = `COPY ${FLOOR_SCHEMA}.${q(ft.table)} (${ft.columns}) FROM STDIN`;
    const cmd = `/usr/bin/psql -X -q -v ON_ERROR_STOP=1 -d ${sourceDb} -c ${shq(out)} | /usr/bin/psql -X -q -v ON_ERROR_STOP=1 -d ${targetDb} -c ${shq(inp)}`;
    t = process.hrtime.bigint();
    await sh(cmd, env);
    const loadSeconds = secondsSince(t);
    t = process.hrtime.bigint();
    for (const sql of renderPostLoad(FLOOR_SCHEMA, ft.table)) await targetClient.query(sql);
    await targetClient.query(`ANALYZE ${FLOOR_SCHEMA}.${q(ft.table)}`);
    const postLoadSeconds = secondsSince(t);
    const { rows } = await targetClient.query(`SELECT count(*)::bigint AS n FROM ${FLOOR_SCHEMA}.${q(ft.table)}`);
    tables.push({ table: ft.table, rows: Number(rows[0].n), sourceRows: sourceRows[ft.source] ?? 0, loadSeconds, postLoadSeconds, seconds: loadSeconds + postLoadSeconds });
  }
  return { tables, createSeconds, total: secondsSince(all) };
}

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
