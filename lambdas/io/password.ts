import { pbkdf2 as pbkdf2Callback, randomInt, timingSafeEqual } from 'node:crypto';
import type { BinaryLike } from 'node:crypto';
import { BCRYPT_HASH_PATTERN, WERKZEUG_PBKDF2_HASH_PATTERN, WERKZEUG_SCRYPT_HASH_PATTERN } from '../core/rules';
import { createLimiter } from '../core/limiter';
import { opensslScrypt, scryptKey } from './scrypt';

/**
 * Password hashes the TraceTrack application (Flask + werkzeug.security) can check.
 *
 * `hashPasswordWerkzeug` produces exactly what werkzeug's `generate_password_hash(password)` does
 * by default: `scrypt:32768:8:1$<16-char salt>$<128 hex>`, where the key is
 * `hashlib.scrypt(password.encode(), salt=salt.encode(), n=32768, r=8, p=1)` (dklen 64).
 * `checkPasswordWerkzeug` mirrors `check_password_hash` for the scrypt and pbkdf2 methods.
 *
 * The regexes are POSIX-compatible (no escapes, `$` inside brackets) so the same string works in
 * JavaScript (`new RegExp`) and in PostgreSQL (`password ~ $1`).
 */

/** werkzeug's `SALT_CHARS`. */
const SALT_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
const SALT_LENGTH = 16;

/** werkzeug's default scrypt cost parameters (`scrypt` with no arguments). */
export const WERKZEUG_SCRYPT_DEFAULTS = { N: 32768, r: 8, p: 1, keyLength: 64 } as const;
/** werkzeug 3's `DEFAULT_PBKDF2_ITERATIONS`, used when a `pbkdf2:<hash>` method names no count. */
export const WERKZEUG_DEFAULT_PBKDF2_ITERATIONS = 600_000;

export type PasswordValueKind = 'werkzeug-scrypt' | 'werkzeug-pbkdf2' | 'bcrypt' | 'empty' | 'other';

// The patterns are core's (lambdas/core/rules.ts): one definition of a hash the application can check.
const SCRYPT_RE = new RegExp(WERKZEUG_SCRYPT_HASH_PATTERN);
const PBKDF2_RE = new RegExp(WERKZEUG_PBKDF2_HASH_PATTERN);
const BCRYPT_RE = new RegExp(BCRYPT_HASH_PATTERN);

/**
 * What a legacy password column holds. `other` is a plaintext password or a placeholder
 * (`'RESET'`, `'!'`); telling those apart is the caller's decision (the column's name says which).
 *
 * - `null`, `''`, `'   '` → `empty`
 * - `'scrypt:32768:8:1$abc…$<128 hex>'` → `werkzeug-scrypt`
 * - `'pbkdf2:sha256:600000$salt$<hex>'` → `werkzeug-pbkdf2`
 * - `'$2b$12$<53 chars>'` → `bcrypt`
 * - `'hunter2'`, `'RESET'` → `other`
 */
export function classifyPasswordValue(value: string | null): PasswordValueKind {
  if (value === null || value.trim() === '') return 'empty';
  if (SCRYPT_RE.test(value)) return 'werkzeug-scrypt';
  if (PBKDF2_RE.test(value)) return 'werkzeug-pbkdf2';
  if (BCRYPT_RE.test(value)) return 'bcrypt';
  return 'other';
}

function pbkdf2(password: BinaryLike, salt: BinaryLike, iterations: number, keyLength: number, digest: string): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    pbkdf2Callback(password, salt, iterations, keyLength, digest, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

function generateSalt(length = SALT_LENGTH): string {
  let salt = '';
  for (let i = 0; i < length; i++) salt += SALT_CHARS[randomInt(SALT_CHARS.length)];
  return salt;
}

/**
 * Scrypt computations in flight in this process, hashing or checking, whichever work items ask. Each
 * needs 32 MiB: the two hashing items of a run beside each other held four, and the CLI's peak RSS
 * went past 300 MB at scale 1 (319 MB; 297–303 MB with two slots). One slot costs no wall time: the
 * hashing items run beside the loads, on a core the loads would otherwise share (51–57 ms a hash in
 * io/scrypt.ts's WebAssembly ROMix, 111–120 ms in OpenSSL's, on this project's 2-core machine).
 */
export const HASH_SLOTS = 1;
const hashSlots = createLimiter(HASH_SLOTS);

/** Scrypt computations running in this process now (at most HASH_SLOTS). */
export const hashesInFlight = (): number => hashSlots.inFlight();

/**
 * The werkzeug scrypt key of `plain` for `salt`, as hex (at most HASH_SLOTS at once in the process): OpenSSL's to
 * check a password, so that checking stays independent of the WebAssembly ROMix that hashes them (`hashing`).
 */
export async function scryptHex(plain: string, salt: string, N: number, r: number, p: number, hashing = false): Promise<string> {
  const params = { N, r, p, keyLength: WERKZEUG_SCRYPT_DEFAULTS.keyLength };
  const key = await hashSlots.run(() => (hashing ? scryptKey : opensslScrypt)(Buffer.from(plain, 'utf8'), Buffer.from(salt, 'utf8'), params));
  return key.toString('hex');
}

/** `generate_password_hash(plain)` of werkzeug ≥ 3.0: `scrypt:32768:8:1$<salt>$<hex>`. */
export async function hashPasswordWerkzeug(plain: string): Promise<string> {
  const { N, r, p } = WERKZEUG_SCRYPT_DEFAULTS;
  const salt = generateSalt();
  return `scrypt:${N}:${r}:${p}$${salt}$${await scryptHex(plain, salt, N, r, p, true)}`;
}

const PBKDF2_DIGEST_BYTES: Record<string, number> = { sha1: 20, sha224: 28, sha256: 32, sha384: 48, sha512: 64 };
/** Refuse cost parameters that would let a hostile hash value exhaust memory or CPU. */
const MAX_SCRYPT_N = 1 << 20;
const MAX_SCRYPT_R = 32;
const MAX_SCRYPT_P = 16;
const MAX_PBKDF2_ITERATIONS = 10_000_000;

function hexEquals(actualHex: string, expectedHex: string): boolean {
  const a = Buffer.from(actualHex, 'utf8');
  const b = Buffer.from(expectedHex, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * `check_password_hash(hash, plain)` for the scrypt and pbkdf2 methods; false for anything else
 * (bcrypt, placeholders, malformed values, absurd cost parameters). Never throws on bad input.
 */
export async function checkPasswordWerkzeug(hash: string, plain: string): Promise<boolean> {
  const parts = hash.split('$');
  if (parts.length < 3) return false;
  // werkzeug: `method, salt, hashval = pwhash.split("$", 2)`.
  const [method, salt] = parts as [string, string];
  const hashval = parts.slice(2).join('$');
  const [name, ...args] = method.split(':');
  const password = Buffer.from(plain, 'utf8');
  try {
    if (name === 'scrypt') {
      let N: number = WERKZEUG_SCRYPT_DEFAULTS.N;
      let r: number = WERKZEUG_SCRYPT_DEFAULTS.r;
      let p: number = WERKZEUG_SCRYPT_DEFAULTS.p;
      if (args.length === 3 && args.every((a) => /^[0-9]+$/.test(a))) [N, r, p] = args.map(Number) as [number, number, number];
      else if (args.length !== 0) return false;
      if (N < 2 || N > MAX_SCRYPT_N || (N & (N - 1)) !== 0 || r < 1 || r > MAX_SCRYPT_R || p < 1 || p > MAX_SCRYPT_P) return false;
      return hexEquals(await scryptHex(plain, salt, N, r, p), hashval);
    }
    if (name === 'pbkdf2') {
      const digest = args[0] ?? 'sha256';
      const keyLength = PBKDF2_DIGEST_BYTES[digest];
      if (keyLength === undefined || args.length > 2) return false;
      const iterations = args.length === 2 ? (/^[0-9]+$/.test(args[1]!) ? Number(args[1]) : NaN) : WERKZEUG_DEFAULT_PBKDF2_ITERATIONS;
      if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) return false;
      const key = await pbkdf2(password, Buffer.from(salt, 'utf8'), iterations, keyLength, digest);
      return hexEquals(key.toString('hex'), hashval);
    }
  } catch {
    return false;
  }
  return false;
}

/**
 * Hashes each value with `hashPasswordWerkzeug`, in input order. The scrypt slots (HASH_SLOTS) bound how many
 * run at once in the whole process, whoever calls; a pool per call would only bound them a second time.
 */
export function hashPasswords(values: readonly string[]): Promise<string[]> {
  return Promise.all(values.map((v) => hashPasswordWerkzeug(v)));
}
