/**
 * Gives a connect burst's garbage back to the OS once the burst is over.
 *
 * Why: a burst of handshakes interleaves the connections' long-lived objects
 * with the handshakes' promoted garbage on the same old-space pages. After
 * 10,000 handshakes the used heap was ~27-30 KB per connection against
 * ~14 KB live, and V8 does not collect it while the process is idle (20 s
 * after a burst nothing had changed). A plain full GC frees the garbage but
 * not the pages: every page keeps some live objects, and V8's normal
 * compaction moves at most a few MB per GC. So the step runs one full GC
 * with V8's `--compact-on-every-full-gc` set for its duration, which
 * evacuates every fragmented page: standalone at 10,000 connections, RSS
 * 33.0 -> 17.9 KB per connection, heap 32.5 -> 17.5 KB (BENCHMARKS.md,
 * "Idle memory: compaction after a connect burst").
 *
 * When: after at least `minConnections` new connections, once a whole
 * `quietMs` period brings fewer than a tenth of that many. A period whose
 * timer fired late (a blocked event loop) or that ends with connections
 * still queued in the kernel is not quiet. Per connection
 * the cost is two counter increments; one timer runs only while a burst is
 * being watched.
 *
 * How: Node 20 has no API for it (`HeapProfiler.collectGarbage` through an
 * in-process `node:inspector` session never calls back here, and it would
 * not compact either). V8's `gc` extension is taken from the command line's
 * `--expose-gc` if given, else enabled for one new `vm` context only (the
 * pattern Jest uses to look for leaks), so no `gc` global appears. The
 * pause stops the event loop (`gateway_idle_compaction_seconds`; ~0.8 s of
 * CPU at 10,000 connections on this machine), which is why it is
 * configurable and waits for the burst to end.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Logger } from './logger';

export interface IdleCompactionOptions {
  /** Length of the quiet period that ends a burst; 0 = never compact. */
  readonly quietMs: number;
  /** New connections since the last compaction that make a burst. */
  readonly minConnections: number;
  /** The collection itself (`compactHeap` when omitted). */
  readonly collect?: () => void;
  /** Told after each compaction: how long the pause was and the heap before and after. */
  readonly onCompacted?: (pauseSeconds: number, cpuSeconds: number, heapBefore: number, heapAfter: number) => void;
}

export interface IdleCompaction {
  /** One new connection. */
  note(): void;
  stop(): void;
}

let extensionGc: (() => void) | undefined;

/** V8's `gc` (one full, non-compacting collection), without a `gc` global in this context. */
export function v8Gc(): () => void {
  if (extensionGc) return extensionGc;
  const own = (globalThis as { gc?: unknown }).gc;
  if (typeof own === 'function') {
    extensionGc = own as () => void;
    return extensionGc;
  }
  // The flag only decides whether a context created afterwards gets `gc`;
  // it is turned off again so that later contexts (app handlers' vm use) do not.
  setFlagsFromString('--expose-gc');
  try {
    extensionGc = runInNewContext('gc') as () => void;
  } finally {
    setFlagsFromString('--no-expose-gc');
  }
  return extensionGc;
}

/** Whether the operator runs every full GC compacting anyway (then the flag is left alone). */
const compactingAlways = /compact[-_]on[-_]every[-_]full[-_]gc/.test([...process.execArgv, process.env['NODE_OPTIONS'] ?? ''].join(' '));

/** One full GC that evacuates every fragmented page (see the file comment). */
export function compactHeap(): void {
  const gc = v8Gc();
  if (compactingAlways) {
    gc();
    return;
  }
  setFlagsFromString('--compact-on-every-full-gc');
  try {
    gc();
  } finally {
    setFlagsFromString('--no-compact-on-every-full-gc');
  }
}

/** A quiet period's timer this late (x its length) judges nothing: the event loop was blocked. */
const LATE_FACTOR = 1.5;

const NOOP: IdleCompaction = { note: () => undefined, stop: () => undefined };

export function createIdleCompaction(o: IdleCompactionOptions): IdleCompaction {
  if (o.quietMs <= 0) return NOOP;
  const quietThreshold = Math.max(1, Math.ceil(o.minConnections / 10));
  let since = 0;
  let inWindow = 0;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const compact = (): void => {
    const before = process.memoryUsage().heapTotal;
    const t0 = process.hrtime.bigint();
    const cpu0 = process.cpuUsage();
    (o.collect ?? compactHeap)();
    const pause = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpu = process.cpuUsage(cpu0);
    o.onCompacted?.(pause, (cpu.user + cpu.system) / 1e6, before, process.memoryUsage().heapTotal);
  };
  let armedAt = 0;
  const arm = (): void => {
    inWindow = 0;
    armedAt = Date.now();
    timer = setTimeout(check, o.quietMs);
    timer.unref();
  };
  // After the timer, past the poll phase: connections the kernel queued while
  // the event loop was busy are counted before the period is judged quiet.
  const check = (): void => {
    setImmediate(decide).unref();
  };
  const decide = (): void => {
    timer = undefined;
    if (stopped) return;
    // A period that lasted much longer than asked means a blocked event loop
    // (a busy burst, a long GC), not quiet clients.
    if (inWindow >= quietThreshold || Date.now() - armedAt > o.quietMs * LATE_FACTOR) {
      arm();
      return;
    }
    since = 0;
    compact();
  };
  return {
    note() {
      since++;
      inWindow++;
      if (timer === undefined && !stopped && since >= o.minConnections) arm();
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}

/**
 * Compaction after bursts of `server`'s connections (the public port's TCP
 * connections: the primary's routed ones, a worker's handed-over ones, a
 * standalone process's own), with each pause observed and logged.
 */
export function compactAfterConnectBursts(
  server: { on(event: 'connection', listener: () => void): unknown },
  config: { readonly idleCompactMs: number; readonly idleCompactConnections: number },
  pauses: { observe(seconds: number): void },
  log: Logger,
): IdleCompaction {
  const c = createIdleCompaction({
    quietMs: config.idleCompactMs,
    minConnections: config.idleCompactConnections,
    onCompacted: (seconds, cpuSeconds, before, after) => {
      pauses.observe(seconds);
      log.info(
        { pauseMs: Math.round(seconds * 1000), cpuMs: Math.round(cpuSeconds * 1000), heapTotalBefore: before, heapTotalAfter: after },
        'connect burst over: heap compacted (GATEWAY_IDLE_COMPACT_MS)',
      );
    },
  });
  if (config.idleCompactMs > 0) server.on('connection', () => c.note());
  return c;
}
