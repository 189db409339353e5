import { reportTask } from '../engine/tasks';
import type { ReportResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** Report: the run's JSON report and rejected rows to S3; completes the run and releases its lease. */
export async function handler(event: RunEvent): Promise<ReportResult> {
  return reportTask(event, runtimeDeps());
}
