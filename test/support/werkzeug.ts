import { pbkdf2Sync, scryptSync } from 'node:crypto';

/**
 * werkzeug's check_password_hash, written independently of lambdas/io/password.ts:
 * `method, salt, hashval = pwhash.split("$", 2)`; scrypt (dklen 64) or pbkdf2 (dklen = digest size).
 */
export function werkzeugCheck(pwhash: string, password: string): boolean {
  const first = pwhash.indexOf('$');
  const second = pwhash.indexOf('$', first + 1);
  if (first < 0 || second < 0) return false;
  const method = pwhash.slice(0, first);
  const salt = pwhash.slice(first + 1, second);
  const hashval = pwhash.slice(second + 1);
  const [name, ...args] = method.split(':');
  if (name === 'scrypt') {
    const [N, r, p] = args.map(Number) as [number, number, number];
    const key = scryptSync(Buffer.from(password, 'utf8'), Buffer.from(salt, 'utf8'), 64, { N, r, p, maxmem: 256 * N * r * p + (1 << 24) });
    return key.toString('hex') === hashval;
  }
  if (name === 'pbkdf2') {
    const digest = args[0]!;
    const iterations = Number(args[1]);
    const size = { sha1: 20, sha256: 32, sha512: 64 }[digest as 'sha1'];
    return pbkdf2Sync(Buffer.from(password, 'utf8'), Buffer.from(salt, 'utf8'), iterations, size, digest).toString('hex') === hashval;
  }
  return false;
}
