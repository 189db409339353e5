import { verifyTask } from '../engine/tasks';
import type { RunEvent, VerifyResult } from '../core/contract';
import { runtimeDeps } from './deps';

/** Verify: counts, checksums, orphans, sequences, passwords; throws VerificationFailedError on any difference. */
export async function handler(event: RunEvent): Promise<VerifyResult> {
  return verifyTask(event, runtimeDeps());
}
