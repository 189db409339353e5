import { finalizeBackupTask } from '../engine/tasks';
import type { FinalizeBackupResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** FinalizeBackup: the run's manifest, once every table of the source schema has finished. */
export async function handler(event: RunEvent): Promise<FinalizeBackupResult> {
  return finalizeBackupTask(event, runtimeDeps());
}
