/**
 * Respawn pacing of a crash-looping worker slot: exponential backoff from
 * 100 ms, capped by GATEWAY_MAX_BACKOFF_MS, and a reset once a worker lived
 * long enough to count as healthy.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { STABLE_AFTER_MS, nextCrashCount, respawnBackoffMs } from '../../src/cluster/supervisor';

describe('respawnBackoffMs', () => {
  test('doubles from 100 ms per consecutive crash', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((n) => respawnBackoffMs(n, 60_000)),
      [100, 200, 400, 800, 1600, 3200],
    );
  });

  test('is capped at maxMs, also for a cap that is not a step of the sequence', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5, 20].map((n) => respawnBackoffMs(n, 1000)),
      [100, 200, 400, 800, 1000, 1000],
    );
    assert.equal(respawnBackoffMs(3, 250), 250);
    assert.equal(respawnBackoffMs(1, 50), 50, 'a cap below the first step wins');
  });

  test('stays finite and capped for a very long crash loop', () => {
    assert.equal(respawnBackoffMs(5000, 30_000), 30_000);
  });
});

describe('nextCrashCount', () => {
  test('a worker that died young adds to the slot count', () => {
    assert.equal(nextCrashCount(0, 10), 1);
    assert.equal(nextCrashCount(1, 10), 2);
    assert.equal(nextCrashCount(7, STABLE_AFTER_MS), 8, 'exactly the stable age still counts as a crash loop');
  });

  test('a worker that lived longer than the stable age starts the count over', () => {
    assert.equal(STABLE_AFTER_MS, 30_000);
    assert.equal(nextCrashCount(7, STABLE_AFTER_MS + 1), 1);
    assert.equal(nextCrashCount(0, 3_600_000), 1);
  });

  test('a crash loop interrupted by a healthy run: 100, 200, 400, then 100 again', () => {
    const lived = [5, 5, 5, STABLE_AFTER_MS + 1, 5];
    let crashes = 0;
    const delays: number[] = [];
    for (const ms of lived) {
      crashes = nextCrashCount(crashes, ms);
      delays.push(respawnBackoffMs(crashes, 10_000));
    }
    assert.deepEqual(delays, [100, 200, 400, 100, 200]);
  });
});
