import { timingSafeEqual } from 'node:crypto';
import type { FrappeEvent } from '../events/parse';
import { encodeOrNull } from '../events/encode';
import type { Intake } from '../events/intake';

export type PublishCheck =
  | { readonly ok: true; readonly events: FrappeEvent[] }
  | { readonly ok: false; readonly status: 400 | 413; readonly body: { error: string; message: string; index?: number; field?: string } };

const MAX_BATCH = 10_000;

/** Validates a publish request body: one event or an array of events, all or nothing. */
export function checkPublishBody(body: unknown, intake: Intake, maxMessageBytes: number): PublishCheck {
  const batch = Array.isArray(body);
  const items: unknown[] = batch ? (body as unknown[]) : [body];
  if (batch && (items.length === 0 || items.length > MAX_BATCH)) {
    return { ok: false, status: 400, body: { error: 'GW_ERR_BAD_BATCH', message: `a batch must hold 1 to ${MAX_BATCH} events` } };
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
    events.push(r.value);
  }
  return { ok: true, events };
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
