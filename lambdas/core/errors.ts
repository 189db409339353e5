/**
 * Named errors: the vocabulary of the state machine. Step Functions `Retry` matches on `name`
 * (Lambda reports it as `errorType`), so renaming one of these is a breaking change.
 *
 * - Retryable: a rerun of the same task can succeed without anyone changing anything.
 * - Everything else fails the execution at once; the message says what to do next.
 */
export type ErrorCode =
  | 'TransientDatabaseError'
  | 'DatabaseError'
  | 'ConnectionConfigError'
  | 'PermissionError'
  | 'MappingError'
  | 'PlanError'
  | 'MigrationBatchError'
  | 'VerificationFailedError'
  | 'LeaseHeldError'
  | 'BackupError'
  | 'RestoreError'
  | 'TransientStorageError'
  | 'CutoverError'
  | 'InputError'
  | 'CaptureError'
  | 'CatchUpRefusedError';

export abstract class MigrationError extends Error {
  abstract readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

function define<N extends ErrorCode>(name: N, retryable: boolean) {
  const cls = class extends MigrationError {
    override readonly name: N = name;
    readonly retryable = retryable;
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

/** Connection reset, too many connections, serialization failure, deadlock, admin shutdown. */
export const TransientDatabaseError = define('TransientDatabaseError', true);
/** A database error that a retry will not fix (syntax, constraint, missing object). */
export const DatabaseError = define('DatabaseError', false);
/** A URL, secret or setting that cannot be used as given. */
export const ConnectionConfigError = define('ConnectionConfigError', false);
/** The database role lacks a privilege the step needs. */
export const PermissionError = define('PermissionError', false);
/** An invalid mapping file (all problems are listed in the message). */
export const MappingError = define('MappingError', false);
/** The analysis refuses the source: an unknown table with rows, an ambiguous reference, ... */
export const PlanError = define('PlanError', false);
/** One batch failed for a reason other than a bad row (bad rows are rejected, not thrown). */
export const MigrationBatchError = define('MigrationBatchError', false);
/** Verification found a difference between source and target. */
export const VerificationFailedError = define('VerificationFailedError', false);
/** Another run holds the target's lease. */
export const LeaseHeldError = define('LeaseHeldError', false);
export const BackupError = define('BackupError', false);
export const RestoreError = define('RestoreError', false);
/** S3 unavailable or throttling for a moment. */
export const TransientStorageError = define('TransientStorageError', true);
export const CutoverError = define('CutoverError', false);
/** Invalid execution input or CLI arguments. */
export const InputError = define('InputError', false);
/** Change capture of a live run: cannot be installed, or one is left behind by another run. */
export const CaptureError = define('CaptureError', false);
/** Catch-up met a change it cannot re-derive exactly (TRUNCATE, a key outside the prepared id range, …): it refuses rather than diverge. */
export const CatchUpRefusedError = define('CatchUpRefusedError', false);

export type AnyMigrationError = InstanceType<
  | typeof TransientDatabaseError
  | typeof DatabaseError
  | typeof ConnectionConfigError
  | typeof PermissionError
  | typeof MappingError
  | typeof PlanError
  | typeof MigrationBatchError
  | typeof VerificationFailedError
  | typeof LeaseHeldError
  | typeof BackupError
  | typeof RestoreError
  | typeof TransientStorageError
  | typeof CutoverError
  | typeof InputError
  | typeof CaptureError
  | typeof CatchUpRefusedError
>;

/** Names Step Functions retries with backoff; everything else fails the execution at once. */
export const RETRYABLE_ERROR_NAMES: readonly ErrorCode[] = ['TransientDatabaseError', 'TransientStorageError'];
