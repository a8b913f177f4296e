import pino, { type DestinationStream, type Logger } from 'pino';

export type { Logger };

export type LogFormatChoice = 'auto' | 'pretty' | 'json';

/** Whether lines are human-readable: `auto` means when stdout is a terminal (a person is watching). */
export function wantsPretty(format: LogFormatChoice, isTTY: boolean | undefined): boolean {
  return format === 'pretty' || (format === 'auto' && isTTY === true);
}

/**
 * pino-pretty as a synchronous stream in this process (no transport thread),
 * so a crash still prints its last line. Optional: without the package the
 * logs stay JSON.
 */
function prettyStream(): DestinationStream | undefined {
  try {
    const pretty = require('pino-pretty') as (o: Record<string, unknown>) => DestinationStream;
    return pretty({ colorize: process.stdout.isTTY === true, sync: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'hostname' });
  } catch {
    return undefined;
  }
}

/**
 * One root logger per process (JSON lines on stdout unless `format` asks for
 * pretty lines); subsystems take a child with `{ sub: '<name>' }`, workers
 * add `{ worker: <id> }`.
 */
export function createRootLogger(level: string, bindings: Record<string, unknown> = {}, format: LogFormatChoice = 'json'): Logger {
  const opts = { level, base: { pid: process.pid, ...bindings }, timestamp: pino.stdTimeFunctions.isoTime };
  const stream = wantsPretty(format, process.stdout.isTTY) ? prettyStream() : undefined;
  return stream ? pino(opts, stream) : pino(opts);
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
    this.write('warn', key, obj, msg);
  }

  info(key: string, obj: Record<string, unknown>, msg: string): void {
    this.write('info', key, obj, msg);
  }

  private write(level: 'warn' | 'info', key: string, obj: Record<string, unknown>, msg: string): void {
    const now = Date.now();
    const entry = this.last.get(key);
    if (entry && now - entry.at < this.intervalMs) {
      entry.suppressed++;
      return;
    }
    this.log[level]({ ...obj, suppressed: entry?.suppressed ?? 0 }, msg);
    // Keys are a small closed set (drop reasons), so this map stays bounded.
    this.last.set(key, { at: now, suppressed: 0 });
  }
}
