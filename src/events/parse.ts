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
  /**
   * The publisher's idempotency key (`idempotency_key` on the wire), only
   * when it gave one: the leader broadcasts at most one event per key and
   * namespace within GATEWAY_IDEMPOTENCY_WINDOW_MS (docs/protocol.md section 2).
   */
  readonly idempotencyKey?: string;
}

export const DROP_REASONS = [
  'oversized',
  'malformed_json',
  'not_object',
  'bad_event',
  'bad_room',
  'bad_namespace',
  'no_namespace',
  'reserved_event',
  'too_deep',
  'bad_idempotency_key',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

export type ParseResult =
  | { readonly ok: true; readonly value: FrappeEvent }
  | { readonly ok: false; readonly reason: DropReason; readonly field?: string; readonly detail: string };

const MAX_EVENT_NAME = 256;
const MAX_ROOM = 1024;
const MAX_NAMESPACE = 253;
/** Idempotency keys: 1 to 128 visible ASCII characters (no spaces, no control characters). */
export const MAX_IDEMPOTENCY_KEY = 128;
export const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,128}$/;
/** The event field that carries the key. */
export const IDEMPOTENCY_FIELD = 'idempotency_key';
// A site name is a hostname; a namespace with '/' or whitespace can never match one.
const NAMESPACE_RE = /^[^\s/]+$/;

/**
 * Names Socket.IO and EventEmitter reserve (docs/protocol.md section 2): a
 * local emit of one throws, and a client's parser closes the connection on one.
 */
export const RESERVED_EVENTS: ReadonlySet<string> = new Set([
  'connect',
  'connect_error',
  'disconnect',
  'disconnecting',
  'newListener',
  'removeListener',
]);

/**
 * Deepest nesting of objects and arrays accepted, counting the event object as
 * level 1 (docs/protocol.md section 2). Encoders downstream recurse; a bound
 * here keeps them far from the stack limit. Frappe's own events nest a few levels.
 */
export const MAX_DEPTH = 64;

/**
 * Bracket depth of raw JSON text, scanned without recursion and before
 * JSON.parse (cheaper than parsing what will be refused). Brackets inside
 * strings do not count. Returns true as soon as the depth exceeds `max`.
 */
export function rawTooDeep(raw: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (inString) {
      if (c === 0x5c /* backslash: skip the escaped character */) i++;
      else if (c === 0x22 /* " */) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > max) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) depth--;
  }
  return false;
}

/** The same bound for an already-parsed value, with an explicit stack (no recursion). */
export function valueTooDeep(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  for (let top = stack.pop(); top !== undefined; top = stack.pop()) {
    const [v, depth] = top;
    if (v === null || typeof v !== 'object') continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? (v as unknown[]) : Object.values(v as Record<string, unknown>)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}

// The refusals that do not depend on the input are built once: under a flood
// of junk, each drop would otherwise allocate its result and message.
const TOO_DEEP: ParseResult = {
  ok: false,
  reason: 'too_deep',
  field: 'message',
  detail: `objects and arrays nested deeper than ${MAX_DEPTH} levels`,
};
const NOT_OBJECT: ParseResult = { ok: false, reason: 'not_object', detail: 'event must be a JSON object' };
const BAD_EVENT: ParseResult = {
  ok: false,
  reason: 'bad_event',
  field: 'event',
  detail: `"event" must be a non-empty string of at most ${MAX_EVENT_NAME} characters`,
};
const BAD_ROOM: ParseResult = {
  ok: false,
  reason: 'bad_room',
  field: 'room',
  detail: `"room" must be a string of at most ${MAX_ROOM} characters or null`,
};
export const BAD_IDEMPOTENCY_KEY: ParseResult = {
  ok: false,
  reason: 'bad_idempotency_key',
  field: IDEMPOTENCY_FIELD,
  detail: `"${IDEMPOTENCY_FIELD}" must be 1 to ${MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces) or absent`,
};
const BAD_NAMESPACE: ParseResult = {
  ok: false,
  reason: 'bad_namespace',
  field: 'namespace',
  detail: '"namespace" must be a site name (no "/" or spaces) or null',
};

/** Parses one raw channel message. `size` is its length in bytes. */
export function parseRawEvent(raw: string, size: number, maxBytes: number): ParseResult {
  if (size > maxBytes) {
    return { ok: false, reason: 'oversized', detail: `message of ${size} bytes exceeds the limit of ${maxBytes}` };
  }
  if (rawTooDeep(raw, MAX_DEPTH)) return TOO_DEEP;
  let obj: unknown;
  try {
    obj = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: 'malformed_json', detail: (err as Error).message };
  }
  return checkShape(obj);
}

/** Validates an already-parsed event object (the publish API's path). */
export function validateEvent(obj: unknown): ParseResult {
  if (valueTooDeep(obj, MAX_DEPTH)) return TOO_DEEP;
  return checkShape(obj);
}

function checkShape(obj: unknown): ParseResult {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) return NOT_OBJECT;
  const o = obj as Record<string, unknown>;
  const { event, room, namespace } = o;
  if (typeof event !== 'string' || event.length === 0 || event.length > MAX_EVENT_NAME) return BAD_EVENT;
  if (RESERVED_EVENTS.has(event)) {
    return {
      ok: false,
      reason: 'reserved_event',
      field: 'event',
      detail: `"event" must not be a name Socket.IO reserves (${[...RESERVED_EVENTS].join(', ')}): "${event}"`,
    };
  }
  if (room !== undefined && room !== null && (typeof room !== 'string' || room.length > MAX_ROOM)) return BAD_ROOM;
  if (
    namespace !== undefined &&
    namespace !== null &&
    (typeof namespace !== 'string' || namespace.length > MAX_NAMESPACE || !NAMESPACE_RE.test(namespace))
  ) {
    return BAD_NAMESPACE;
  }
  const key = o[IDEMPOTENCY_FIELD];
  if (key !== undefined && key !== null && (typeof key !== 'string' || !IDEMPOTENCY_KEY_RE.test(key))) return BAD_IDEMPOTENCY_KEY;
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
  const message = o.message === undefined ? {} : o.message;
  // The key only when given: events without one stay the four fields (and cost nothing downstream).
  if (typeof key === 'string') return { ok: true, value: { event, message, room: r, namespace: ns, idempotencyKey: key } };
  return { ok: true, value: { event, message, room: r, namespace: ns } };
}

/** An event as JSON for the events channel: the wire field names (the key as `idempotency_key`, only when set). */
export function eventToWire(e: FrappeEvent): string {
  const { idempotencyKey, ...rest } = e;
  return JSON.stringify(idempotencyKey === undefined ? rest : { ...rest, [IDEMPOTENCY_FIELD]: idempotencyKey });
}
