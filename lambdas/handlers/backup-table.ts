import { backupTableTask } from '../engine/tasks';
import type { BackupTableEvent, BackupTableResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** BackupTable: one source table to S3, part by part, until the time budget is spent. */
export async function handler(event: BackupTableEvent): Promise<BackupTableResult> {
  return backupTableTask(event, runtimeDeps());
}
