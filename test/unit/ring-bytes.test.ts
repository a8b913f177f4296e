/**
 * EventRing's byte bound (GATEWAY_STANDBY_BUFFER_BYTES): a burst of large
 * events is trimmed to the bound at once, never past the leader's cursor,
 * with positions and the count/age bounds unchanged.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ENTRY_OVERHEAD_BYTES, EventRing } from '../../src/leader/ring';

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
  assert.equal(ring.get(ring.start)?.raw[0], (200 - held) % 256);
  assert.equal(ring.get(ring.start - 1), undefined);
});

test('the byte bound never drops what the leader has not broadcast yet', () => {
  const entry = 512 * 1024 + ENTRY_OVERHEAD_BYTES;
  const ring = new EventRing(1_000_000, 1_000_000, 2 * entry);
  for (let i = 0; i < 10; i++) ring.push(big(i, 512 * 1024), 0);
  ring.trim(0, 3);
  assert.equal(ring.start, 3);
  assert.equal(ring.byteSize, 7 * entry);
  ring.trim(0, ring.end);
  // Over the bound it trims to 7/8 of it, so the next events do not each cost a splice.
  assert.equal(ring.end - ring.start, 1);
  assert.equal(ring.byteSize, entry);
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

test('small events: the byte bound is inert, the count bound still applies', () => {
  const ring = new EventRing(100, 1_000_000, 64 * 1024 * 1024);
  for (let i = 0; i < 5000; i++) {
    ring.push(Buffer.from(`{"i":${i}}`), 0);
    ring.trim(0, ring.end);
  }
  assert.ok(ring.end - ring.start <= 100 * 1.34 + 1, `${ring.end - ring.start} entries`);
});
