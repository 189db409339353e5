import { inject } from 'vitest';
import pg from 'pg';
import { randomBytes } from 'node:crypto';

/** The admin URL of the test run's PostgreSQL server. */
export function adminUrl(): string {
  return inject('pgAdminUrl');
}

export function urlForDatabase(database: string): string {
  const url = new URL(adminUrl());
  url.pathname = `/${database}`;
  return url.toString();
}

/** A fresh, empty database of its own for one test (tests run in parallel). */
export async function createTestDatabase(prefix = 'tt'): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const name = `${prefix}_${randomBytes(5).toString('hex')}`.toLowerCase();
  await adminQuery(`CREATE DATABASE "${name}"`);
  return {
    name,
    url: urlForDatabase(name),
    drop: () => adminQuery(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`).then(() => undefined),
  };
}

export async function adminQuery(sql: string, values: unknown[] = []) {
  const client = new pg.Client({ connectionString: adminUrl() });
  await client.connect();
  try {
    return await client.query(sql, values);
  } finally {
    await client.end();
  }
}

/** Runs `fn` with a connected client on `url`, closing it afterwards. */
export async function withTestClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}
