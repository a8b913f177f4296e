import type { Logger } from './logger';
import { errorMessage } from './errors';

export type Closer = () => unknown;

/**
 * Collects teardown steps where resources are created and runs them in
 * reverse order. `close()` is memoised (safe to call twice) and runs every
 * closer even when one throws.
 */
export class Closers {
  private readonly closers: { name: string; fn: Closer }[] = [];
  private closing: Promise<void> | null = null;

  constructor(private readonly log?: Logger) {}

  add(name: string, fn: Closer): void {
    this.closers.push({ name, fn });
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = (async () => {
      for (const { name, fn } of this.closers.reverse()) {
        try {
          await fn();
        } catch (err) {
          this.log?.warn({ closer: name, err: errorMessage(err) }, 'closer failed');
        }
      }
    })();
    return this.closing;
  }
}

/** Forces the process out if an orderly shutdown overruns its grace period. */
export function armShutdownFuse(graceMs: number, log: Logger): void {
  const t = setTimeout(() => {
    log.error({ graceMs }, 'shutdown grace period exceeded, forcing exit');
    process.exit(1);
  }, graceMs);
  t.unref();
}
