import { fork, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { StateMachineDefinition } from 'aws-local-stepfunctions';
import { ENV } from '../../lambdas/core/contract';
import type { BundledFunction } from './bundles';
import { FAKE_ACCOUNT, FAKE_REGION, runLocally, type LocalRunResult, type LocalTaskHandler } from './state-machine';

/**
 * Runs the synthesized definition with every task bound to its esbuild bundle, as Lambda would:
 * each invocation goes to a Node process of that function's own (a new one when all are busy, as
 * Lambda starts a new execution environment), started bare (no NODE_PATH, no loader, cwd = the
 * bundle's directory, nothing above it to resolve modules from), with the function's `Environment`
 * from the template. Only what cannot exist locally is translated: the bucket's Ref becomes the local
 * bucket, the KMS key's ARN a fake ARN of the same form, the S3 endpoint the local s3rver; the secret
 * ARNs are read from the Secrets Manager endpoint given (through the SDK's standard
 * AWS_ENDPOINT_URL_SECRETS_MANAGER, each function signing with an access key of its own, as each
 * role has), or without one become the local database URLs (a function gets a URL only for the
 * secrets the template gives it).
 */

export interface BundledRunOptions {
  readonly definition: StateMachineDefinition;
  /** Keyed by task state name. */
  readonly functions: Readonly<Record<string, BundledFunction>>;
  readonly sourceUrl: string;
  /** @default sourceUrl */
  readonly targetUrl?: string;
  readonly bucket: string;
  /** The built-in local s3rver. */
  readonly s3Endpoint: string;
  readonly input: unknown;
  /** A Secrets Manager (stand-in) holding the template's secrets. @default - secret ARNs become the URLs */
  readonly secretsManagerEndpoint?: string;
  /**
   * Each function signs S3 requests with credentials of its own ({@link functionCredentials}) through the
   * standard chain, as with its role in Lambda; the S3 server must accept them. @default false (the local s3rver's key)
   */
  readonly functionCredentials?: boolean;
  readonly executionName?: string;
  /** Replaces the template's TIME_BUDGET_MS (which is 10 minutes) so that the resumable loops come back. */
  readonly timeBudgetMs?: number;
}

export interface BundledRunResult extends LocalRunResult {
  /** Per task state: processes started (cold starts) and invocations. */
  readonly functions: Record<string, { coldStarts: number; invocations: number; initMs: number[] }>;
}

export class BundleLoadError extends Error {
  override readonly name = 'BundleLoadError';
}

/** Resolves the intrinsics a function's environment holds to local stand-ins; anything else is refused. */
export function resolveFunctionEnvironment(
  fn: BundledFunction,
  local: { sourceUrl: string; targetUrl: string; bucket: string; secretsManagerEndpoint?: string },
  template: { Resources?: Record<string, { Type: string }> },
): Record<string, string> {
  const resources = template.Resources ?? {};
  const resolve = (name: string, value: unknown): string => {
    if (typeof value === 'string') return value;
    const v = value as Record<string, unknown>;
    if (typeof v?.Ref === 'string' && resources[v.Ref]?.Type === 'AWS::S3::Bucket') return local.bucket;
    const getAtt = v?.['Fn::GetAtt'] as [string, string] | undefined;
    if (getAtt && getAtt[1] === 'Arn' && resources[getAtt[0]]?.Type === 'AWS::KMS::Key') {
      return `arn:aws:kms:${FAKE_REGION}:${FAKE_ACCOUNT}:key/${getAtt[0]}`;
    }
    throw new Error(`${fn.logicalId}: cannot stand in locally for ${name} = ${JSON.stringify(value)}.`);
  };
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(fn.environment)) env[name] = resolve(name, value);
  if (local.secretsManagerEndpoint) {
    return { ...env, AWS_ENDPOINT_URL_SECRETS_MANAGER: local.secretsManagerEndpoint, ...functionCredentials(fn) };
  }
  if (env[ENV.sourceSecretArn]) {
    delete env[ENV.sourceSecretArn];
    env[ENV.sourceUrl] = local.sourceUrl;
  }
  if (env[ENV.targetSecretArn]) {
    delete env[ENV.targetSecretArn];
    env[ENV.targetUrl] = local.targetUrl;
  }
  return env;
}

/** The access key a function signs with (its Secrets Manager and, with `functionCredentials`, S3 requests): one per function. */
export function functionAccessKeyId(fn: BundledFunction): string {
  return `ASIA${fn.logicalId.toUpperCase()}`;
}

/** The secret key of every function's stand-in credentials (local servers only). */
export const FUNCTION_SECRET_ACCESS_KEY = 'local-stand-in';

/** Lambda hands a function its role's credentials in these variables. */
export function functionCredentials(fn: BundledFunction): Record<string, string> {
  return { AWS_ACCESS_KEY_ID: functionAccessKeyId(fn), AWS_SECRET_ACCESS_KEY: FUNCTION_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN: FUNCTION_SECRET_ACCESS_KEY };
}

/** The worker: loads one bundle in a bare process and serves invocations over IPC. Plain CommonJS, no dependency. */
const WORKER_SOURCE = `'use strict';
const path = require('node:path');
const [dir, spec] = process.argv.slice(2);
const dot = spec.lastIndexOf('.');
const file = path.join(dir, spec.slice(0, dot));
const exportName = spec.slice(dot + 1);
const t0 = process.hrtime.bigint();
let handler;
try {
  handler = require(file)[exportName];
  if (typeof handler !== 'function') throw new Error(file + ' exports no function ' + exportName);
} catch (err) {
  process.send({ type: 'load-error', message: String(err && err.stack || err) }, () => process.exit(1));
  return;
}
process.send({ type: 'ready', initMs: Number(process.hrtime.bigint() - t0) / 1e6 });
process.on('message', async (m) => {
  try {
    const result = await handler(m.event, { functionName: process.env.AWS_LAMBDA_FUNCTION_NAME, getRemainingTimeInMillis: () => 900000 });
    process.send({ id: m.id, ok: true, result });
  } catch (err) {
    const e = err || {};
    process.send({ id: m.id, ok: false, name: String(e.name || 'Error'), message: String(e.message || e) });
  }
});
`;

/** Writes the worker next to the bundles (outside the repository, so nothing resolves from its node_modules). */
export function writeWorker(outdir: string): string {
  const file = path.join(outdir, 'lambda-worker.cjs');
  writeFileSync(file, WORKER_SOURCE);
  return file;
}

interface Worker {
  readonly child: ChildProcess;
  busy: boolean;
  readonly output: string[];
}

/** Starts one bare Node process on a bundle; resolves when the bundle is loaded (its init time), rejects when it cannot load. */
export function startBundleProcess(workerFile: string, fn: BundledFunction, env: Record<string, string>): Promise<{ worker: Worker; initMs: number }> {
  const child = fork(workerFile, [fn.assetDir, fn.handler], {
    cwd: fn.assetDir,
    // Lambda's environment is the function's: nothing of this process's (no NODE_PATH, no loader).
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', AWS_LAMBDA_FUNCTION_NAME: fn.logicalId, AWS_REGION: FAKE_REGION, ...env },
    execArgv: [],
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const worker: Worker = { child, busy: false, output: [] };
  const keep = (chunk: Buffer) => {
    worker.output.push(chunk.toString('utf8'));
    if (worker.output.length > 200) worker.output.shift();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new BundleLoadError(`${fn.logicalId} (${fn.state}): the process exited (${code}) before its bundle loaded. ${worker.output.join('').slice(-2000)}`));
    child.once('exit', onExit);
    child.once('message', (m: { type: string; initMs?: number; message?: string }) => {
      if (m.type === 'ready') {
        child.off('exit', onExit);
        resolve({ worker, initMs: m.initMs! });
      } else {
        child.off('exit', onExit);
        child.kill();
        reject(new BundleLoadError(`${fn.logicalId} (${fn.state}): the bundle does not load in a bare Node process: ${m.message}`));
      }
    });
  });
}

function invoke(worker: Worker, event: unknown, id: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { id: number; ok: boolean; result?: unknown; name?: string; message?: string }) => {
      if (m.id !== id) return;
      worker.child.off('message', onMessage);
      worker.child.off('exit', onExit);
      if (m.ok) resolve(m.result);
      else reject(Object.assign(new Error(m.message), { name: m.name }));
    };
    const onExit = (code: number | null) => {
      worker.child.off('message', onMessage);
      reject(Object.assign(new Error(`the function's process exited (${code}) during the invocation. ${worker.output.join('').slice(-2000)}`), { name: 'Lambda.Unknown' }));
    };
    worker.child.on('message', onMessage);
    worker.child.once('exit', onExit);
    worker.child.send({ id, event });
  });
}

/** Runs the definition through the bundles; every process it started is stopped when it ends. */
export async function runBundledWorkflow(options: BundledRunOptions, template: { Resources?: Record<string, { Type: string }> }, outdir: string): Promise<BundledRunResult> {
  const workerFile = writeWorker(outdir);
  const local = { sourceUrl: options.sourceUrl, targetUrl: options.targetUrl ?? options.sourceUrl, bucket: options.bucket, secretsManagerEndpoint: options.secretsManagerEndpoint };
  const pools = new Map<string, Worker[]>();
  const stats: BundledRunResult['functions'] = {};
  let nextId = 0;
  const handlers: Record<string, LocalTaskHandler> = {};
  for (const [state, fn] of Object.entries(options.functions)) {
    const env = {
      ...resolveFunctionEnvironment(fn, local, template),
      [ENV.s3Endpoint]: options.s3Endpoint,
      ...(options.functionCredentials ? functionCredentials(fn) : { [ENV.s3LocalServer]: 'true' }),
      ...(options.timeBudgetMs !== undefined && fn.environment[ENV.timeBudgetMs] !== undefined ? { [ENV.timeBudgetMs]: String(options.timeBudgetMs) } : {}),
    };
    const pool: Worker[] = [];
    pools.set(state, pool);
    stats[state] = { coldStarts: 0, invocations: 0, initMs: [] };
    handlers[state] = (async (event: unknown) => {
      let worker = pool.find((w) => !w.busy && w.child.exitCode === null);
      if (!worker) {
        const started = await startBundleProcess(workerFile, fn, env);
        worker = started.worker;
        pool.push(worker);
        stats[state]!.coldStarts++;
        stats[state]!.initMs.push(started.initMs);
      }
      worker.busy = true;
      stats[state]!.invocations++;
      try {
        return await invoke(worker, event, nextId++);
      } finally {
        worker.busy = false;
      }
    }) as LocalTaskHandler;
  }
  try {
    const result = await runLocally({ definition: options.definition, input: options.input, handlers, executionName: options.executionName });
    return { ...result, functions: stats };
  } finally {
    for (const pool of pools.values()) for (const w of pool) w.child.kill();
  }
}
