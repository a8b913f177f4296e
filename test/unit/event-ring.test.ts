/**
 * EventRing: the standby buffer a new leader aligns on (README "Architecture", the events
 * consumer): absolute positions, trimming bounds, digests, alignment.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventRing, digestOf } from '../../src/leader/ring';

const ev = (i: number): Buffer => Buffer.from(`{"event":"e","message":{"i":${i}},"namespace":"s","room":"r"}`);

function filled(n: number, maxEntries = 1_000_000, maxAgeMs = 1_000_000, at = 0): EventRing {
  const ring = new EventRing(maxEntries, maxAgeMs);
  for (let i = 0; i < n; i++) ring.push(ev(i), at);
  return ring;
}

describe('EventRing', () => {
  test('positions are absolute and survive trimming', () => {
    const ring = filled(10);
    assert.equal(ring.start, 0);
    assert.equal(ring.end, 10);
    assert.equal(ring.push(ev(10), 0), 10);
    assert.equal(ring.get(3)?.raw?.toString(), ev(3).toString());
    assert.equal(ring.get(3)?.digest, digestOf(ev(3)));
    assert.equal(ring.get(11), undefined);
    assert.equal(ring.get(-1), undefined);
  });

  test('tail: consecutive, overlapping, jumping and trimmed tails give each entry its own digest', () => {
    const ring = new EventRing(1_000_000, 1_000_000);
    const expect = (last: number, k: number): string[] => {
      const out: string[] = [];
      for (let p = Math.max(ring.start, last - k + 1); p <= last; p++) out.push(digestOf(ev(p)));
      return out;
    };
    for (let i = 0; i < 40; i++) {
      ring.push(ev(i), 0);
      // One new entry per call (batches of 1), then of 3, then a jump back and forth.
      if (i < 20 || i % 3 === 0) assert.deepEqual(ring.tail(i, 8), expect(i, 8), `tail(${i}, 8)`);
    }
    assert.deepEqual(ring.tail(10, 8), expect(10, 8));
    assert.deepEqual(ring.tail(39, 4), expect(39, 4));
    ring.trim(0, ring.end, 36);
    assert.equal(ring.start, 36);
    assert.deepEqual(ring.tail(39, 8), expect(39, 8));
    for (let i = 40; i < 45; i++) ring.push(ev(i), 0);
    assert.deepEqual(ring.tail(44, 8), expect(44, 8));
  });

  test('trim: the count bound drops the oldest entries', () => {
    const ring = filled(10, 4);
    ring.trim(0, ring.end);
    assert.equal(ring.end - ring.start, 4);
    assert.equal(ring.start, 6);
    assert.equal(ring.get(6)?.raw?.toString(), ev(6).toString());
    assert.equal(ring.get(5), undefined);
  });

  test('trim: the age bound drops entries older than maxAgeMs', () => {
    const ring = new EventRing(1000, 100);
    for (let i = 0; i < 8; i++) ring.push(ev(i), i < 6 ? 0 : 150);
    ring.trim(150, ring.end);
    assert.equal(ring.start, 6);
    assert.equal(ring.end, 8);
  });

  test('trim never drops at or after keepFrom (events the leader has not broadcast)', () => {
    const ring = filled(10, 2, 0, 0);
    ring.trim(1000, 3);
    assert.equal(ring.start, 3);
    assert.equal(ring.end, 10);
    ring.trim(1000, 3);
    assert.equal(ring.start, 3);
  });

  test('tail: the digests of the k entries ending at a position, oldest first', () => {
    const ring = filled(10);
    assert.deepEqual(
      ring.tail(5, 3),
      [3, 4, 5].map((i) => digestOf(ev(i))),
    );
    assert.deepEqual(
      ring.tail(1, 8),
      [0, 1].map((i) => digestOf(ev(i))),
    );
  });

  test('align: the position after the last broadcast events; the newest occurrence wins', () => {
    const ring = filled(10);
    assert.equal(ring.align(ring.tail(5, 3)), 6);
    assert.equal(ring.align(ring.tail(9, 4)), 10);
    // The same three events published again later: the later copy is where the leader stopped.
    for (const i of [3, 4, 5]) ring.push(ev(i), 0);
    assert.equal(ring.align([3, 4, 5].map((i) => digestOf(ev(i)))), 13);
  });

  test('align: unknown digests, or none, give null', () => {
    const ring = filled(10);
    assert.equal(ring.align([]), null);
    assert.equal(ring.align([digestOf(Buffer.from('never published'))]), null);
    assert.equal(ring.align([digestOf(ev(4)), digestOf(ev(3))]), null, 'order matters');
  });

  test('align: a partial match at the very start of the ring counts when it covers at least 2 events', () => {
    const ring = filled(10, 7);
    ring.trim(0, ring.end); // keeps 3..9
    assert.equal(ring.start, 3);
    const digests = [1, 2, 3, 4].map((i) => digestOf(ev(i)));
    assert.equal(ring.align(digests), 5, 'events 3 and 4 are in the ring, 1 and 2 were trimmed');
    assert.equal(ring.align([1, 2, 3].map((i) => digestOf(ev(i)))), null, 'only one event of the tail is in the ring');
  });

  test('digests are computed when first asked for and survive index resizes and trims', () => {
    const ring = new EventRing(20, 1_000_000);
    for (let i = 0; i < 10; i++) ring.push(ev(i), 0);
    // Some digests computed before the index grows (1024 -> 4096 slots), most after.
    assert.deepEqual(
      ring.tail(5, 3),
      [3, 4, 5].map((i) => digestOf(ev(i))),
    );
    for (let i = 10; i < 3000; i++) ring.push(ev(i), 0);
    ring.trim(0, ring.end); // keeps the last 20 and shrinks the index again
    assert.equal(ring.start, 2980);
    for (let i = 3000; i < 3010; i++) ring.push(ev(i), 0);
    for (let p = ring.start; p < ring.end; p++) assert.equal(ring.get(p)?.digest, digestOf(ev(p)), `digest of ${p}`);
    assert.equal(ring.align([2995, 2996, 2997].map((i) => digestOf(ev(i)))), 2998);
    assert.equal(ring.raw(3005)?.toString(), ev(3005).toString());
    assert.equal(ring.receivedAt(3005), 0);
    assert.equal(ring.raw(2979), undefined);
  });

  test('an index that wraps around grows with its entries in order', () => {
    const ring = new EventRing(1_000_000, 100);
    for (let i = 0; i < 1000; i++) ring.push(ev(i), 0);
    assert.equal(ring.tail(999, 1)[0], digestOf(ev(999)));
    ring.trim(101, 500); // too old, but kept from 500: the oldest slot is now in the middle
    assert.equal(ring.start, 500);
    for (let i = 1000; i < 1700; i++) ring.push(ev(i), 101); // wraps past slot 1023, then grows
    for (let p = 500; p < 1700; p++) {
      assert.equal(ring.raw(p)?.toString(), ev(p).toString(), `entry ${p}`);
      assert.equal(ring.get(p)?.digest, digestOf(ev(p)), `digest of ${p}`);
    }
  });
});
