// Pure parts of the benchmark tool: percentiles, medians with spread, the
// latency histogram, gap and loss accounting. No timing is asserted here.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LogHistogram, longestGap, lossAndDuplicates, percentile, percentileSorted, spread } from '../../bench/lib/stats';

describe('percentiles', () => {
  test('nearest rank on 1..100', () => {
    const v = Array.from({ length: 100 }, (_, i) => 100 - i);
    assert.equal(percentile(v, 50), 50);
    assert.equal(percentile(v, 90), 90);
    assert.equal(percentile(v, 99), 99);
    assert.equal(percentile(v, 100), 100);
    assert.equal(percentile(v, 0), 1);
  });
  test('empty is NaN, single value is itself', () => {
    assert.ok(Number.isNaN(percentileSorted([], 50)));
    assert.equal(percentileSorted([7], 99), 7);
  });
});

describe('spread', () => {
  test('odd and even counts, ignoring non-finite values', () => {
    assert.deepEqual(spread([3, 1, 2]), { median: 2, min: 1, max: 3, n: 3 });
    assert.deepEqual(spread([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4, n: 4 });
    assert.deepEqual(spread([NaN, 5, Infinity]), { median: 5, min: 5, max: 5, n: 1 });
    assert.equal(spread([]).n, 0);
  });
});

describe('LogHistogram', () => {
  test('percentiles within 1% of the exact sample percentile, exact max', () => {
    const h = new LogHistogram();
    const values: number[] = [];
    let x = 1;
    for (let i = 0; i < 10_000; i++) {
      x = (x * 48271) % 2147483647;
      const v = (x / 2147483647) * 200; // 0..200 ms
      values.push(v);
      h.record(v);
    }
    for (const p of [50, 90, 99]) {
      const exact = percentile(values, p);
      const approx = h.percentile(p);
      assert.ok(approx >= exact * 0.999 && approx <= exact * 1.011, `p${p}: ${approx} vs ${exact}`);
    }
    assert.equal(h.percentile(100), Math.max(...values));
    assert.equal(h.count, 10_000);
  });
  test('merge over JSON equals recording everything in one', () => {
    const a = new LogHistogram();
    const b = new LogHistogram();
    const all = new LogHistogram();
    for (let i = 1; i <= 500; i++) {
      (i % 2 ? a : b).record(i / 10);
      all.record(i / 10);
    }
    const merged = LogHistogram.fromJSON(JSON.parse(JSON.stringify(a.toJSON())));
    merged.merge(JSON.parse(JSON.stringify(b.toJSON())));
    for (const p of [1, 50, 99, 100]) assert.equal(merged.percentile(p), all.percentile(p));
    assert.equal(merged.min, all.min);
  });
  test('values below the first bucket and an empty histogram', () => {
    const h = new LogHistogram();
    assert.ok(Number.isNaN(h.percentile(50)));
    h.record(0);
    h.record(-1);
    assert.equal(h.percentile(50), 0);
  });
});

describe('gap and loss accounting', () => {
  test('longest gap between consecutive timestamps, unordered input', () => {
    assert.deepEqual(longestGap([5, 1, 2, 3, 10, 0]), { gap: 5, from: 5 });
    assert.equal(longestGap([1]).gap, 0);
  });
  test('lost and duplicated per sequence number', () => {
    assert.deepEqual(lossAndDuplicates([1, 0, 2, 1, 0]), { lost: 2, duplicated: 1, delivered: 4 });
    assert.deepEqual(lossAndDuplicates([10, 9, 11], 10), { lost: 1, duplicated: 1, delivered: 30 });
  });
});
