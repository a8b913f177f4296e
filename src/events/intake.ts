import { DROP_REASONS, parseRawEvent, validateEvent, type FrappeEvent, type ParseResult } from './parse';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { RateLimitedLog } from '../shared/logger';

/**
 * The one place where events enter: parse, count, and log drops (rate
 * limited per reason). Nothing here throws: bad input is dropped and counted.
 */
export class Intake {
  constructor(
    private readonly metrics: Metrics,
    private readonly dropLog: RateLimitedLog,
    private readonly maxBytes: number,
  ) {
    // Every reason is exported from the start, so a rate() over a reason that
    // has not happened yet reads 0 rather than nothing.
    for (const reason of DROP_REASONS) metrics.eventsDropped.inc({ reason }, 0);
  }

  raw(raw: Buffer | string, source: 'redis' | 'api'): FrappeEvent | null {
    this.metrics.eventsReceived.inc({ source });
    return this.accept(
      guarded(() => {
        const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
        // Oversized input is rejected before it is decoded into a string.
        return size > this.maxBytes
          ? parseRawEvent('', size, this.maxBytes)
          : parseRawEvent(typeof raw === 'string' ? raw : raw.toString('utf8'), size, this.maxBytes);
      }),
      source,
    );
  }

  object(obj: unknown, source: 'redis' | 'api'): ParseResult {
    this.metrics.eventsReceived.inc({ source });
    const r = guarded(() => validateEvent(obj));
    this.accept(r, source);
    return r;
  }

  /** An event that parsed but cannot be encoded for delivery (see `encodeOrNull`): refused before it reaches a consumer. */
  unencodable(source: 'redis' | 'api'): void {
    this.metrics.eventsReceived.inc({ source });
    this.metrics.eventsDropped.inc({ reason: 'unencodable' });
    this.dropLog.warn('unencodable', { reason: 'unencodable', source }, 'realtime event dropped');
  }

  private accept(r: ParseResult, source: string): FrappeEvent | null {
    if (r.ok) return r.value;
    this.metrics.eventsDropped.inc({ reason: r.reason });
    this.dropLog.warn(r.reason, { reason: r.reason, source, detail: r.detail }, 'realtime event dropped');
    return null;
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
    return { ok: false, reason: 'malformed_json', detail: `unexpected parser failure: ${errorMessage(err)}` };
  }
}
