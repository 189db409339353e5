import { planVerifyTask } from '../engine/tasks';
import type { PlanVerifyResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** PlanVerify: a new round of verification items (per table, unit and key range, and whole-table checks). */
export async function handler(event: RunEvent): Promise<PlanVerifyResult> {
  return planVerifyTask(event, runtimeDeps());
}
