import { createSchemaTask } from '../engine/tasks';
import type { RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** CreateSchema: the eight target tables in their own schema (idempotent). */
export async function handler(event: RunEvent): Promise<{ created: true }> {
  await createSchemaTask(event, runtimeDeps());
  return { created: true };
}
