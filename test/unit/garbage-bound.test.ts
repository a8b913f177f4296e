/**
 * The events leader's garbage bound (src/shared/garbage-bound.ts,
 * GATEWAY_LEADER_GARBAGE_BYTES): when it collects (growth over the level of
 * the last full GC past the bound, at most once per interval, never in a
 * loop on live growth), and that its collection frees promoted garbage of a
 * real V8 heap. The leader calls it once per broadcast batch
 * (test/integration/leader-consumer.test.ts, "garbage bound").
 */
import assert from 'node:assert/strict';
import { getHeapSpaceStatistics } from 'node:v8';
import { describe, test } from 'node:test';
import { createGarbageBound, type GarbageBoundOptions } from '../../src/shared/garbage-bound';
import { promoteGarbage } from '../harness/promote';

const MB = 1024 * 1024;

/** A fake old space: `used` is what the bound reads; a collection brings it down to `live`. */
function fake(o: Partial<GarbageBoundOptions> = {}) {
  const heap = { used: 10 * MB, live: 10 * MB, now: 0 };
  const runs: { before: number; after: number }[] = [];
  const bound = createGarbageBound({
    boundBytes: 8 * MB,
    minIntervalMs: 1000,
    oldSpaceUsed: () => heap.used,
    collect: () => {
      heap.used = heap.live;
    },
    now: () => heap.now,
    onCollected: (_pause, before, after) => runs.push({ before, after }),
    ...o,
  });
  return { heap, runs, bound };
}

describe('garbage bound', () => {
  test('collects once the old space grew past the bound over its starting level, not at it', () => {
    const { heap, runs, bound } = fake();
    heap.used = 18 * MB;
    bound.check();
    assert.equal(runs.length, 0, 'exactly the bound: no collection');
    heap.used = 18 * MB + 1;
    bound.check();
    assert.deepEqual(runs, [{ before: 18 * MB + 1, after: 10 * MB }]);
  });

  test('at most one collection per interval; the bound can be exceeded meanwhile', () => {
    const { heap, runs, bound } = fake();
    heap.used = 30 * MB;
    bound.check();
    assert.equal(runs.length, 1);
    heap.now = 999;
    heap.used = 30 * MB;
    bound.check();
    assert.equal(runs.length, 1, 'within the interval');
    heap.now = 1000;
    bound.check();
    assert.equal(runs.length, 2, 'once the interval is over');
  });

  test('live growth moves the level up: one collection per bound of growth, no loop', () => {
    const { heap, runs, bound } = fake();
    // What survives the collection is live: the next one needs the bound again on top of it.
    heap.live = 20 * MB;
    heap.used = 20 * MB;
    bound.check();
    assert.equal(runs.length, 1);
    for (let t = 1; t <= 10; t++) {
      heap.now = t * 1000;
      bound.check();
    }
    assert.equal(runs.length, 1, 'the live 20 MB alone never triggers again');
    heap.now = 20_000;
    heap.used = 28 * MB + 1;
    bound.check();
    assert.equal(runs.length, 2);
  });

  test("a full GC of V8's own lowers the level the growth is measured from", () => {
    const { heap, runs, bound } = fake();
    heap.used = 4 * MB; // V8 collected: the level is now 4 MB
    bound.check();
    heap.used = 12 * MB + 1;
    bound.check();
    assert.equal(runs.length, 1, '8 MB over the lower level');
  });

  test('0 = off', () => {
    const { heap, runs, bound } = fake({ boundBytes: 0 });
    heap.used = 1000 * MB;
    bound.check();
    assert.equal(runs.length, 0);
  });

  test("V8's own old space: promoted garbage past the bound is collected at once", () => {
    const oldUsed = (): number => getHeapSpaceStatistics().find((s) => s.space_name === 'old_space')?.space_used_size ?? 0;
    const runs: { before: number; after: number }[] = [];
    const bound = createGarbageBound({
      boundBytes: 4 * MB,
      minIntervalMs: 0,
      onCollected: (_p, before, after) => runs.push({ before, after }),
    });
    // ~16 MB of small objects promoted to the old space, then dropped.
    assert.equal(promoteGarbage(200_000), 200_000);
    const promoted = oldUsed();
    bound.check();
    assert.equal(runs.length, 1, `old space ${(promoted / MB).toFixed(1)} MB before the check`);
    const r = runs[0] as { before: number; after: number };
    assert.ok(r.before - r.after > 8 * MB, `freed ${((r.before - r.after) / MB).toFixed(1)} MB`);
  });
});
