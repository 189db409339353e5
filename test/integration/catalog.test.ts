import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { createTestDatabase } from '../support/pg';
import { readCatalog, readTableInfo, readTableNames } from '../../lambdas/io/catalog';
import { findTable } from '../../lambdas/core/catalog';

const WEIRD = 'Odd "Name"; DROP TABLE x; --';
let db: Awaited<ReturnType<typeof createTestDatabase>>;
let client: pg.Client;

beforeAll(async () => {
  db = await createTestDatabase('cat');
  client = new pg.Client({ connectionString: db.url });
  await client.connect();
  await client.query(`
    CREATE SCHEMA legacy;
    CREATE DOMAIN legacy.positive AS int CHECK (VALUE > 0);
    CREATE TABLE legacy."user" (id serial PRIMARY KEY, name varchar(64) NOT NULL, area text DEFAULT 'north', score legacy.positive);
    CREATE TABLE legacy.bag (id bigint PRIMARY KEY, qr_code text, owner_id int REFERENCES legacy."user"(id), parent_bag_id bigint REFERENCES legacy.bag(id));
    CREATE TABLE legacy.bill_bag (bill_id int, bag_id bigint, added_at timestamp, PRIMARY KEY (bill_id, bag_id),
      CONSTRAINT bill_bag_bag_fk FOREIGN KEY (bag_id) REFERENCES legacy.bag(id));
    CREATE TABLE legacy.${pg.escapeIdentifier(WEIRD)} ("Col ""A""" text, "B;" numeric(10,2));
    CREATE TABLE legacy.events (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
    CREATE TABLE legacy.events_2024 PARTITION OF legacy.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
    CREATE TABLE legacy.dropped (id int PRIMARY KEY, gone text, kept text);
    ALTER TABLE legacy.dropped DROP COLUMN gone;
    CREATE VIEW legacy.v AS SELECT 1 AS x;
    CREATE TABLE public.elsewhere (id int);
    INSERT INTO legacy."user" (name, score) VALUES ('a', 1), ('b', 2), ('c', 3);
    INSERT INTO legacy.bag VALUES (-5, 'SB00001', 1, NULL), (40, 'x', 2, -5);
    INSERT INTO legacy.${pg.escapeIdentifier(WEIRD)} VALUES ('v', 1.5);
    INSERT INTO legacy.events VALUES (1, '2024-03-01');
    ANALYZE;
  `);
});

afterAll(async () => {
  await client?.end();
  await db?.drop();
});

describe('readCatalog', () => {
  it('reads ordinary and partitioned tables (not partitions, views or other schemas)', async () => {
    const catalog = await readCatalog(client, 'legacy');
    expect(catalog.schema).toBe('legacy');
    expect(catalog.serverVersion).toMatch(/^\d+/);
    expect(catalog.tables.map((t) => t.name)).toEqual(['Odd "Name"; DROP TABLE x; --', 'bag', 'bill_bag', 'dropped', 'events', 'user']);
    expect(await readTableNames(client, 'legacy')).toEqual(catalog.tables.map((t) => t.name));
  });

  it('fills columns, keys, estimates, hasRows and integer key bounds', async () => {
    const catalog = await readCatalog(client, 'legacy');
    const user = findTable(catalog, 'user')!;
    expect(user.columns).toEqual([
      { name: 'id', dataType: 'integer', udtName: 'int4', nullable: false, defaultExpr: "nextval('legacy.user_id_seq'::regclass)", ordinal: 1 },
      { name: 'name', dataType: 'character varying(64)', udtName: 'varchar', nullable: false, defaultExpr: null, ordinal: 2 },
      { name: 'area', dataType: 'text', udtName: 'text', nullable: true, defaultExpr: "'north'::text", ordinal: 3 },
      { name: 'score', dataType: 'legacy.positive', udtName: 'int4', nullable: true, defaultExpr: null, ordinal: 4 },
    ]);
    expect(user).toMatchObject({ schema: 'legacy', primaryKey: ['id'], foreignKeys: [], hasRows: true, minKey: 1, maxKey: 3, rowEstimate: 3 });

    const bag = findTable(catalog, 'bag')!;
    expect(bag).toMatchObject({ primaryKey: ['id'], minKey: -5, maxKey: 40, hasRows: true });
    expect(bag.foreignKeys).toEqual([
      { name: 'bag_owner_id_fkey', columns: ['owner_id'], refSchema: 'legacy', refTable: 'user', refColumns: ['id'] },
      { name: 'bag_parent_bag_id_fkey', columns: ['parent_bag_id'], refSchema: 'legacy', refTable: 'bag', refColumns: ['id'] },
    ]);

    const billBag = findTable(catalog, 'bill_bag')!;
    expect(billBag).toMatchObject({ primaryKey: ['bill_id', 'bag_id'], hasRows: false, minKey: null, maxKey: null });
    expect(billBag.foreignKeys).toEqual([{ name: 'bill_bag_bag_fk', columns: ['bag_id'], refSchema: 'legacy', refTable: 'bag', refColumns: ['id'] }]);

    const weird = findTable(catalog, WEIRD)!;
    expect(weird.columns.map((c) => [c.name, c.dataType])).toEqual([['Col "A"', 'text'], ['B;', 'numeric(10,2)']]);
    expect(weird).toMatchObject({ primaryKey: [], hasRows: true, minKey: null, maxKey: null });

    const events = findTable(catalog, 'events')!;
    expect(events).toMatchObject({ primaryKey: ['id', 'at'], hasRows: true, minKey: null });
    expect(events.rowEstimate).toBe(1);

    const dropped = findTable(catalog, 'dropped')!;
    expect(dropped.columns.map((c) => [c.name, c.ordinal])).toEqual([['id', 1], ['kept', 3]]);
  });

  it('reads one table, and refuses one that does not exist', async () => {
    const weird = await readTableInfo(client, 'legacy', WEIRD);
    expect(weird.name).toBe(WEIRD);
    await expect(readTableInfo(client, 'legacy', 'elsewhere')).rejects.toMatchObject({ name: 'InputError' });
  });
});
