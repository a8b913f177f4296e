/**
 * Parsing of realtime events as Frappe publishes them on the `events` channel
 * (docs/protocol.md section 2). The same validation serves the HTTP publish API.
 */

export interface FrappeEvent {
  readonly event: string;
  /** Any JSON value; `{}` when the publisher left it out. */
  readonly message: unknown;
  /** null = every site namespace. */
  readonly room: string | null;
  /** Site name without the leading `/`; null only when room is null. */
  readonly namespace: string | null;
}

export const DROP_REASONS = [
  'oversized',
  'malformed_json',
  'not_object',
  'bad_event',
  'bad_room',
  'bad_namespace',
  'no_namespace',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type ParseResult =
  | { readonly ok: true; readonly value: FrappeEvent }
  | { readonly ok: false; readonly reason: DropReason; readonly field?: string; readonly detail: string };

const MAX_EVENT_NAME = 256;
const MAX_ROOM = 1024;
const MAX_NAMESPACE = 253;
// A site name is a hostname; a namespace with '/' or whitespace can never match one.
const NAMESPACE_RE = /^[^\s/]+$/;

/** Parses one raw channel message. `size` is its length in bytes. */
export function parseRawEvent(raw: string, size: number, maxBytes: number): ParseResult {
  if (size > maxBytes) {
    return { ok: false, reason: 'oversized', detail: `message of ${size} bytes exceeds the limit of ${maxBytes}` };
  }
  let obj: unknown;
  try {
    obj = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: 'malformed_json', detail: (err as Error).message };
  }
  return validateEvent(obj);
}

/** Validates an already-parsed event object. */
export function validateEvent(obj: unknown): ParseResult {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { ok: false, reason: 'not_object', detail: 'event must be a JSON object' };
  }
  const o = obj as Record<string, unknown>;
  const { event, room, namespace } = o;
  if (typeof event !== 'string' || event.length === 0 || event.length > MAX_EVENT_NAME) {
    return {
      ok: false,
      reason: 'bad_event',
      field: 'event',
      detail: `"event" must be a non-empty string of at most ${MAX_EVENT_NAME} characters`,
    };
  }
  if (room !== undefined && room !== null && (typeof room !== 'string' || room.length > MAX_ROOM)) {
    return { ok: false, reason: 'bad_room', field: 'room', detail: `"room" must be a string of at most ${MAX_ROOM} characters or null` };
  }
  if (
    namespace !== undefined &&
    namespace !== null &&
    (typeof namespace !== 'string' || namespace.length > MAX_NAMESPACE || !NAMESPACE_RE.test(namespace))
  ) {
    return { ok: false, reason: 'bad_namespace', field: 'namespace', detail: '"namespace" must be a site name (no "/" or spaces) or null' };
  }
  const r = typeof room === 'string' && room !== '' ? room : null;
  const ns = typeof namespace === 'string' ? namespace : null;
  if (r !== null && ns === null) {
    return {
      ok: false,
      reason: 'no_namespace',
      field: 'namespace',
      detail: `"room" is set ("${r.slice(0, 64)}") but "namespace" is missing`,
    };
  }
  return { ok: true, value: { event, message: o.message === undefined ? {} : o.message, room: r, namespace: ns } };
}
