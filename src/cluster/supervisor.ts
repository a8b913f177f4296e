import { every, type Periodic } from '../shared/clock';
import cluster, { type Worker } from 'node:cluster';
import type { Metrics } from '../metrics/metrics';
import { asWorkerMessage, WORKER_UNRESPONSIVE_MS, type PrimaryToWorker } from './ipc';
import { CounterBaseline } from './metrics-baseline';
import type { Logger } from '../shared/logger';

/** A worker that lived this long is healthy again: its crash count resets. */
export const STABLE_AFTER_MS = 30_000;
const REPLY_TIMEOUT_MS = 2000;

/**
 * Process-level settings every forked worker gets unless the operator set
 * them (the environment is inherited, so an explicit value wins). This is
 * the one place for them (the container image sets the same for the primary).
 * - MALLOC_ARENA_MAX=2: glibc keeps up to 8 malloc arenas per core, and a
 *   connect burst spread over the threads of libuv's pool and V8's GC leaves
 *   memory in each of them that is not given back; two arenas keep the
 *   burst's high-water mark lower (BENCHMARKS.md, idle memory). The price,
 *   threads sharing an arena's lock, is small where JavaScript runs on one
 *   thread.
 * V8 flags (execArgv) are inherited from the primary's command line.
 */
export const WORKER_PROCESS_ENV: Readonly<Record<string, string>> =
  process.env['MALLOC_ARENA_MAX'] === undefined ? { MALLOC_ARENA_MAX: '2' } : {};

/** A slot's crash count after a worker of it died having lived `livedMs`. */
export function nextCrashCount(previous: number, livedMs: number): number {
  return livedMs > STABLE_AFTER_MS ? 1 : previous + 1;
}

/** Delay before respawning a slot on its `crashes`-th consecutive crash: 100, 200, 400 ... ms, capped. */
export function respawnBackoffMs(crashes: number, maxMs: number): number {
  return Math.min(maxMs, 100 * 2 ** (crashes - 1));
}

/**
 * V8 flags every gateway process runs with (README "Deployment"), unless the
 * operator set the same flag (NODE_OPTIONS or the node command line): the
 * young generation's semi-spaces capped at 4 MiB instead of V8's 16. Under a
 * flood of events V8 grows the young generation to its cap (32 MB in the
 * leader at the default); 2 MiB saved no more and cost 15-30% more CPU per
 * delivery (BENCHMARKS.md, "Memory under junk and Redis restarts"). Workers
 * get them from `workerExecArgv`; the primary or a standalone process only
 * from its own command line: the container image sets them in NODE_OPTIONS
 * (Dockerfile), as does `npm start` (test/unit/v8-flags.test.ts keeps the
 * three equal).
 */
export const V8_FLAGS: readonly string[] = ['--max-semi-space-size=4'];

/** The flag's name: `--max-semi-space-size=4` and `--max_semi_space_size 2` are the same to V8. */
function flagName(arg: string): string {
  return arg.replace(/^--/, '').split('=')[0]?.replace(/_/g, '-') ?? '';
}

/** Flags of `V8_FLAGS` that neither `execArgv` nor the space-separated `nodeOptions` sets. */
export function missingV8Flags(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  const given = new Set([...execArgv, ...(nodeOptions ?? '').split(/\s+/)].filter((a) => a.startsWith('--')).map(flagName));
  return V8_FLAGS.filter((f) => !given.has(flagName(f)));
}

/** A worker's `execArgv`: the primary's own (as Node's default), plus `V8_FLAGS` not set otherwise. */
export function workerExecArgv(execArgv: readonly string[], nodeOptions: string | undefined): string[] {
  return [...execArgv, ...missingV8Flags(execArgv, nodeOptions)];
}

/** The supervisor's slice of the configuration. */
export interface SupervisorConfig {
  readonly workers: number;
  /** Upper bound of the backoff between respawns of a crash-looping worker. */
  readonly maxBackoffMs: number;
  /**
   * A worker silent on IPC this long (after it said hello) is killed with
   * SIGKILL and respawned like a crashed one; 0 = never. It is unresponsive
   * (routed around) long before: WORKER_UNRESPONSIVE_MS.
   */
  readonly killAfterMs: number;
  /**
   * A worker that has not said hello this long after its fork (stuck or
   * stopped while booting) is killed with SIGKILL and respawned with the
   * crash backoff; 0 = never.
   */
  readonly bootTimeoutMs: number;
  /** The environment a worker of a slot is forked with. */
  env(slot: number): Record<string, string>;
}

export interface WorkerInfo {
  readonly slot: number;
  readonly id: number;
  readonly pid: number | undefined;
  nodeId: string | null;
  connections: number;
  redis: boolean;
  readonly startedAt: number;
  /** Date.now() of its hello (null while it boots). */
  readyAt: number | null;
  /** Date.now() of its last IPC message. */
  lastSeenAt: number;
  /** False while it has been silent for WORKER_UNRESPONSIVE_MS (after it said hello). */
  responsive: boolean;
}

/**
 * Forks the workers, respawns the ones that die (exponential backoff per
 * slot while they crash-loop), and talks to them over IPC.
 */
export class Supervisor {
  private readonly workers = new Map<number, WorkerInfo>();
  private readonly crashes = new Map<number, number>();
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; timer: NodeJS.Timeout }>();
  private nextRequest = 1;
  private stopping = false;
  private watch: Periodic | null = null;
  private readonly exitListeners = new Set<(info: WorkerInfo) => void>();
  /** Workers this supervisor killed, by id, with the reason their exit is counted under (not a crash). */
  private readonly killed = new Map<number, 'unresponsive' | 'boot_timeout'>();
  /** What dead workers counted, so host counters survive worker restarts. */
  readonly counters = new CounterBaseline();

  constructor(
    private readonly config: SupervisorConfig,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  onWorkerDied(fn: (info: WorkerInfo) => void): void {
    this.exitListeners.add(fn);
  }

  start(): void {
    cluster.on('message', (worker: Worker, raw: unknown) => {
      const m = asWorkerMessage(raw);
      const info = this.workers.get(worker.id);
      if (!m || !info) return;
      info.lastSeenAt = Date.now();
      if (!info.responsive) this.markResponsive(info, true);
      if (m.type === 'gw:hello') {
        info.nodeId = m.nodeId;
        info.readyAt = info.lastSeenAt;
        this.log.info({ worker: worker.id, pid: info.pid, bootMs: info.readyAt - info.startedAt }, 'worker booted');
      } else if (m.type === 'gw:status') {
        info.connections = m.connections;
        info.redis = m.redis;
      } else if (m.type === 'gw:reply') {
        const p = this.pending.get(m.id);
        if (p) {
          clearTimeout(p.timer);
          this.pending.delete(m.id);
          p.resolve(m.body);
        }
      }
    });
    cluster.on('exit', (worker, code, signal) => this.onExit(worker, code, signal));
    this.watch = every(Math.floor(WORKER_UNRESPONSIVE_MS / 3), () => this.checkResponsive(), { ref: false });
    cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv, process.env['NODE_OPTIONS']) });
    for (let slot = 0; slot < this.config.workers; slot++) this.fork(slot);
  }

  private fork(slot: number): void {
    const worker = cluster.fork({ ...WORKER_PROCESS_ENV, ...this.config.env(slot) });
    this.workers.set(worker.id, {
      slot,
      id: worker.id,
      pid: worker.process.pid,
      nodeId: null,
      connections: 0,
      redis: false,
      startedAt: Date.now(),
      readyAt: null,
      lastSeenAt: Date.now(),
      responsive: true,
    });
    this.metrics.workersUp.set(this.workers.size);
  }

  private onExit(worker: Worker, code: number | null, signal: string | null): void {
    const info = this.workers.get(worker.id);
    const reason = this.killed.get(worker.id) ?? 'exit';
    this.killed.delete(worker.id);
    this.workers.delete(worker.id);
    this.counters.retire(worker.id);
    this.metrics.workersUp.set(this.workers.size);
    this.metrics.workersUnresponsive.set([...this.workers.values()].filter((w) => !w.responsive).length);
    if (!info) return;
    for (const fn of this.exitListeners) fn(info);
    if (this.stopping) return;
    // Healthy time counts from its hello: a worker that never finished booting
    // (it hung until GATEWAY_WORKER_BOOT_MS) adds to the crash loop whatever its age.
    const lived = info.readyAt === null ? 0 : Date.now() - info.readyAt;
    const crashes = nextCrashCount(this.crashes.get(info.slot) ?? 0, lived);
    this.crashes.set(info.slot, crashes);
    const backoff = respawnBackoffMs(crashes, this.config.maxBackoffMs);
    this.metrics.workerRestarts.inc({ reason });
    this.log.error(
      { worker: worker.id, slot: info.slot, pid: info.pid, code, signal, reason, respawnInMs: backoff },
      reason === 'unresponsive'
        ? 'unresponsive worker killed, respawning'
        : reason === 'boot_timeout'
          ? 'worker killed for not booting in time, respawning'
          : 'worker died, respawning',
    );
    setTimeout(() => {
      if (!this.stopping) this.fork(info.slot);
    }, backoff).unref();
  }

  /**
   * A worker that said hello and then nothing for WORKER_UNRESPONSIVE_MS is
   * unresponsive (a booting one is not); one silent for `killAfterMs` is
   * killed, so that its slot serves again instead of holding its clients
   * until each gives up on its own. A worker without hello `bootTimeoutMs`
   * after its fork is killed too: the silence watchdog never starts for it.
   */
  private checkResponsive(): void {
    const now = Date.now();
    const killAfter = this.config.killAfterMs;
    const bootTimeout = this.config.bootTimeoutMs;
    for (const info of this.workers.values()) {
      if (this.killed.has(info.id)) continue;
      if (info.nodeId === null) {
        const booting = now - info.startedAt;
        if (bootTimeout > 0 && booting >= bootTimeout) {
          this.sigkill(
            info,
            'boot_timeout',
            { bootingMs: booting, bootTimeoutMs: bootTimeout },
            'worker did not finish booting within GATEWAY_WORKER_BOOT_MS: killing it (SIGKILL)',
          );
        }
        continue;
      }
      const silent = now - info.lastSeenAt;
      if (info.responsive && silent >= WORKER_UNRESPONSIVE_MS) this.markResponsive(info, false);
      if (!info.responsive && killAfter > 0 && silent >= killAfter) {
        this.sigkill(
          info,
          'unresponsive',
          { silentMs: silent, killAfterMs: killAfter },
          'worker unresponsive for longer than GATEWAY_WORKER_KILL_MS: killing it (SIGKILL); its clients reconnect to the other workers',
        );
      }
    }
  }

  /** SIGKILL works on a stopped process too; `onExit` counts it under `reason` (not a crash) and respawns the slot with the crash backoff. */
  private sigkill(info: WorkerInfo, reason: 'unresponsive' | 'boot_timeout', fields: Record<string, number>, message: string): void {
    const worker = cluster.workers?.[info.id];
    if (!worker || worker.isDead()) return;
    this.killed.set(info.id, reason);
    this.log.error({ worker: info.id, pid: info.pid, ...fields }, message);
    worker.process.kill('SIGKILL');
  }

  private markResponsive(info: WorkerInfo, responsive: boolean): void {
    info.responsive = responsive;
    this.metrics.workersUnresponsive.set([...this.workers.values()].filter((w) => !w.responsive).length);
    if (responsive) this.log.info({ worker: info.id, pid: info.pid }, 'worker responsive again');
    else {
      this.log.warn(
        { worker: info.id, pid: info.pid, silentMs: Date.now() - info.lastSeenAt },
        'worker unresponsive (stopped or event loop stalled): new sessions go to the other workers',
      );
    }
  }

  /**
   * False for a worker that stopped answering (see `checkResponsive`), or
   * that has not said hello yet: a new session handed to a booting worker
   * waits in its IPC channel until it boots, or forever if it hangs there
   * (new sessions go to a booted worker while there is one); true for
   * unknown ids.
   */
  isResponsive(id: number): boolean {
    const info = this.workers.get(id);
    if (!info) return true;
    return info.nodeId !== null && info.responsive;
  }

  list(): WorkerInfo[] {
    return [...this.workers.values()];
  }

  upCount(): number {
    let n = 0;
    for (const w of this.workers.values()) if (w.nodeId !== null) n++;
    return n;
  }

  /** Asks every live worker and collects the answers that arrive in time. */
  async ask(make: (id: number) => PrimaryToWorker): Promise<unknown[]> {
    return (await this.askEach(make)).answers.map((a) => a.body);
  }

  /** Like `ask`, with who answered and who was asked but did not answer in time. */
  async askEach(make: (id: number) => PrimaryToWorker): Promise<{ answers: { worker: number; body: unknown }[]; missing: number[] }> {
    const asked: { worker: number; answer: Promise<unknown> }[] = [];
    for (const w of Object.values(cluster.workers ?? {})) {
      if (!w || !w.isConnected()) continue;
      const id = this.nextRequest++;
      asked.push({
        worker: w.id,
        answer: new Promise((resolve) => {
          const timer = setTimeout(() => {
            this.pending.delete(id);
            resolve(undefined);
          }, REPLY_TIMEOUT_MS);
          this.pending.set(id, { resolve, timer });
          w.send(make(id), undefined, () => undefined);
        }),
      });
    }
    const bodies = await Promise.all(asked.map((a) => a.answer));
    const answers: { worker: number; body: unknown }[] = [];
    const missing: number[] = [];
    asked.forEach((a, i) => {
      const body = bodies[i];
      if (body === undefined) missing.push(a.worker);
      else answers.push({ worker: a.worker, body });
    });
    return { answers, missing };
  }

  /** Tells every worker to drain and resolves when all have exited (or the deadline passes). */
  async drain(drainMs: number, deadlineMs: number): Promise<void> {
    this.stopping = true;
    this.watch?.stop();
    const alive = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
    await Promise.all(
      alive.map(
        (w) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              w.process.kill('SIGKILL');
              resolve();
            }, deadlineMs);
            w.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            if (w.isConnected()) w.send({ type: 'gw:drain', drainMs } satisfies PrimaryToWorker, undefined, () => undefined);
            else w.process.kill('SIGTERM');
          }),
      ),
    );
  }
}
