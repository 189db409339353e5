/**
 * The contract between the workflow definition (lib/workflow.ts) and the task handlers.
 * Payloads carry names, S3 keys and cursors only, never row data or the whole plan
 * (Step Functions limits a payload to 256 KB).
 */

/** Execution input, as documented in the README. Validated by Preflight. */
export interface ExecutionInput {
  readonly runId?: string;
  readonly sourceSchema?: string;
  readonly targetSchema?: string;
  /** Only these target tables (default: all eight). */
  readonly tables?: string[];
  /** Source tables to leave out of the analysis (they are still backed up). */
  readonly skipTables?: string[];
  readonly batchSize?: number;
  readonly cutover?: boolean;
  /** Stop after Analyse: backup + plan, nothing written to the target. */
  readonly dryRun?: boolean;
  /** S3 key of a user mapping file in the backup bucket. */
  readonly mappingKey?: string;
  /** Application schema the cutover moves the new tables into (default `public`). */
  readonly appSchema?: string;
  /** Also write the seed's single-file JSON backup (`rds_backup_YYYYMMDD_HHMMSS.json`), streamed. */
  readonly legacyJsonBackup?: boolean;
  /** With the `runId` of a migrated run: send exactly its rejected keys through the same mapping again. */
  readonly retryRejects?: boolean;
  /** Compute every summary the application derives (bill.linked_parent_count, …) even where the source has it. */
  readonly recomputeSummaries?: boolean;
  /**
   * The source is live: change capture is installed in Preflight before Backup reads a row, and after
   * Verify the execution catches up until the lag is under a threshold; with `cutover` it then cuts over,
   * otherwise it ends caught up with the capture on (a later cutover finishes it).
   */
  readonly live?: boolean;
  /**
   * At most this many work items of the migration at once, each holding one source or target connection
   * (finalize: this many target connections for its index builds and validations). Default: the stack's
   * `concurrency` prop (4).
   */
  readonly concurrency?: number;
}

/** The run as every task after Preflight sees it: resolved defaults, no secrets. */
export interface RunContext {
  readonly runId: string;
  readonly sourceSchema: string;
  readonly targetSchema: string;
  readonly appSchema: string;
  readonly tables: string[] | null;
  readonly skipTables: string[];
  readonly batchSize: number;
  readonly cutover: boolean;
  readonly dryRun: boolean;
  readonly mappingKey: string | null;
  /** Migration time (UTC ISO): replaces missing timestamps, fixed for the whole run so reruns agree. */
  readonly runTime: string;
  /** S3 prefix of this run's objects: `runs/<runId>/`. */
  readonly prefix: string;
  /** Source and target are different databases: the source tables are first staged with COPY. */
  readonly crossDatabase: boolean;
  readonly legacyJsonBackup?: boolean;
  /** A retry round of the run's rejected rows (input `retryRejects`), started by Preflight. */
  readonly retry?: { readonly round: number; readonly since: string };
  readonly recomputeSummaries?: boolean;
  readonly live?: boolean;
  /** At most this many migration work items (and connections) at once; the Migrate Map's MaxConcurrencyPath. */
  readonly concurrency: number;
}

/** A resumable unit of work returns a cursor until it is done. `cursor` is opaque to the workflow. */
export interface StepProgress {
  readonly done: boolean;
  readonly cursor: string | null;
}

export interface PreflightEvent { readonly input: ExecutionInput; readonly executionName?: string }
export interface PreflightResult {
  readonly run: RunContext;
  /** Every table of the source schema: all are backed up, mapped or not. */
  readonly backupTables: string[];
}

export interface BackupTableEvent { readonly run: RunContext; readonly table: string; readonly cursor: string | null }
export type BackupTableResult = StepProgress & { readonly table: string; readonly rows: number };

export interface RunEvent { readonly run: RunContext }
export interface FinalizeBackupResult { readonly manifestKey: string; readonly tables: number; readonly rows: number; readonly legacyJsonKey?: string }

export interface AnalyseResult {
  readonly planKey: string;
  /** Migration steps in one dependency order: [`stage:<table>` per source table,] `prepare`, one per target table, [`passwords:i/n`,] `finalize`. */
  readonly steps: string[];
  /** The same steps as a dependency graph in waves (core/work-graph.ts): every dependency of a step is in an earlier wave. */
  readonly waves: string[][];
  readonly waveCount: number;
  readonly decisions: number;
  readonly warnings: number;
}

export interface MigrateStepEvent { readonly run: RunContext; readonly step: string; readonly cursor: string | null }
export type MigrateStepResult = StepProgress & {
  readonly step: string;
  readonly migrated: number;
  readonly rejected: number;
  readonly batches: number;
};

/** PlanVerify: a new round of verification items; `items` are the Map's items (`<round>/<number>`, heaviest first). */
export interface PlanVerifyResult { readonly round: string; readonly items: string[] }
export interface VerifyItemEvent { readonly run: RunContext; readonly item: string; readonly cursor: string | null }
export type VerifyItemResult = StepProgress & { readonly item: string; readonly label: string; readonly chunks: number };
/** Verify (assembly of a round's items; without `round`, the whole verification in this one invocation). */
export interface VerifyEvent { readonly run: RunContext; readonly round?: string }
export interface VerifyResult { readonly passed: boolean; readonly reportKey: string; readonly failedChecks: string[] }
/** CatchUp: the lag after this invocation; `caughtUp` decides the workflow's IsCaughtUp choice. */
export interface CatchUpResult {
  readonly caughtUp: boolean;
  readonly applied: number;
  readonly pending: number;
  readonly oldestSeconds: number;
  readonly position: number;
  readonly rate: number;
}
export interface CutoverResult { readonly status: 'cut-over' | 'already-cut-over'; readonly legacySchema: string; readonly writeFreezeMs?: number; readonly freezePhases?: Record<string, number> }
export interface ReportResult {
  readonly runId: string;
  readonly status: string;
  readonly reportKey: string;
  readonly tables: Record<string, { migrated: number; rejected: number; derived: number }>;
}

/** State names of the workflow's tasks; the local runner binds each to its handler. */
export const TASK_STATES = {
  preflight: 'Preflight',
  backupTable: 'BackupTable',
  finalizeBackup: 'FinalizeBackup',
  analyse: 'Analyse',
  createSchema: 'CreateSchema',
  migrateStep: 'MigrateStep',
  planVerify: 'PlanVerify',
  verifyItem: 'VerifyItem',
  verify: 'Verify',
  catchUp: 'CatchUp',
  cutover: 'Cutover',
  report: 'Report',
} as const;
export type TaskKey = keyof typeof TASK_STATES;

/** The handler module of each task: `lambdas/handlers/<module>.ts` (deployed and run locally alike). */
export const HANDLER_MODULES: Readonly<Record<TaskKey, string>> = {
  preflight: 'preflight',
  backupTable: 'backup-table',
  finalizeBackup: 'finalize-backup',
  analyse: 'analyse',
  createSchema: 'create-schema',
  migrateStep: 'migrate-step',
  planVerify: 'plan-verify',
  verifyItem: 'verify-item',
  verify: 'verify',
  catchUp: 'catch-up',
  cutover: 'cutover',
  report: 'report',
};

/**
 * Environment the handlers read (set by the stack; the local runner sets the same names):
 * - SOURCE_SECRET_ARN / TARGET_SECRET_ARN (AWS) or SOURCE_DATABASE_URL / TARGET_DATABASE_URL (local)
 * - BACKUP_BUCKET, BACKUP_PREFIX (default ''), BACKUP_KMS_KEY_ID (optional)
 * - S3_ENDPOINT (an S3-compatible server instead of AWS S3; signed with the standard credential chain),
 *   S3_LOCAL_SERVER=true (S3_ENDPOINT is the built-in local s3rver: sign with its fixed key), TIME_BUDGET_MS (default 600000 = 10 of the Lambda's 15 minutes)
 * - DEFAULT_CONCURRENCY (Preflight: the run's concurrency when the input names none; default 4)
 */
export const ENV = {
  sourceSecretArn: 'SOURCE_SECRET_ARN',
  targetSecretArn: 'TARGET_SECRET_ARN',
  sourceUrl: 'SOURCE_DATABASE_URL',
  targetUrl: 'TARGET_DATABASE_URL',
  bucket: 'BACKUP_BUCKET',
  prefix: 'BACKUP_PREFIX',
  kmsKeyId: 'BACKUP_KMS_KEY_ID',
  s3Endpoint: 'S3_ENDPOINT',
  s3LocalServer: 'S3_LOCAL_SERVER',
  timeBudgetMs: 'TIME_BUDGET_MS',
  /** Preflight: the run's concurrency when the execution input names none (the stack's `concurrency` prop). */
  defaultConcurrency: 'DEFAULT_CONCURRENCY',
} as const;
