/**
 * The compaction after a connect burst (src/shared/idle-compaction.ts): when
 * it runs (a burst, then a quiet period; never during the burst, never
 * without one), and that its collection gives back the pages a plain full
 * GC keeps.
 */
import assert from 'node:assert/strict';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, mock, test } from 'node:test';
import { compactHeap, createIdleCompaction, type IdleCompactionOptions } from '../../src/shared/idle-compaction';

function counted(o: Partial<IdleCompactionOptions> & Pick<IdleCompactionOptions, 'quietMs' | 'minConnections'>) {
  const runs: { pause: number; cpu: number }[] = [];
  const c = createIdleCompaction({ collect: () => undefined, onCompacted: (pause, cpu) => runs.push({ pause, cpu }), ...o });
  return { c, runs };
}

/** Mocked time moves on; the decision runs in a real setImmediate after the timer (past the poll phase). */
async function tick(ms: number): Promise<void> {
  mock.timers.tick(ms);
  await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('idle compaction schedule', () => {
  beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'] }));
  afterEach(() => mock.timers.reset());

  test('a burst followed by a quiet period compacts once, after the period', async () => {
    const { c, runs } = counted({ quietMs: 5000, minConnections: 100 });
    for (let i = 0; i < 100; i++) c.note();
    await tick(4999);
    assert.equal(runs.length, 0, 'not before the quiet period is over');
    await tick(1);
    assert.equal(runs.length, 1);
    assert.ok((runs[0]?.pause ?? -1) >= 0 && (runs[0]?.cpu ?? -1) >= 0);
    await tick(60_000);
    assert.equal(runs.length, 1, 'nothing more without a new burst');
  });

  test('fewer connections than a burst never compact', async () => {
    const { c, runs } = counted({ quietMs: 1000, minConnections: 100 });
    for (let i = 0; i < 99; i++) c.note();
    await tick(60_000);
    assert.equal(runs.length, 0);
  });

  test('while connections keep coming (a tenth of a burst per period) it waits', async () => {
    const { c, runs } = counted({ quietMs: 1000, minConnections: 100 });
    for (let i = 0; i < 100; i++) c.note();
    for (let period = 0; period < 20; period++) {
      for (let i = 0; i < 10; i++) c.note();
      await tick(1000);
    }
    assert.equal(runs.length, 0, 'a period with 10 new connections is not quiet');
    for (let i = 0; i < 9; i++) c.note();
    await tick(1000);
    assert.equal(runs.length, 1, 'a period with 9 is');
  });

  test('each compaction needs a burst of its own', async () => {
    const { c, runs } = counted({ quietMs: 1000, minConnections: 50 });
    for (let i = 0; i < 50; i++) c.note();
    await tick(1000);
    assert.equal(runs.length, 1);
    for (let i = 0; i < 49; i++) c.note();
    await tick(10_000);
    assert.equal(runs.length, 1);
    c.note();
    await tick(1000);
    assert.equal(runs.length, 2);
  });

  test('a period whose timer fired late (a blocked event loop) is not judged quiet', async () => {
    const { c, runs } = counted({ quietMs: 1000, minConnections: 10 });
    for (let i = 0; i < 10; i++) c.note();
    // The loop was blocked for 5 s: the clock moved, the timer had no chance to fire.
    mock.timers.setTime(Date.now() + 5000);
    await tick(1000);
    assert.equal(runs.length, 0);
    await tick(1000);
    assert.equal(runs.length, 1, 'the next period, on time and quiet, is');
  });

  test('off (0) and stop() run nothing', async () => {
    const off = counted({ quietMs: 0, minConnections: 1 });
    const stopped = counted({ quietMs: 1000, minConnections: 1 });
    for (let i = 0; i < 10; i++) {
      off.c.note();
      stopped.c.note();
    }
    stopped.c.stop();
    stopped.c.note();
    await tick(10_000);
    assert.equal(off.runs.length, 0);
    assert.equal(stopped.runs.length, 0);
  });
});

describe('compactHeap', () => {
  test('gives back the old-space pages that a plain full GC leaves fragmented, without a gc global', () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    setFlagsFromString('--no-expose-gc');
    const old = () => {
      const s = getHeapSpaceStatistics().find((x) => x.space_name === 'old_space');
      assert.ok(s);
      return { used: s.space_used_size, size: s.space_size };
    };
    // Like a connect burst: objects promoted together, then three in four die.
    const promotedThenThinned = (): object[] => {
      const all: { i: number; s: string; a: number[] }[] = [];
      for (let i = 0; i < 600_000; i++) all.push({ i, s: `x${i}`, a: [i] });
      gc();
      gc();
      return all.filter((_, i) => i % 4 === 0);
    };
    const kept = promotedThenThinned();
    gc();
    const plain = old();
    assert.ok(plain.size > 2.5 * plain.used, `premise: a plain GC leaves the pages (${plain.used} used of ${plain.size})`);
    compactHeap();
    const compacted = old();
    assert.ok(compacted.size < 2 * compacted.used, `compacted: ${compacted.used} used of ${compacted.size}`);
    assert.ok(compacted.size < plain.size / 2);
    assert.equal(kept.length, 150_000);
    assert.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined');
    assert.equal(runInNewContext('typeof gc'), 'undefined', 'later contexts get no gc either');
  });
});
