import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReplayGate } from '../../src/recovery/replay-gate';

test('a held socket gets its live packets back in arrival order; others are not held', () => {
  const gate = new ReplayGate();
  assert.equal(gate.active, false);
  gate.hold('a');
  assert.equal(gate.active, true);
  assert.equal(gate.offer('b', 'x', null), false, 'a socket nobody holds is written at once');
  assert.equal(gate.offer('a', 'p1', '1-0'), true);
  assert.equal(gate.offer('a', 'p2', null), true);
  assert.deepEqual(gate.release('a'), {
    held: [
      { packet: 'p1', offset: '1-0' },
      { packet: 'p2', offset: null },
    ],
    dropped: 0,
  });
  assert.equal(gate.active, false);
  assert.equal(gate.offer('a', 'p3', null), false, 'released: no longer held');
});

test('a replay that never ends cannot hold unbounded memory: the excess is dropped and reported', () => {
  const gate = new ReplayGate();
  gate.hold('a');
  for (let i = 0; i < 10_005; i++) gate.offer('a', `p${i}`, null);
  const { held, dropped } = gate.release('a');
  assert.equal(held.length, 10_000);
  assert.equal(dropped, 5);
  assert.deepEqual(gate.release('a'), { held: [], dropped: 0 }, 'nothing left behind');
});
