import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * One root logger per process (JSON lines on stdout); subsystems take a child
 * with `{ sub: '<name>' }`, workers add `{ worker: <id> }`.
 */
export function createRootLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({ level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * At most one log line per key per interval; the rest are counted and the
 * count is reported with the next line. Drops are always counted in metrics,
 * so this only protects the log pipeline from floods of junk input.
 */
export class RateLimitedLog {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  warn(key: string, obj: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    this.log.warn({ ...obj, suppressed: entry?.suppressed ?? 0 }, msg);
    // Keys are a small closed set (drop reasons), so this map stays bounded.
    this.last.set(key, { at: now, suppressed: 0 });
  }
}
