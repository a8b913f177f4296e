import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  ClientLedger,
  expectedFor,
  jitterDelay,
  p95BySecond,
  reconnectsByPhase,
  summarizeDelivery,
  summarizeReconnects,
} from '../../bench/lib/recovery-accounting';

test('ledger: duplicates are counted once each and do not add to unique', () => {
  const l = new ClientLedger();
  for (const s of [0, 3, 3, 6, 3]) l.record(s);
  assert.equal(l.unique, 3);
  assert.equal(l.duplicates, 2);
  assert.equal(l.outOfOrder, 0);
});

test('ledger: an arrival below the highest seen is out of order, the high-water mark stays', () => {
  const l = new ClientLedger();
  for (const s of [0, 9, 3, 6, 12]) l.record(s);
  assert.equal(l.outOfOrder, 2);
  assert.equal(l.unique, 5);
});

test('ledger: non-numeric or negative sequence numbers (warm-up markers) are ignored', () => {
  const l = new ClientLedger();
  l.record(NaN);
  l.record(-1);
  l.record(1.5);
  assert.equal(l.unique, 0);
  assert.equal(l.uniqueBelow(100), 0);
});

test('expectedFor: events cycle over the clients', () => {
  // 10 events over 4 clients: 0,4,8 | 1,5,9 | 2,6 | 3,7
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => expectedFor(i, 4, 10)),
    [3, 3, 2, 2],
  );
  assert.equal(expectedFor(5, 4, 10), 0);
  assert.equal(expectedFor(3, 4, 3), 0);
  assert.equal(expectedFor(0, 0, 10), 0);
});

test('summarizeDelivery: ratios per client and overall, lost, misrouted, strays beyond `sent` ignored', () => {
  const a = new ClientLedger();
  const b = new ClientLedger();
  for (const s of [0, 2, 4, 6, 8]) a.record(s); // all 5 of client 0
  for (const s of [1, 5, 1]) b.record(s); // 2 of 5 for client 1, one duplicate
  b.record(11); // published after the window: not counted
  const sum = summarizeDelivery([a.toJSON(), b.toJSON()], 10);
  assert.equal(sum.expected, 10);
  assert.equal(sum.unique, 7);
  assert.equal(sum.lost, 3);
  assert.equal(sum.overallRatio, 0.7);
  assert.equal(sum.minClientRatio, 0.4);
  assert.equal(sum.medianClientRatio, 0.7);
  assert.equal(sum.clientsComplete, 1);
  assert.equal(sum.duplicates, 1);
  assert.equal(sum.misrouted, 0);
  const c = new ClientLedger();
  c.record(1); // client 0 must never see an odd sequence number with 2 clients
  assert.equal(summarizeDelivery([c.toJSON(), new ClientLedger().toJSON()], 10).misrouted, 1);
});

test('jitterDelay: uniform within mean ± spread, clamped', () => {
  assert.equal(jitterDelay(15_000, 0.5, 0), 7500);
  assert.equal(jitterDelay(15_000, 0.5, 0.5), 15_000);
  assert.ok(Math.abs(jitterDelay(15_000, 0.5, 0.999999) - 22_500) < 1);
  assert.equal(jitterDelay(1000, 2, 0), 0);
});

test('summarizeReconnects: nearest-rank p50/p95 and max; NaN when there were none', () => {
  const ms = Array.from({ length: 100 }, (_, i) => 100 - i); // 1..100, unsorted
  assert.deepEqual(summarizeReconnects(ms), { n: 100, p50: 50, p95: 95, max: 100 });
  const none = summarizeReconnects([]);
  assert.equal(none.n, 0);
  assert.ok(Number.isNaN(none.p95) && Number.isNaN(none.max));
});

test('reconnectsByPhase: each reconnection goes to the last restart begun at or before its disconnect', () => {
  // restarts at t=1000 and t=5000; disconnects at 500 (stray), 1000, 4999, 5000, 9000
  const at = [500, 1000, 4999, 5000, 9000];
  const ms = [7, 10, 20, 30, 40];
  const r = reconnectsByPhase(at, ms, [1000, 5000]);
  assert.deepEqual(
    r.phases.map((p) => [p.n, p.max]),
    [
      [2, 20],
      [2, 40],
    ],
  );
  assert.deepEqual([r.before.n, r.before.max], [1, 7]);
});

test('p95BySecond: buckets by whole seconds after the start; outside and non-finite values are left out', () => {
  const start = 10_000;
  const at = [10_000, 10_999, 11_000, 12_500, 9_999, 20_000, 11_500];
  const ms = [1, 2, 3, 4, 5, 6, NaN];
  const r = p95BySecond(at, ms, start, 3);
  assert.equal(r.length, 3);
  assert.deepEqual(r, [2, 3, 4]);
  assert.ok(Number.isNaN(p95BySecond([], [], start, 1)[0] as number));
});
