import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { Coalescer } from '../../lambdas/io/backup';

/** The COPY stream is gathered into large chunks before hashing and gzip, bytes unchanged. */
describe('Coalescer', () => {
  it('passes the same bytes in chunks of at least its size (the last one smaller)', async () => {
    const input = Array.from({ length: 500 }, (_, i) => Buffer.from(`${i}\t${'x'.repeat(i % 97)}\n`));
    const sizes: number[] = [];
    const out: Buffer[] = [];
    await pipeline(
      Readable.from(input),
      new Coalescer(4096),
      new Writable({
        write(chunk: Buffer, _enc, cb) {
          sizes.push(chunk.length);
          out.push(chunk);
          cb();
        },
      }),
    );
    expect(Buffer.concat(out).equals(Buffer.concat(input))).toBe(true);
    expect(sizes.length).toBeGreaterThan(1);
    expect(sizes.slice(0, -1).every((n) => n >= 4096)).toBe(true);
    expect(sizes.every((n) => n < 4096 + 200)).toBe(true);
  });
});
