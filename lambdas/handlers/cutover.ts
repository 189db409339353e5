import { cutoverTask } from '../engine/tasks';
import type { CutoverResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** Cutover: legacy tables to legacy_<run>, the new tables into the application schema, in one transaction. */
export async function handler(event: RunEvent): Promise<CutoverResult> {
  return cutoverTask(event, runtimeDeps());
}
