/**
 * Named errors: the vocabulary of the state machine. Step Functions `Retry` matches on `name`
 * (Lambda reports it as `errorType`), so renaming one of these is a breaking change.
 *
 * - Retryable: a rerun of the same task can succeed without anyone changing anything.
 * - Everything else fails the execution at once; the message says what to do next.
 */
/** Every error name, and whether a rerun of the same task can succeed without anyone changing anything. */
const RETRYABLE = {
  TransientDatabaseError: true,
  DatabaseError: false,
  ConnectionConfigError: false,
  PermissionError: false,
  MappingError: false,
  PlanError: false,
  MigrationBatchError: false,
  VerificationFailedError: false,
  LeaseHeldError: false,
  BackupError: false,
  RestoreError: false,
  TransientStorageError: true,
  CutoverError: false,
  InputError: false,
  LocalStorageError: false,
  CaptureError: false,
  CatchUpRefusedError: false,
} as const satisfies Record<string, boolean>;

export type ErrorCode = keyof typeof RETRYABLE;

export abstract class MigrationError extends Error {
  abstract readonly retryable: boolean;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

function define<N extends ErrorCode>(name: N) {
  const cls = class extends MigrationError {
    override readonly name: N = name;
    readonly retryable: boolean = RETRYABLE[name];
  };
  Object.defineProperty(cls, 'name', { value: name });
  return cls;
}

/** Connection reset, too many connections, serialization failure, deadlock, admin shutdown. */
export const TransientDatabaseError = define('TransientDatabaseError');
/** A database error that a retry will not fix (syntax, constraint, missing object). */
export const DatabaseError = define('DatabaseError');
/** A URL, secret or setting that cannot be used as given. */
export const ConnectionConfigError = define('ConnectionConfigError');
/** The database role lacks a privilege the step needs. */
export const PermissionError = define('PermissionError');
/** An invalid mapping file (all problems are listed in the message). */
export const MappingError = define('MappingError');
/** The analysis refuses the source: an unknown table with rows, an ambiguous reference, ... */
export const PlanError = define('PlanError');
/** One batch failed for a reason other than a bad row (bad rows are rejected, not thrown). */
export const MigrationBatchError = define('MigrationBatchError');
/** Verification found a difference between source and target. */
export const VerificationFailedError = define('VerificationFailedError');
/** Another run holds the target's lease. */
export const LeaseHeldError = define('LeaseHeldError');
export const BackupError = define('BackupError');
export const RestoreError = define('RestoreError');
/** S3 unavailable or throttling for a moment. */
export const TransientStorageError = define('TransientStorageError');
export const CutoverError = define('CutoverError');
/** Invalid execution input or CLI arguments. */
export const InputError = define('InputError');
/** The local S3 server's own disk failed (full, read-only, …): the message names the path. Not retried. */
export const LocalStorageError = define('LocalStorageError');
/** Change capture of a live run: cannot be installed, or one is left behind by another run. */
export const CaptureError = define('CaptureError');
/** Catch-up met a change it cannot re-derive exactly (TRUNCATE, a key outside the prepared id range, …): it refuses rather than diverge. */
export const CatchUpRefusedError = define('CatchUpRefusedError');

/** Names Step Functions retries with backoff; everything else fails the execution at once. */
export const RETRYABLE_ERROR_NAMES: readonly ErrorCode[] = (Object.keys(RETRYABLE) as ErrorCode[]).filter((name) => RETRYABLE[name]);
