import { analyseTask } from '../engine/tasks';
import type { AnalyseResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** Analyse: read the source catalog, plan every mapping decision, write the plan to S3. */
export async function handler(event: RunEvent): Promise<AnalyseResult> {
  return analyseTask(event, runtimeDeps());
}
