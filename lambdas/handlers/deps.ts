import type { TaskDeps } from '../engine/tasks';
import { hashPasswords } from '../io/password';
import { backupBucket, backupPrefix, defaultConcurrency, kmsKeyId, resolveDatabaseConfig, s3Client, timeBudgetMs } from '../io/runtime';

/** Task dependencies from the environment (Lambda: Secrets Manager; local runner: URLs). Built per invocation, clients are cached. */
export function runtimeDeps(holder?: string): TaskDeps {
  return {
    source: () => resolveDatabaseConfig('source'),
    target: () => resolveDatabaseConfig('target'),
    s3: s3Client(),
    bucket: backupBucket(),
    prefix: backupPrefix(),
    kmsKeyId: kmsKeyId(),
    timeBudgetMs: timeBudgetMs(),
    defaultConcurrency: defaultConcurrency(),
    hashPasswords: (plain) => hashPasswords(plain),
    holder,
    log: (line) => console.log(line),
  };
}
