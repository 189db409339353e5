import { verifyItemTask } from '../engine/tasks';
import type { VerifyItemEvent, VerifyItemResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** VerifyItem: one verification item, chunk by chunk, until done or the time budget is spent. */
export async function handler(event: VerifyItemEvent): Promise<VerifyItemResult> {
  return verifyItemTask(event, runtimeDeps());
}
