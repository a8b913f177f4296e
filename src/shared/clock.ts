import { performance } from 'node:perf_hooks';

/**
 * One timer per process for its periodic work (lease renewals, the
 * supervisor's watchdog, Redis stall checks, heartbeats, sweeps, a worker's
 * `gw:alive`): each task runs at the multiples of its period on one clock,
 * so tasks whose periods divide each other (250, 500, 1,000, 5,000 ms...) run
 * in the same timer callback, i.e. one wake-up of the process instead of one
 * per timer. An idle primary woke ~30 times a second, at ~0.3 ms of CPU each
 * on a loaded machine (BENCHMARKS.md, "The leader's fixed cost").
 *
 * The clock is `performance.timeOrigin + performance.now()`: monotonic within
 * the process (a wall-clock step never delays a lease renewal), and the same
 * grid in every process of a host (each process' origin is the wall clock at
 * its start), so the workers' `gw:alive` messages are sent at the instants
 * the primary is awake for its own tick anyway.
 *
 * A task runs at most once per grid point; after a stall it runs once and
 * resumes at the next point, as `setInterval` does. Its first run is at the
 * first grid point after `every` is called (within one period).
 */
export interface Periodic {
  stop(): void;
}

interface Task {
  readonly periodMs: number;
  readonly fn: () => void;
  /** Keeps the process alive (a `setInterval` not unref'd). */
  readonly ref: boolean;
  due: number;
}

/** A timer that fires up to this much before a due time (ms rounding) still runs the task. */
const EARLY_MS = 1;

const tasks = new Set<Task>();
let timer: NodeJS.Timeout | null = null;
let timerDue = Infinity;
/** Called at each run with how late the timer fired, in ms (see `onClockRun`). */
let onRun: ((lateMs: number) => void) | null = null;

const now = (): number => performance.timeOrigin + performance.now();
const nextPoint = (t: number, periodMs: number): number => (Math.floor(t / periodMs) + 1) * periodMs;

/** Runs `fn` at every multiple of `periodMs` on the process' clock until `stop()`. */
export function every(periodMs: number, fn: () => void, opts: { ref?: boolean } = {}): Periodic {
  if (!(periodMs >= 1)) throw new RangeError(`period must be at least 1 ms, got ${periodMs}`);
  const task: Task = { periodMs, fn, ref: opts.ref ?? true, due: nextPoint(now(), periodMs) };
  tasks.add(task);
  arm();
  return {
    stop: () => {
      if (tasks.delete(task)) arm();
    },
  };
}

/**
 * `record` is called at every run of the clock with how late its timer fired
 * (ms): the process' event-loop delay, measured on wake-ups it has anyway
 * instead of on a timer of its own (see `metrics.ts`, `loopDelayOnClock`).
 */
export function onClockRun(record: ((lateMs: number) => void) | null): void {
  onRun = record;
}

function arm(): void {
  let due = Infinity;
  let ref = false;
  for (const t of tasks) {
    if (t.due < due) due = t.due;
    if (t.ref) ref = true;
  }
  if (timer !== null && due === timerDue) {
    if (ref) timer.ref();
    else timer.unref();
    return;
  }
  if (timer !== null) clearTimeout(timer);
  timer = null;
  timerDue = due;
  if (due === Infinity) return;
  timer = setTimeout(run, Math.max(0, due - now()));
  if (!ref) timer.unref();
}

function run(): void {
  const t = now();
  if (onRun !== null) onRun(Math.max(0, t - timerDue));
  timer = null;
  timerDue = Infinity;
  let failure: { err: unknown } | null = null;
  for (const task of [...tasks]) {
    if (task.due > t + EARLY_MS || !tasks.has(task)) continue;
    task.due = nextPoint(Math.max(t, task.due), task.periodMs);
    try {
      task.fn();
    } catch (err) {
      failure ??= { err };
    }
  }
  arm();
  // As an interval's callback would: uncaught, once every task of this point has run.
  if (failure) throw failure.err;
}
