import { describe, expect, it } from 'vitest';
import { CopyDataDecoder } from '../../lambdas/io/copy-out';

/** A protocol message: type byte, int32 length (itself included), body. */
function message(type: string, body: Buffer): Buffer {
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

// Rows of 0 to 40 bytes, some holding the bytes of the message types the decoder looks for.
const rows = Array.from({ length: 60 }, (_, i) => Buffer.from(`${'dEc'.repeat(i % 7)}${String(i).repeat(i % 5)}${i % 3 ? '\n' : ''}`, 'latin1'));
const copyOutResponse = message('H', Buffer.from([0, 0, 2, 0, 0, 0, 0]));
const notice = message('N', Buffer.from('SNOTICE\0Mhello\0\0', 'latin1'));
const after = Buffer.concat([message('C', Buffer.from('COPY 60\0', 'latin1')), message('Z', Buffer.from('I', 'latin1'))]);
const stream = Buffer.concat([copyOutResponse, ...rows.slice(0, 30).map((r) => message('d', r)), notice, ...rows.slice(30).map((r) => message('d', r)), message('c', Buffer.alloc(0)), after]);
const payload = Buffer.concat(rows);

/** Decodes `bytes` cut at `cuts` (each chunk a copy: the decoder writes into its chunks). */
function decodeIn(bytes: Buffer, cuts: number[]) {
  const decoder = new CopyDataDecoder();
  const data: Buffer[] = [];
  const bounds = [0, ...cuts, bytes.length];
  for (let i = 0; i + 1 < bounds.length; i += 1) {
    const out = decoder.decode(Buffer.from(bytes.subarray(bounds[i], bounds[i + 1])));
    if (out.data) data.push(Buffer.from(out.data));
    if (out.end !== 'more') return { data: Buffer.concat(data), end: out.end, rest: Buffer.concat([out.rest ?? Buffer.alloc(0), bytes.subarray(bounds[i + 1])]) };
  }
  return { data: Buffer.concat(data), end: 'more' as const, rest: Buffer.alloc(0) };
}

describe('the COPY-out decoder', () => {
  it('returns the rows byte for byte and hands back what follows CopyDone, wherever one cut falls', () => {
    for (let cut = 1; cut < stream.length; cut += 1) {
      const out = decodeIn(stream, [cut]);
      expect(out.end, `cut at ${cut}`).toBe('done');
      expect(out.data.equals(payload), `cut at ${cut}`).toBe(true);
      expect(out.rest.equals(after), `cut at ${cut}`).toBe(true);
    }
  });

  it('does so in chunks of every size from one byte up (headers and bodies split any way)', () => {
    for (let size = 1; size <= 12; size += 1) {
      const cuts = Array.from({ length: Math.floor((stream.length - 1) / size) }, (_, i) => (i + 1) * size);
      const out = decodeIn(stream, cuts);
      expect(out.end).toBe('done');
      expect(out.data.equals(payload), `chunks of ${size}`).toBe(true);
      expect(out.rest.equals(after), `chunks of ${size}`).toBe(true);
    }
  });

  it('stops at an ErrorResponse and hands it back whole, for the connection to raise', () => {
    const error = Buffer.concat([message('E', Buffer.from('SERROR\0C22012\0Mdivision by zero\0\0', 'latin1')), message('Z', Buffer.from('I', 'latin1'))]);
    const failing = Buffer.concat([copyOutResponse, ...rows.slice(0, 10).map((r) => message('d', r)), error]);
    for (const cut of [copyOutResponse.length + 3, failing.length - error.length, failing.length - error.length + 2]) {
      const out = decodeIn(failing, [cut]);
      expect(out.end).toBe('error');
      expect(out.rest.equals(error)).toBe(true);
    }
  });
});
