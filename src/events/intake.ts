import { DROP_REASONS, parseRawEvent, validateEvent, type FrappeEvent, type ParseResult } from './parse';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { RateLimitedLog } from '../shared/logger';

type Source = 'redis' | 'api';

/**
 * The one place where events enter: parse, count, and log drops (rate
 * limited per reason). Nothing here throws: bad input is dropped and counted.
 *
 * Counts are added to the metrics once per call, or once per `batch()`: a
 * labelled prom-client increment allocates (label hashing), and the leader
 * parses up to hundreds of thousands of events per second under a flood.
 */
export class Intake {
  private batching = false;
  private readonly received: Record<Source, number> = { redis: 0, api: 0 };
  private readonly dropped = new Map<string, number>();

  constructor(
    private readonly metrics: Metrics,
    private readonly dropLog: RateLimitedLog,
    private readonly maxBytes: number,
  ) {
    // Every reason is exported from the start, so a rate() over a reason that
    // has not happened yet reads 0 rather than nothing.
    for (const reason of DROP_REASONS) metrics.eventsDropped.inc({ reason }, 0);
  }

  /** Runs `fn` (which calls `raw` or `object` many times) and adds its counts to the metrics once at the end. */
  batch<T>(fn: () => T): T {
    if (this.batching) return fn();
    this.batching = true;
    try {
      return fn();
    } finally {
      this.batching = false;
      this.commit();
    }
  }

  raw(raw: Buffer | string, source: Source): FrappeEvent | null {
    this.received[source]++;
    // Called once per message under a flood: no closure, and oversized input
    // is rejected before it is decoded into a string.
    let r: ParseResult;
    try {
      const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
      r =
        size > this.maxBytes
          ? parseRawEvent('', size, this.maxBytes)
          : parseRawEvent(typeof raw === 'string' ? raw : raw.toString('utf8'), size, this.maxBytes);
    } catch (err) {
      r = parserFailure(err);
    }
    return this.accept(r, source);
  }

  /**
   * A message whose bytes were not kept because it is over the size bound
   * (`EventRing`'s `maxMessageBytes`, the same GATEWAY_MAX_MESSAGE_BYTES):
   * dropped as oversized by its length.
   */
  oversized(size: number, source: Source): null {
    this.received[source]++;
    this.accept(parseRawEvent('', size, this.maxBytes), source);
    return null;
  }

  object(obj: unknown, source: Source): ParseResult {
    this.received[source]++;
    const r = guarded(() => validateEvent(obj));
    this.accept(r, source);
    return r;
  }

  /** An event that parsed but cannot be encoded for delivery (see `encodeOrNull`): refused before it reaches a consumer. */
  unencodable(source: Source): void {
    this.received[source]++;
    this.drop('unencodable');
    this.dropLog.warn('unencodable', { reason: 'unencodable', source }, 'realtime event dropped');
    if (!this.batching) this.commit();
  }

  private accept(r: ParseResult, source: string): FrappeEvent | null {
    if (r.ok) {
      if (!this.batching) this.commit();
      return r.value;
    }
    this.drop(r.reason);
    this.dropLog.warn(r.reason, { reason: r.reason, source, detail: r.detail }, 'realtime event dropped');
    if (!this.batching) this.commit();
    return null;
  }

  private drop(reason: string): void {
    this.dropped.set(reason, (this.dropped.get(reason) ?? 0) + 1);
  }

  private commit(): void {
    for (const source of ['redis', 'api'] as const) {
      if (this.received[source] > 0) this.metrics.eventsReceived.inc({ source }, this.received[source]);
      this.received[source] = 0;
    }
    for (const [reason, n] of this.dropped) this.metrics.eventsDropped.inc({ reason }, n);
    this.dropped.clear();
  }
}

/**
 * The parser is written not to throw; this is the backstop that keeps an
 * unforeseen input (an exotic object from the API, a V8 limit) from taking
 * the consumer down with it. Counted as malformed.
 */
function guarded(parse: () => ParseResult): ParseResult {
  try {
    return parse();
  } catch (err) {
    return parserFailure(err);
  }
}

function parserFailure(err: unknown): ParseResult {
  return { ok: false, reason: 'malformed_json', detail: `unexpected parser failure: ${errorMessage(err)}` };
}
