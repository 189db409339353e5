import { randomBytes, scryptSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { scryptKey, wasmScryptActive } from '../../lambdas/io/scrypt';
import { ROMIX_WASM_BASE64 } from '../../lambdas/io/scrypt-romix-wasm';
import { assembleRomix, ROMIX_MODULE, renderRomixModule } from '../support/romix-wasm';

const openssl = (password: Buffer | string, salt: Buffer | string, N: number, r: number, p: number, keyLength: number) =>
  scryptSync(password, salt, keyLength, { N, r, p, maxmem: 256 * N * r * p + (16 << 20) });

describe('scrypt with the WebAssembly ROMix (io/scrypt.ts)', () => {
  it('embeds exactly what scrypt-romix.wat assembles to', async () => {
    const bytes = await assembleRomix();
    expect(Buffer.from(ROMIX_WASM_BASE64, 'base64').equals(bytes)).toBe(true);
    expect(readFileSync(ROMIX_MODULE, 'utf8')).toBe(renderRomixModule(bytes));
  });

  // RFC 7914 section 12.
  it.each([
    ['', '', 16, 1, 1, '77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906'],
    ['password', 'NaCl', 1024, 8, 16, 'fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b3731622eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640'],
    ['pleaseletmein', 'SodiumChloride', 16384, 8, 1, '7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887'],
  ])('RFC 7914 vector %j / %j (N %i, r %i, p %i)', async (password, salt, N, r, p, hex) => {
    const key = await scryptKey(Buffer.from(password), Buffer.from(salt), { N, r, p, keyLength: 64 });
    expect(key.toString('hex')).toBe(hex);
    expect(wasmScryptActive()).toBe(true);
  });

  it('equals OpenSSL for werkzeug\'s cost and random passwords and salts, several at once', async () => {
    const cases = Array.from({ length: 6 }, (_, i) => ({ password: i === 0 ? Buffer.from('Zoë Ülker 北京 🔑') : randomBytes(1 + i * 7), salt: Buffer.from(`salt${i}`.padEnd(16, 'x')) }));
    const keys = await Promise.all(cases.map((c) => scryptKey(c.password, c.salt, { N: 32768, r: 8, p: 1, keyLength: 64 })));
    keys.forEach((key, i) => expect(key.equals(openssl(cases[i]!.password, cases[i]!.salt, 32768, 8, 1, 64))).toBe(true));
    expect(wasmScryptActive()).toBe(true);
  });

  it.each([
    [2, 1, 1, 32],
    [256, 3, 2, 100],
    [4096, 5, 3, 16],
    [512, 16, 1, 64],
  ])('equals OpenSSL for N %i, r %i, p %i, %i-byte keys', async (N, r, p, keyLength) => {
    const password = randomBytes(24);
    const salt = randomBytes(16);
    expect((await scryptKey(password, salt, { N, r, p, keyLength })).equals(openssl(password, salt, N, r, p, keyLength))).toBe(true);
    expect(wasmScryptActive()).toBe(true);
  });
});
