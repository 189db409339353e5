import { preflightTask } from '../engine/tasks';
import type { PreflightEvent, PreflightResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** Preflight: validate the input, connect, check privileges, take the run lease, record the run. */
export async function handler(event: PreflightEvent): Promise<PreflightResult> {
  return preflightTask(event, runtimeDeps(event.executionName ?? 'lambda'));
}
