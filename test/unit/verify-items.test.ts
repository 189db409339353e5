import { describe, expect, it } from 'vitest';
import { assertCurrentItem, DEFAULT_VERIFY_SIZES, EMPTY_RANGE_RESULT, mergeRange, nextChunk, nextTargetChunk, parseItemRef, itemRef, planUnitRanges, resolveVerifySizes, type RangeResult } from '../../lambdas/core/verify-items';

const sizes = resolveVerifySizes({ bucketWidth: 10, itemKeys: 40, chunkKeys: 20, maxItemsPerUnit: 3 });

describe('verification items', () => {
  it.each([
    // keys 1..100 = buckets 0..10 (11 buckets); items of at most 4 buckets: 3 items of 4, 4, 3 buckets, open at both ends.
    [{ min: 1, max: 100 }, [{ lo: null, hi: 39 }, { lo: 39, hi: 79 }, { lo: 79, hi: null }]],
    // one bucket: one item, open-ended
    [{ min: 5, max: 7 }, [{ lo: null, hi: null }]],
    // 200 keys, at most 3 items per unit: they widen to 7 buckets each
    [{ min: 0, max: 199 }, [{ lo: null, hi: 69 }, { lo: 69, hi: 139 }, { lo: 139, hi: null }]],
    // no keys (an empty table, or one without a key): one item over everything
    [null, [{ lo: null, hi: null }]],
  ])('planUnitRanges(%j) → %j (item edges on bucket edges)', (span, ranges) => {
    expect(planUnitRanges(span, sizes)).toEqual(ranges);
  });

  it.each([
    // the first chunk of the first item starts at the start (rows without a key or below the span are read too)
    [{ lo: null, hi: 39 }, null, { min: 1, max: 100 }, { range: { lo: null, hi: 19 }, last: false }],
    [{ lo: null, hi: 39 }, 19, { min: 1, max: 100 }, { range: { lo: 19, hi: 39 }, last: true }],
    // the last item runs to the end, however far the keys go by then
    [{ lo: 79, hi: null }, null, { min: 1, max: 100 }, { range: { lo: 79, hi: 99 }, last: false }],
    [{ lo: 79, hi: null }, 99, { min: 1, max: 100 }, { range: { lo: 99, hi: null }, last: true }],
    // keys gone meanwhile: one chunk to the item's end
    [{ lo: 39, hi: 79 }, null, null, { range: { lo: 39, hi: 79 }, last: true }],
  ])('nextChunk(%j, cursor %j, span %j) → %j', (item, cursor, span, chunk) => {
    expect(nextChunk(item, cursor, span, sizes)).toEqual(chunk);
  });

  it('merges chunks in key order: counts and hashes add up (beyond 2^63), the first mismatch keeps its sample', () => {
    const a: RangeResult = {
      ...EMPTY_RANGE_RESULT,
      counts: { rows: 3, migrated: 2, rejected: 1, missing: 0, both: 0, redundant: 0, missingSample: [] },
      buckets: 1, columns: 4, fingerprint: { rows: 3, hash: '9223372036854775807', xmax: '900' },
    };
    const b: RangeResult = {
      ...EMPTY_RANGE_RESULT,
      counts: { rows: 2, migrated: 1, rejected: 0, missing: 1, both: 0, redundant: 0, missingSample: ['17'] },
      buckets: 1, columns: 4, mismatchCount: 1, mismatches: [{ bucket: 1, sourceRows: 1, targetRows: 0 }], sample: [17],
      fingerprint: { rows: 2, hash: '9223372036854775807', xmax: '880' },
    };
    const m = mergeRange(mergeRange(EMPTY_RANGE_RESULT, a), b);
    expect(m.counts).toEqual({ rows: 5, migrated: 3, rejected: 1, missing: 1, both: 0, redundant: 0, missingSample: ['17'] });
    expect(m).toMatchObject({ buckets: 2, mismatchCount: 1, sample: [17], fingerprint: { rows: 5, hash: '18446744073709551614', xmax: '880' } });
  });

  it.each([
    // the first chunk starts at the start and covers the chunk from the first id's bucket on
    [{ lo: null, hi: null }, null, 1, 100, { range: { lo: null, hi: 19 }, last: false }],
    // a gap (ids 20..999 missing): the next chunk runs over it to the next id's bucket, not chunk by empty chunk
    [{ lo: null, hi: null }, 19, 1000, 1100, { range: { lo: 19, hi: 1019 }, last: false }],
    // the last ids: open to the end
    [{ lo: null, hi: null }, 1019, 1090, 1100, { range: { lo: 1019, hi: null }, last: true }],
    // no id left in the item: one chunk to its end
    [{ lo: 39, hi: 79 }, 59, null, 100, { range: { lo: 59, hi: 79 }, last: true }],
    [{ lo: 39, hi: 79 }, null, 75, 100, { range: { lo: 39, hi: 79 }, last: true }],
  ])('nextTargetChunk(%j, cursor %j, next id %j, max %j) → %j', (item, cursor, next, max, chunk) => {
    expect(nextTargetChunk(item, cursor, next, max, sizes)).toEqual(chunk);
  });

  it('refuses items an earlier version planned over whole tables (a redrive after an upgrade plans Verify again)', () => {
    expect(() => assertCurrentItem({ kind: 'summaries' } as never, null)).toThrow(/earlier version.*PlanVerify/);
    expect(() => assertCurrentItem({ kind: 'orphans', table: 'scan' } as never, null)).toThrow(/earlier version/);
    // An orphans item over id ranges from before the references items checked every reference of its table: its chunks
    // would now check only the unindexed ones, and the indexed ones would go unchecked.
    expect(() => assertCurrentItem({ kind: 'orphans', table: 'bag', lo: null, hi: 99 } as never, null)).toThrow(/earlier version.*PlanVerify/);
    expect(() => assertCurrentItem({ kind: 'orphans', table: 'bag', byRow: true, lo: null, hi: 99 }, null)).not.toThrow();
    expect(() => assertCurrentItem({ kind: 'references', ref: 'bag', lo: null, hi: 99 }, null)).not.toThrow();
    expect(() => assertCurrentItem({ kind: 'users', lo: null, hi: null }, { kind: 'users', check: {} } as never)).toThrow(/earlier version/);
    expect(() => assertCurrentItem({ kind: 'summaries', table: 'bag', lo: null, hi: 99 }, { kind: 'summaries', summaries: [] })).not.toThrow();
    expect(() => assertCurrentItem({ kind: 'sequences' }, null)).not.toThrow();
  });

  it('names items as <round>/<number>', () => {
    expect(parseItemRef(itemRef('mk1abc', 12))).toEqual({ round: 'mk1abc', itemNo: 12 });
    expect(parseItemRef('12')).toBeNull();
  });
});

describe('default verification sizes', () => {
  it('plan at most 8 items per unit however big it is (the history of a 50 M-row run stays far from the limit), about 500,000 keys each below that', () => {
    expect(planUnitRanges({ min: 1, max: 29_700_000 }, DEFAULT_VERIFY_SIZES)).toHaveLength(8);
    expect(planUnitRanges({ min: 1, max: 3_000_000 }, DEFAULT_VERIFY_SIZES)).toHaveLength(7);
  });
});
