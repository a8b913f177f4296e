import type { Logger } from './logger';
import { errorMessage } from './errors';

/**
 * A long-running part of a role: started in list order, stopped in reverse.
 * Either hook may be left out (a timer only needs `stop`).
 */
export interface Service {
  readonly name: string;
  start?(): unknown;
  stop?(): unknown;
}

/**
 * The ordered service list of one role. `start()` starts each service in
 * order; when one fails, the ones already started are stopped and the error
 * is rethrown. `stop()` is memoised (safe to call twice), runs in reverse
 * order, and runs every stop even when one throws.
 */
export class Services {
  private readonly list: Service[] = [];
  private started = 0;
  private stopping: Promise<void> | null = null;

  constructor(private readonly log?: Logger) {}

  /** Appends a service; returns it, so creation and registration are one line. */
  add<S extends Service>(service: S): S {
    this.list.push(service);
    return service;
  }

  /** A teardown-only service, registered where the resource is created. */
  onStop(name: string, stop: () => unknown): void {
    this.add({ name, stop });
  }

  get stopped(): boolean {
    return this.stopping !== null;
  }

  async start(): Promise<void> {
    for (; this.started < this.list.length; this.started++) {
      const s = this.list[this.started] as Service;
      try {
        await s.start?.();
      } catch (err) {
        this.log?.error({ service: s.name, err: errorMessage(err) }, 'service failed to start');
        await this.stop();
        throw err;
      }
    }
  }

  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      // Services added after start() (none today) and never started are stopped too: their
      // resources exist from creation on.
      for (const s of [...this.list].reverse()) {
        try {
          await s.stop?.();
        } catch (err) {
          this.log?.warn({ service: s.name, err: errorMessage(err) }, 'service failed to stop');
        }
      }
    })();
    return this.stopping;
  }
}

export interface Running {
  shutdown(reason: string): Promise<void>;
}

/** What differs between roles in the one shutdown sequence; every step is optional. */
export interface ShutdownSteps {
  /** Readiness turns false (called first, synchronously). */
  beginDrain?(): void;
  /** Stop accepting new connections; resolves once the listener is closed. */
  stopAccepting?(): Promise<void>;
  /** Hand the events leadership over, so a standby takes over at once. */
  handOver?(): Promise<void>;
  /** Disconnect clients in jittered batches over the drain period. */
  drainClients?(): Promise<void>;
}

/**
 * The one shutdown sequence of every role: readiness false, arm the fuse,
 * stop accepting, hand over, drain clients, then stop every service in
 * reverse order. The returned function is memoised.
 */
export function createShutdown(services: Services, steps: ShutdownSteps, graceMs: number, log: Logger): Running['shutdown'] {
  let running: Promise<void> | null = null;
  return (reason) => {
    if (running) return running;
    running = (async () => {
      steps.beginDrain?.();
      armShutdownFuse(graceMs, log);
      log.info({ reason }, 'shutting down: draining');
      const accepting = steps.stopAccepting?.() ?? Promise.resolve();
      try {
        await steps.handOver?.();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'hand-over failed');
      }
      try {
        await steps.drainClients?.();
      } catch (err) {
        log.warn({ err: errorMessage(err) }, 'drain failed');
      }
      await accepting;
      await services.stop();
    })();
    return running;
  };
}

/** Forces the process out if an orderly shutdown overruns its grace period. */
export function armShutdownFuse(graceMs: number, log: Logger): void {
  const t = setTimeout(() => {
    log.error({ graceMs }, 'shutdown grace period exceeded, forcing exit');
    process.exit(1);
  }, graceMs);
  t.unref();
}
