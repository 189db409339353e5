import { pbkdf2Sync, scryptSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  HASH_SLOTS,
  hashesInFlight,
  checkPasswordWerkzeug,
  classifyPasswordValue,
  hashPasswordWerkzeug,
  hashPasswords,
  type PasswordValueKind,
} from '../../lambdas/io/password';
import { createLimiter } from '../../lambdas/core/limiter';
import { BCRYPT_HASH_PATTERN, WERKZEUG_HASH_PATTERN } from '../../lambdas/core/rules';

/**
 * An independent reading of werkzeug's check_password_hash for scrypt:
 * `method, salt, hashval = pwhash.split("$", 2)`; `hashlib.scrypt(pw, salt=salt, n, r, p)` (dklen 64).
 */
function werkzeugScryptCheck(pwhash: string, password: string): boolean {
  const [method, salt, hashval] = pwhash.split('$', 3) as [string, string, string];
  const [name, n, r, p] = method.split(':');
  if (name !== 'scrypt') return false;
  const key = scryptSync(Buffer.from(password, 'utf8'), Buffer.from(salt, 'utf8'), 64, {
    N: Number(n),
    r: Number(r),
    p: Number(p),
    maxmem: 132 * Number(n) * Number(r) * Number(p),
  });
  return key.toString('hex') === hashval;
}

/** Produced by Python werkzeug 3.1.8: generate_password_hash(...). */
const WERKZEUG_VECTORS = [
  {
    plain: 'hunter2',
    hash: 'scrypt:32768:8:1$V9y5Rw5j72iBMEGz$bf817f183cf020b0adbf9554a4ef26d1d0001fb3dfcbcc693b8bec54981fa5de6ad18e94fa5278bd119f242b200e40c721d8cf7ee5fd50a9cf773a6b568a95c9',
  },
  {
    plain: 'correct horse',
    hash: 'pbkdf2:sha256:600000$lnpMTZlqO96ZJu5H$a1252d8f42c13109b7300a9cef5355b4e900f732097047851b0f7ef7fcd2c319',
  },
  {
    plain: 'Zoë Ülker 🔑',
    hash: 'pbkdf2:sha256:1000$g0LaRda1JXZozLzO$f918b0c6766affc55ff87db04214b138aa0e08f9872f970dc531b98aa217856f',
  },
];

describe('hashPasswordWerkzeug', () => {
  it('produces the werkzeug default format scrypt:32768:8:1$<16 alnum salt>$<128 hex>', async () => {
    const hash = await hashPasswordWerkzeug('hunter2');
    expect(hash).toMatch(/^scrypt:32768:8:1\$[A-Za-z0-9]{16}\$[0-9a-f]{128}$/);
  });

  it.each(['hunter2', 'correct horse', 'Zoë Ülker 北京 🔑', ''])('verifies with an independent werkzeug check: %j', async (plain) => {
    const hash = await hashPasswordWerkzeug(plain);
    expect(werkzeugScryptCheck(hash, plain)).toBe(true);
    expect(werkzeugScryptCheck(hash, `${plain}x`)).toBe(false);
    expect(await checkPasswordWerkzeug(hash, plain)).toBe(true);
  });

  it('uses a fresh salt every time', async () => {
    const [a, b] = await hashPasswords(['same', 'same']);
    expect(a).not.toBe(b);
    expect(werkzeugScryptCheck(a!, 'same') && werkzeugScryptCheck(b!, 'same')).toBe(true);
  });
});

describe('checkPasswordWerkzeug', () => {
  it.each(WERKZEUG_VECTORS)('accepts the werkzeug hash of $plain and refuses a wrong password', async ({ plain, hash }) => {
    expect(await checkPasswordWerkzeug(hash, plain)).toBe(true);
    expect(await checkPasswordWerkzeug(hash, 'wrong password')).toBe(false);
  });

  it('checks a pbkdf2:sha256 hash computed independently (dklen = 32, hex)', async () => {
    const salt = 'NaClNaClNaClNaCl';
    const hex = pbkdf2Sync(Buffer.from('correct horse'), Buffer.from(salt), 1000, 32, 'sha256').toString('hex');
    // Python: hashlib.pbkdf2_hmac('sha256', b'correct horse', b'NaClNaClNaClNaCl', 1000).hex()
    expect(hex).toBe('9d9423423838ab4759fe9068e812fb7c7df1c9582a5e71888668c195a6a114dc');
    expect(await checkPasswordWerkzeug(`pbkdf2:sha256:1000$${salt}$${hex}`, 'correct horse')).toBe(true);
    expect(await checkPasswordWerkzeug(`pbkdf2:sha256:1000$${salt}$${hex}`, 'correct horsE')).toBe(false);
    expect(await checkPasswordWerkzeug(`pbkdf2:sha256:1001$${salt}$${hex}`, 'correct horse')).toBe(false);
  });

  it.each([
    'RESET',
    '!',
    '',
    'hunter2',
    '$2b$12$abcdefghijklmnopqrstuuJ1eB2kYbVu3v6Qn8m4o5p6q7r8s9t0u',
    'scrypt:32768:8$salt$00',
    'scrypt:3:8:1$salt$00',
    'scrypt:4194304:8:1$salt$00',
    'pbkdf2:md5:1000$salt$00',
    'pbkdf2:sha256:abc$salt$00',
  ])('returns false (never throws) for %j', async (value) => {
    expect(await checkPasswordWerkzeug(value, 'hunter2')).toBe(false);
  });
});

describe('classifyPasswordValue', () => {
  const scrypt = WERKZEUG_VECTORS[0]!.hash;
  const pbkdf2 = WERKZEUG_VECTORS[1]!.hash;
  const bcrypt = '$2b$12$abcdefghijklmnopqrstuuJ1eB2kYbVu3v6Qn8m4o5p6q7r8s9t0u';
  const cases: Array<[string | null, PasswordValueKind]> = [
    [scrypt, 'werkzeug-scrypt'],
    [pbkdf2, 'werkzeug-pbkdf2'],
    ['pbkdf2:sha256$abc$9d94', 'werkzeug-pbkdf2'],
    [bcrypt, 'bcrypt'],
    ['$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy', 'bcrypt'],
    [null, 'empty'],
    ['', 'empty'],
    ['   ', 'empty'],
    ['hunter2', 'other'],
    ['correct horse', 'other'],
    ['RESET', 'other'],
    ['!', 'other'],
    [`${scrypt}0`, 'other'],
    [scrypt.toUpperCase(), 'other'],
    ['scrypt:32768:8:1$$' + 'a'.repeat(128), 'other'],
    ['$2b$12$short', 'other'],
    ['sha256$salt$abcdef', 'other'],
  ];

  it.each(cases)('%j → %s', (value, kind) => {
    expect(classifyPasswordValue(value)).toBe(kind);
  });

  it.each(cases.filter(([v]) => v !== null))('the exported regexes agree with the classification for %j', (value, kind) => {
    const isHash = new RegExp(WERKZEUG_HASH_PATTERN).test(value!) || new RegExp(BCRYPT_HASH_PATTERN).test(value!);
    expect(isHash).toBe(kind === 'werkzeug-scrypt' || kind === 'werkzeug-pbkdf2' || kind === 'bcrypt');
  });
});

describe('hashPasswords', () => {
  it('keeps input order and hashes each value', async () => {
    const plains = ['a', 'b', 'c', 'd', 'e'];
    const hashes = await hashPasswords(plains);
    expect(hashes).toHaveLength(5);
    hashes.forEach((h, i) => expect(werkzeugScryptCheck(h, plains[i]!)).toBe(true));
    expect(await hashPasswords([])).toEqual([]);
  });
});

describe('hashPasswords across work items', () => {
  it('runs at most HASH_SLOTS scrypt hashes at once in the whole process (each holds 32 MiB), however many callers ask', async () => {
    let peak = 0;
    let sampling = true;
    const sample = (async () => {
      while (sampling) {
        peak = Math.max(peak, hashesInFlight());
        await new Promise((r) => setImmediate(r));
      }
    })();
    const values = ['alpha', 'bravo', 'charlie', 'delta'];
    const [a, b] = await Promise.all([hashPasswords(values), hashPasswords(values)]);
    sampling = false;
    await sample;
    expect(peak).toBe(HASH_SLOTS);
    expect(hashesInFlight()).toBe(0);
    for (const [i, v] of values.entries()) {
      expect(await checkPasswordWerkzeug(a[i]!, v)).toBe(true);
      expect(await checkPasswordWerkzeug(b[i]!, v)).toBe(true);
    }
  });
});

describe('createLimiter', () => {
  it('never runs more than its slots, hands a slot to the next waiter in order, and frees it on failure', async () => {
    const limiter = createLimiter(2);
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const job = (i: number) => limiter.run(async () => {
      started.push(i);
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 2));
      running--;
      if (i === 1) throw new Error('boom');
      return i;
    });
    const results = await Promise.allSettled([0, 1, 2, 3, 4].map(job));
    expect(peak).toBe(2);
    expect(started).toEqual([0, 1, 2, 3, 4]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled', 'fulfilled']);
    expect(limiter.inFlight()).toBe(0);
  });
});
