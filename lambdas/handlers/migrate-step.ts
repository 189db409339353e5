import { migrateStepTask } from '../engine/tasks';
import type { MigrateStepEvent, MigrateStepResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** MigrateStep: checkpointed batches of one step until done or the time budget is spent. */
export async function handler(event: MigrateStepEvent): Promise<MigrateStepResult> {
  return migrateStepTask(event, runtimeDeps());
}
