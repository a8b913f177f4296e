import { timingSafeEqual } from 'node:crypto';
import { IDEMPOTENCY_FIELD, IDEMPOTENCY_KEY_RE, MAX_IDEMPOTENCY_KEY, type FrappeEvent } from '../events/parse';
import { encodeOrNull } from '../events/encode';
import type { Intake } from '../events/intake';
import { errorMessage, GatewayError } from '../shared/errors';

export type PublishCheck =
  | { readonly ok: true; readonly events: FrappeEvent[] }
  | { readonly ok: false; readonly status: 400 | 413; readonly body: { error: string; message: string; index?: number; field?: string } };

const MAX_BATCH = 10_000;

/** The request header that gives a single event its idempotency key (the body field `idempotency_key` does it per event). */
export const IDEMPOTENCY_HEADER = 'idempotency-key';

function badKey(message: string): PublishCheck {
  return { ok: false, status: 400, body: { error: 'GW_ERR_BAD_IDEMPOTENCY_KEY', message, field: 'Idempotency-Key' } };
}

/**
 * Validates a publish request body: one event or an array of events, all or
 * nothing. `headerKey` is the `Idempotency-Key` header: for a single event
 * only (a batch names a key per event), and equal to the event's own
 * `idempotency_key` when both are given.
 */
export function checkPublishBody(body: unknown, intake: Intake, maxMessageBytes: number, headerKey?: string | string[]): PublishCheck {
  const batch = Array.isArray(body);
  const items: unknown[] = batch ? (body as unknown[]) : [body];
  if (batch && (items.length === 0 || items.length > MAX_BATCH)) {
    return { ok: false, status: 400, body: { error: 'GW_ERR_BAD_BATCH', message: `a batch must hold 1 to ${MAX_BATCH} events` } };
  }
  if (headerKey !== undefined) {
    if (typeof headerKey !== 'string' || !IDEMPOTENCY_KEY_RE.test(headerKey)) {
      return badKey(`the Idempotency-Key header must be one value of 1 to ${MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces)`);
    }
    if (batch) return badKey(`the Idempotency-Key header is for a single event: give each event of a batch its own "${IDEMPOTENCY_FIELD}"`);
  }
  const events: FrappeEvent[] = [];
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    const text = encodeOrNull(() => JSON.stringify(item) ?? '');
    // A value too deep to stringify is refused by validation below (too_deep).
    const size = text === null ? 0 : Buffer.byteLength(text);
    if (text !== null && size > maxMessageBytes) {
      // Counted as an `oversized` drop (without parsing it again).
      intake.raw(text, 'api');
      return {
        ok: false,
        status: 413,
        body: {
          error: 'GW_ERR_EVENT_TOO_LARGE',
          message: `event of ${size} bytes exceeds the limit of ${maxMessageBytes}`,
          ...(batch ? { index: i } : {}),
        },
      };
    }
    const r = intake.object(item, 'api');
    if (!r.ok) {
      return {
        ok: false,
        status: 400,
        body: { error: 'GW_ERR_BAD_EVENT', message: r.detail, ...(r.field ? { field: r.field } : {}), ...(batch ? { index: i } : {}) },
      };
    }
    if (headerKey === undefined) {
      events.push(r.value);
      continue;
    }
    if (r.value.idempotencyKey !== undefined && r.value.idempotencyKey !== headerKey) {
      return badKey(`the Idempotency-Key header and the event's "${IDEMPOTENCY_FIELD}" differ`);
    }
    events.push({ ...r.value, idempotencyKey: headerKey });
  }
  return { ok: true, events };
}

/**
 * The answer to a publish that failed (README "Operations"): 503 only when
 * nothing was handed to Redis, 502 when Redis refused every event, 504 when
 * the events were sent and not confirmed, and for any failure whose outcome
 * is not known (never a 503 that might be delivered).
 */
export function publishFailureAnswer(err: unknown): { status: 502 | 503 | 504; body: { error: string; message: string } } {
  const code = err instanceof GatewayError ? err.code : null;
  const why = errorMessage(err);
  if (code === 'GW_ERR_REDIS_UNAVAILABLE') {
    return { status: 503, body: { error: code, message: `could not publish: ${why}; no event was delivered, retrying is safe` } };
  }
  if (code === 'GW_ERR_REDIS_REFUSED') {
    return { status: 502, body: { error: code, message: `could not publish: ${why}; no event was delivered` } };
  }
  return {
    status: 504,
    body: {
      error: 'GW_ERR_PUBLISH_UNCONFIRMED',
      message: `the events were sent to redis but not confirmed (${why}): they may or may not be delivered; a retry with the same idempotency keys is delivered at most once`,
    },
  };
}

export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

export function bearerMatches(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!m || !m[1]) return false;
  const a = Buffer.from(m[1]);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}
