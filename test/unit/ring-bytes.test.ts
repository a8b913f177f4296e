/**
 * EventRing's byte bound (GATEWAY_STANDBY_BUFFER_BYTES): a burst of large
 * events is trimmed to the bound at once, never past the leader's cursor,
 * with positions and the count/age bounds unchanged.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { digestOf, ENTRY_OVERHEAD_BYTES, EventRing, MIN_CAPACITY, SLAB_BYTES } from '../../src/leader/ring';

/** What the ring's index arrays hold at their smallest. */
const INDEX_BYTES = MIN_CAPACITY * ENTRY_OVERHEAD_BYTES;

const big = (i: number, size: number): Buffer => Buffer.alloc(size, i % 256);

test('a burst of large events stays within the byte bound, trimmed at once, oldest first', () => {
  const ring = new EventRing(1_000_000, 1_000_000, 10 * 1024 * 1024);
  for (let i = 0; i < 200; i++) {
    ring.push(big(i, 900 * 1024), 0);
    ring.trim(0, ring.end);
    assert.ok(ring.byteSize <= 10 * 1024 * 1024, `after ${i + 1} events: ${ring.byteSize} bytes held`);
  }
  assert.equal(ring.end, 200);
  const held = ring.end - ring.start;
  assert.ok(held >= 9 && held <= 11, `${held} x 900 KiB held: between 7/8 of 10 MiB and 10 MiB`);
  assert.equal(ring.get(ring.start)?.raw?.[0], (200 - held) % 256);
  assert.equal(ring.get(ring.start - 1), undefined);
});

test('the byte bound never drops what the leader has not broadcast yet', () => {
  const entry = 512 * 1024;
  const ring = new EventRing(1_000_000, 1_000_000, 2 * entry + INDEX_BYTES);
  for (let i = 0; i < 10; i++) ring.push(big(i, entry), 0);
  assert.equal(ring.byteSize, 10 * entry + INDEX_BYTES, 'each large event in a buffer of its own, plus the index');
  ring.trim(0, 3);
  assert.equal(ring.start, 3);
  assert.equal(ring.byteSize, 7 * entry + INDEX_BYTES, 'the buffers of trimmed events are released');
  ring.trim(0, ring.end);
  // Over the bound it trims to 7/8 of it, so the next events do not each cost a trim.
  assert.equal(ring.end - ring.start, 1);
  assert.equal(ring.byteSize, entry + INDEX_BYTES);
});

test('a flood of tiny events is bounded by their overhead too', () => {
  const ring = new EventRing(1_000_000, 1_000_000, 1024 * 1024);
  for (let i = 0; i < 100_000; i++) {
    ring.push(Buffer.from(`{"i":${i}}`), 0);
    ring.trim(0, ring.end);
  }
  assert.ok(ring.byteSize <= 1024 * 1024);
  assert.ok(ring.end - ring.start < (1024 * 1024) / ENTRY_OVERHEAD_BYTES);
});

test('small events share slabs; a slab is released with its last event, and byteSize counts whole slabs', () => {
  // Event i arrives at time i; at time AGE + t everything that arrived before t has aged out.
  const AGE = 1_000_000;
  const ring = new EventRing(1_000_000, AGE);
  const msg = Buffer.alloc(1000, 7);
  const perSlab = Math.floor(SLAB_BYTES / msg.length);
  for (let i = 0; i < perSlab * 3; i++) ring.push(msg, i);
  assert.equal(ring.byteSize, 3 * SLAB_BYTES + INDEX_BYTES);
  const first = ring.raw(0)?.buffer;
  // Events of the first slab but its last one: the slab stays.
  ring.trim(AGE + perSlab - 1, ring.end);
  assert.equal(ring.start, perSlab - 1);
  assert.equal(ring.byteSize, 3 * SLAB_BYTES + INDEX_BYTES);
  ring.trim(AGE + perSlab, ring.end);
  assert.equal(ring.start, perSlab);
  // Released; kept as a spare the next slab reuses (still counted).
  assert.equal(ring.byteSize, 3 * SLAB_BYTES + INDEX_BYTES);
  assert.deepEqual(ring.get(perSlab)?.raw, msg);
  assert.equal(ring.get(perSlab)?.at, perSlab);
  // A second one released: no more spares than slabs in use (1), so it is given back,
  // its memory at once (the ArrayBuffer detached), not at the next full GC.
  const second = ring.raw(perSlab)?.buffer;
  assert.equal(second?.byteLength, SLAB_BYTES);
  ring.trim(AGE + 2 * perSlab, ring.end);
  assert.equal(ring.start, 2 * perSlab);
  assert.equal(ring.byteSize, 2 * SLAB_BYTES + INDEX_BYTES);
  assert.equal(second?.byteLength, 0, 'detached: its memory given back');
  assert.equal(first?.byteLength, SLAB_BYTES, 'the spare is kept');
  // The next slab is the spare: no new memory, and the spare's bytes are the new event's.
  const fresh = Buffer.alloc(1000, 9);
  const at = ring.push(fresh, 3 * perSlab);
  assert.equal(ring.raw(at)?.buffer, first, 'the first slab, reused');
  assert.deepEqual(ring.raw(at), fresh);
  assert.deepEqual(ring.raw(at - 1), msg);
  assert.equal(ring.byteSize, 2 * SLAB_BYTES + INDEX_BYTES);
  // Everything aged out: no slab, no spare.
  ring.trim(AGE * 10, ring.end);
  assert.equal(ring.end - ring.start, 0);
  assert.equal(ring.byteSize, INDEX_BYTES);
});

test('a count that swings between a backlog and a handful does not re-allocate the index between compacts', () => {
  const ring = new EventRing(1_000_000, 1_000_000);
  const msg = Buffer.alloc(100, 1);
  let indexBytes = 0;
  for (let round = 0; round < 20; round++) {
    for (let i = 0; i < 5000; i++) ring.push(msg, 0);
    ring.trim(0, ring.end, ring.end - 8);
    if (round === 0) indexBytes = ring.byteSize - 2 * SLAB_BYTES;
    // 8 events and at most one slab in use plus a spare: what is left is the index, still sized for the backlog.
    assert.equal(ring.end - ring.start, 8);
    assert.ok(ring.byteSize - 2 * SLAB_BYTES === indexBytes, `round ${round}: index ${ring.byteSize - 2 * SLAB_BYTES} B`);
  }
  assert.ok(indexBytes >= 8192 * ENTRY_OVERHEAD_BYTES, 'sized for 5,000');
  ring.compact();
  ring.compact();
  assert.ok(ring.byteSize <= 2 * SLAB_BYTES + INDEX_BYTES, 'compacted once the swings stopped');
});

test('a leader-like ring, trimmed up to its confirmed position while it fills, reuses its slabs', () => {
  // 300 B events, 512 per confirmed batch (2-3 slabs released at once), 4 batches not confirmed yet.
  const ring = new EventRing(1_000_000, 1_000_000, 16 * 1024 * 1024);
  const msg = Buffer.alloc(300, 5);
  const buffers = new Set<ArrayBufferLike>();
  for (let i = 0; i < 100_000; i++) {
    const at = ring.push(msg, 0);
    buffers.add((ring.raw(at) as Buffer).buffer);
    const confirmed = Math.floor(i / 512) * 512 - 4 * 512;
    ring.trim(0, ring.end, confirmed - 8);
  }
  // ~2,050 events in use (~10 slabs) at any time, and up to as many spares: never 460 slabs (30 MB) for 100,000.
  assert.ok(buffers.size <= 32, `${buffers.size} slabs allocated for 100,000 events`);
  assert.ok(ring.byteSize <= 24 * SLAB_BYTES + 4 * INDEX_BYTES, `${ring.byteSize} bytes held`);
});

test('over the byte bound the spare slab is given back first, before any event', () => {
  const msg = Buffer.alloc(1000, 3);
  const perSlab = Math.floor(SLAB_BYTES / msg.length);
  const bound = 3 * SLAB_BYTES + INDEX_BYTES;
  const ring = new EventRing(1_000_000, 1_000_000, bound);
  for (let i = 0; i < perSlab * 3; i++) ring.push(msg, 0);
  ring.trim(0, ring.end, perSlab);
  assert.equal(ring.byteSize, bound, 'two slabs in use and the spare: at the bound, not over');
  // A large event gets a buffer of its own (never the spare): over the bound by it.
  const large = SLAB_BYTES / 2;
  ring.push(Buffer.alloc(large, 1), 0);
  assert.equal(ring.byteSize, bound + large);
  const start = ring.start;
  ring.trim(0, ring.end);
  assert.equal(ring.start, start, 'no event dropped');
  assert.equal(ring.byteSize, 2 * SLAB_BYTES + large + INDEX_BYTES, 'the spare given back');
});

test('dropBefore drops every entry before it, never at or after keepFrom; digests of what stays are unchanged', () => {
  const ring = new EventRing(1_000_000, 1_000_000);
  const ev = (i: number): Buffer => Buffer.from(`{"i":${i}}`);
  for (let i = 0; i < 100; i++) ring.push(ev(i), 0);
  const tail = ring.tail(59, 8);
  ring.trim(0, 40, 52);
  assert.equal(ring.start, 40, 'keepFrom wins');
  ring.trim(0, ring.end, 52);
  assert.equal(ring.start, 52);
  assert.equal(ring.raw(52)?.toString(), '{"i":52}');
  assert.deepEqual(ring.tail(59, 8), tail);
  assert.equal(ring.align(tail), 60);
});

test('the index grows past its initial capacity and shrinks back on compact, entries intact', () => {
  const AGE = 1_000_000;
  const ring = new EventRing(1_000_000, AGE);
  const ev = (i: number): Buffer => Buffer.from(`{"i":${i}}`);
  for (let i = 0; i < 5000; i++) ring.push(ev(i), i);
  assert.ok(ring.byteSize >= 5000 * ENTRY_OVERHEAD_BYTES);
  assert.equal(ring.get(4321)?.raw?.toString(), '{"i":4321}');
  ring.trim(AGE + 4990, ring.end);
  assert.equal(ring.start, 4990);
  assert.equal(ring.get(4995)?.raw?.toString(), '{"i":4995}');
  const grown = ring.byteSize;
  assert.ok(grown > SLAB_BYTES + INDEX_BYTES, 'trim alone keeps the index');
  // The first compact still sees the 5,000 held since the last one; the second shrinks.
  ring.compact();
  assert.equal(ring.byteSize, grown);
  ring.compact();
  assert.equal(ring.byteSize, SLAB_BYTES + INDEX_BYTES, 'one slab and the smallest index');
  for (let i = 5000; i < 6000; i++) ring.push(ev(i), i);
  assert.equal(ring.get(4990)?.raw?.toString(), '{"i":4990}');
  assert.equal(ring.get(5999)?.raw?.toString(), '{"i":5999}');
});

test('small events: the byte bound is inert, the count bound still applies', () => {
  const ring = new EventRing(100, 1_000_000, 64 * 1024 * 1024);
  for (let i = 0; i < 5000; i++) {
    ring.push(Buffer.from(`{"i":${i}}`), 0);
    ring.trim(0, ring.end);
  }
  assert.ok(ring.end - ring.start <= 100 * 1.34 + 1, `${ring.end - ring.start} entries`);
});

test('messages over the size bound are not held: their place, length and digest only', () => {
  const limit = 4096;
  const ring = new EventRing(1_000_000, 1_000_000, 1024 * 1024, limit);
  const small = Buffer.from('{"event":"e"}');
  for (let i = 0; i < 1000; i++) ring.push(i % 2 === 0 ? big(i, limit + 1 + i) : small, 0);
  ring.trim(0, ring.end);
  assert.equal(ring.end - ring.start, 1000, 'nothing trimmed: 500 large messages cost the index only');
  assert.equal(ring.byteSize, SLAB_BYTES + INDEX_BYTES, 'the small ones in one slab, and the index');
  const large = ring.get(10);
  assert.equal(large?.raw, null);
  assert.equal(large?.size, limit + 11);
  assert.equal(large?.digest, digestOf(big(10, limit + 11)));
  assert.equal(ring.raw(10), undefined);
  assert.equal(ring.sizeOf(10), limit + 11);
  assert.equal(ring.raw(11)?.toString(), small.toString());
  // A message of exactly the bound is held.
  ring.push(big(1, limit), 0);
  assert.equal(ring.raw(1000)?.length, limit);
  // Alignment sees the large ones like any other.
  assert.equal(ring.align(ring.tail(10, 3)), 11);
});
