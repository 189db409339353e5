import { verifyTask } from '../engine/tasks';
import type { VerifyEvent, VerifyResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** Verify: the verdict of the round's items (counts, checksums, orphans, sequences, passwords); throws VerificationFailedError on any difference. */
export async function handler(event: VerifyEvent): Promise<VerifyResult> {
  return verifyTask(event, runtimeDeps());
}
