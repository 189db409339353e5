import { scrypt as scryptCallback } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { ROMIX_WASM_BASE64 } from './scrypt-romix-wasm';

/**
 * scrypt (RFC 7914) for hashing legacy plaintext passwords: node:crypto's PBKDF2-HMAC-SHA256 around a ROMix in
 * WebAssembly SIMD (scrypt-romix.wat), run on a worker thread so the caller's event loop stays free (locally every
 * task of the workflow shares one). OpenSSL's scrypt computes Salsa20/8 a word at a time: 111–120 ms a werkzeug hash
 * (N 32768, r 8) on this project's 2-core machine, the SIMD ROMix 51–57 ms with the same result. The result is
 * checked against OpenSSL's on a small input before the worker's first use (and RFC 7914's vectors in the tests);
 * where WebAssembly SIMD is missing, a check fails, or the worker dies, node:crypto computes it instead.
 * Checking a password (io/password.ts checkPasswordWerkzeug, Verify's sample) stays on node:crypto: an independent
 * implementation checks this one's hashes on every run.
 */

/** The largest N·128·r the WebAssembly ROMix takes (its memory is 32-bit); above it node:crypto computes the key. */
const MAX_WASM_BLOCK_BYTES = 1 << 30;
/** A worker with nothing to do is stopped after this long: its 33 MiB of ROMix memory are not kept for nothing. */
const WORKER_IDLE_MS = 2_000;

/** The worker (CommonJS, run with `eval`): one key at a time, its ROMix memory grown to the largest asked for. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { pbkdf2Sync } = require('node:crypto');
const { memory, romix } = new WebAssembly.Instance(new WebAssembly.Module(Buffer.from(workerData.wasm, 'base64'))).exports;
function key(password, salt, N, r, p, keyLength) {
  const len = 128 * r;
  const need = 4 * len + N * len;
  if (memory.buffer.byteLength < need) memory.grow(Math.ceil((need - memory.buffer.byteLength) / 65536));
  const b = new Uint32Array(pbkdf2Sync(password, salt, 1, len * p, 'sha256').buffer.slice(0));
  for (let q = 0; q < p; q++) {
    const w = new Uint32Array(memory.buffer, 0, len / 4);
    for (let k = 0; k < 2 * r; k++) for (let i = 0; i < 16; i++) w[k * 16 + i] = b[q * len / 4 + k * 16 + ((i * 5) % 16)];
    romix(r, N);
    const out = new Uint32Array(memory.buffer, 0, len / 4);
    for (let k = 0; k < 2 * r; k++) for (let i = 0; i < 16; i++) b[q * len / 4 + k * 16 + ((i * 5) % 16)] = out[k * 16 + i];
  }
  return pbkdf2Sync(password, Buffer.from(b.buffer), 1, keyLength, 'sha256');
}
parentPort.on('message', (m) => {
  try {
    parentPort.postMessage({ id: m.id, key: key(Buffer.from(m.password), Buffer.from(m.salt), m.N, m.r, m.p, m.keyLength) });
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: err instanceof Error ? err.name + ': ' + err.message : 'failed' });
  }
});
`;

export interface ScryptParams {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly keyLength: number;
}

interface Pending {
  resolve(key: Buffer): void;
  reject(err: Error): void;
}

/** node:crypto's scrypt: the fallback, and the reference the worker is checked against. */
export function opensslScrypt(password: Buffer, salt: Buffer, o: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCallback(password, salt, o.keyLength, { N: o.N, r: o.r, p: o.p, maxmem: 256 * o.N * o.r * o.p + 16 * 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** The check before a worker's first key: a small scrypt (RFC 7914's second vector's cost, 1 KiB blocks) as OpenSSL computes it. */
const SELF_CHECK = { password: Buffer.from('password'), salt: Buffer.from('NaCl'), params: { N: 1024, r: 8, p: 2, keyLength: 64 } };

class RomixWorker {
  private worker: Worker | null = null;
  private checked: Promise<boolean> | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private idle: NodeJS.Timeout | null = null;
  /** Set once the WebAssembly path failed: node:crypto from then on, in this process. */
  broken = !simdSupported();

  async key(password: Buffer, salt: Buffer, o: ScryptParams): Promise<Buffer> {
    if (this.broken || o.N * 128 * o.r > MAX_WASM_BLOCK_BYTES) return opensslScrypt(password, salt, o);
    this.checked ??= this.selfCheck();
    if (!(await this.checked)) return opensslScrypt(password, salt, o);
    try {
      return await this.post(password, salt, o);
    } catch {
      this.broken = true;
      return opensslScrypt(password, salt, o);
    }
  }

  private async selfCheck(): Promise<boolean> {
    const { password, salt, params } = SELF_CHECK;
    try {
      const got = await this.post(password, salt, params);
      const want = await opensslScrypt(password, salt, params);
      if (got.equals(want)) return true;
    } catch {
      // fall through: node:crypto from now on
    }
    this.broken = true;
    return false;
  }

  private post(password: Buffer, salt: Buffer, o: ScryptParams): Promise<Buffer> {
    const worker = this.start();
    if (this.idle) clearTimeout(this.idle);
    this.idle = null;
    const id = this.nextId++;
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, password: new Uint8Array(password), salt: new Uint8Array(salt), N: o.N, r: o.r, p: o.p, keyLength: o.keyLength });
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { wasm: ROMIX_WASM_BASE64 } });
    worker.unref();
    worker.on('message', (m: { id: number; key?: Uint8Array; error?: string }) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      if (m.key) p?.resolve(Buffer.from(m.key.buffer, m.key.byteOffset, m.key.byteLength));
      else p?.reject(new Error(`scrypt worker: ${m.error ?? 'no key'}`));
      if (this.pending.size === 0) this.idle = setTimeout(() => void this.stop(), WORKER_IDLE_MS).unref();
    });
    const fail = (err: Error) => {
      if (this.worker !== worker) return; // a worker stopped when idle: nothing of it is pending
      this.worker = null;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`scrypt worker exited (code ${code})`)));
    this.worker = worker;
    return worker;
  }

  private async stop(): Promise<void> {
    const w = this.worker;
    if (!w || this.pending.size > 0) return;
    this.worker = null;
    await w.terminate();
  }
}

/** Whether this Node.js compiles the module (WebAssembly SIMD, bulk memory); the type is not in the project's libs. */
function simdSupported(): boolean {
  const wasm = (globalThis as { WebAssembly?: { validate(bytes: Uint8Array): boolean } }).WebAssembly;
  try {
    return wasm?.validate(Buffer.from(ROMIX_WASM_BASE64, 'base64')) === true;
  } catch {
    return false;
  }
}

const romix = new RomixWorker();

/** The scrypt key of `password` and `salt`: the SIMD ROMix on the worker thread, or node:crypto where it cannot run. */
export function scryptKey(password: Buffer, salt: Buffer, o: ScryptParams): Promise<Buffer> {
  return romix.key(password, salt, o);
}

/** Whether keys are computed in WebAssembly (false once it failed, or where it cannot run): for the tests and the bench. */
export function wasmScryptActive(): boolean {
  return !romix.broken;
}
