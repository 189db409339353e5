import { catchUpTask } from '../engine/tasks';
import type { CatchUpResult, RunEvent } from '../core/contract';
import { runtimeDeps } from './deps';

/** CatchUp: re-derives the captured changes of a live run, within the time budget; reports the lag. */
export async function handler(event: RunEvent): Promise<CatchUpResult> {
  return catchUpTask(event, runtimeDeps());
}
