/**
 * Bounds the garbage a busy process lets pile up in V8's old space.
 *
 * Why: under a flood of junk on `events` the leader promotes what its
 * in-flight batches hold (encoded items, parse results, ioredis' script
 * arguments: ~34 MB per 100,000 junk messages, of which ~1 MB stays live),
 * and V8 finished its next full GC only once the old space had grown by
 * 27-31 MB, most of the RSS peak (BENCHMARKS.md, "junk-memory: a bound on
 * the leader's old-space garbage"). Neither fewer batches in flight (1, 2
 * or 8: the same promoted total) nor V8's `--heap-growing-percent` moved
 * it: on a CPU-contended host the concurrent marking finishes late.
 *
 * How: `check()` is called once per unit of work (a leader batch); it
 * reads the old space's used size (one `getHeapSpaceStatistics` call, no
 * per-event cost) and, when it has grown more than `boundBytes` over its
 * level after the last full GC (ours or V8's: the lowest level seen since),
 * runs one full, non-compacting GC at once (`v8Gc`, the idle compaction's
 * `gc`), at most once per `minIntervalMs`. Live memory only moves the level
 * up: a process whose live heap grows is collected once per `boundBytes` of
 * growth, never in a loop.
 */
import { getHeapSpaceStatistics } from 'node:v8';
import { v8Gc } from './idle-compaction';

export interface GarbageBoundOptions {
  /** Old-space growth over its last post-GC level that triggers a collection; 0 = never. */
  readonly boundBytes: number;
  /** Collections at most this often (the bound can be exceeded meanwhile). */
  readonly minIntervalMs: number;
  /** The collection itself (V8's `gc` when omitted). */
  readonly collect?: () => void;
  /** The old space's used bytes (V8's when omitted). */
  readonly oldSpaceUsed?: () => number;
  /** Told after each collection: its pause and the old space's used bytes before and after. */
  readonly onCollected?: (pauseSeconds: number, before: number, after: number) => void;
  readonly now?: () => number;
}

export interface GarbageBound {
  /** One unit of work done: collect if the old space grew past the bound. */
  check(): void;
}

function v8OldSpaceUsed(): number {
  for (const s of getHeapSpaceStatistics()) if (s.space_name === 'old_space') return s.space_used_size;
  return 0;
}

const NOOP: GarbageBound = { check: () => undefined };

export function createGarbageBound(o: GarbageBoundOptions): GarbageBound {
  if (o.boundBytes <= 0) return NOOP;
  const used = o.oldSpaceUsed ?? v8OldSpaceUsed;
  const collect = o.collect ?? ((): void => v8Gc()());
  const now = o.now ?? Date.now;
  let level = used();
  let last = -Infinity;
  return {
    check() {
      const before = used();
      // A full GC of V8's own lowers the level; growth is measured from there.
      if (before < level) level = before;
      if (before - level <= o.boundBytes) return;
      const t = now();
      if (t - last < o.minIntervalMs) return;
      last = t;
      const t0 = process.hrtime.bigint();
      collect();
      const pause = Number(process.hrtime.bigint() - t0) / 1e9;
      level = used();
      o.onCollected?.(pause, before, level);
    },
  };
}
