/**
 * The lean client's wire format, parsed minimally (websocket transport, one
 * Engine.IO packet per frame). Pure functions, unit-tested; the full codec
 * lives in k6/lib/codec.ts, this is the hot-path subset.
 */

export type Frame =
  | { kind: 'open' }
  | { kind: 'ping' }
  | { kind: 'close' }
  | { kind: 'connect'; nsp: string }
  | { kind: 'connect_error'; nsp: string; message: string }
  | { kind: 'disconnect'; nsp: string }
  | { kind: 'event'; nsp: string; name: string; body: string }
  | { kind: 'other' };

/** The namespace of a Socket.IO packet string (after the Engine.IO '4'), '/' when absent; and where the payload starts. */
function nspOf(frame: string, from: number): { nsp: string; rest: number } {
  if (frame.charCodeAt(from) !== 47 /* '/' */) return { nsp: '/', rest: from };
  const comma = frame.indexOf(',', from);
  if (comma < 0) return { nsp: frame.slice(from), rest: frame.length };
  return { nsp: frame.slice(from, comma), rest: comma + 1 };
}

/** Classifies one websocket text frame. Event names are read without JSON-parsing the arguments. */
export function parseFrame(frame: string): Frame {
  const eio = frame.charCodeAt(0);
  if (eio === 50 /* '2' */) return { kind: 'ping' };
  if (eio === 48 /* '0' */) return { kind: 'open' };
  if (eio === 49 /* '1' */) return { kind: 'close' };
  if (eio !== 52 /* '4' */) return { kind: 'other' };
  const sio = frame.charCodeAt(1);
  const { nsp, rest } = nspOf(frame, 2);
  const body = frame.slice(rest);
  switch (sio) {
    case 48: // '0' CONNECT
      return { kind: 'connect', nsp };
    case 49: // '1' DISCONNECT
      return { kind: 'disconnect', nsp };
    case 52: {
      // '4' CONNECT_ERROR {"message": "..."}
      let message = body;
      try {
        const o = JSON.parse(body) as { message?: unknown };
        if (typeof o.message === 'string') message = o.message;
      } catch {
        // keep raw
      }
      return { kind: 'connect_error', nsp, message };
    }
    case 50: {
      // '2' EVENT, optional ack id digits before '['
      let i = 0;
      while (i < body.length && body.charCodeAt(i) !== 91 /* '[' */) i++;
      const b = body.slice(i);
      if (b.charCodeAt(1) !== 34 /* '"' */) return { kind: 'other' };
      const end = b.indexOf('"', 2);
      if (end < 0) return { kind: 'other' };
      return { kind: 'event', nsp, name: b.slice(2, end), body: b };
    }
    default:
      return { kind: 'other' };
  }
}

/** Reads a number that follows `"key":` in a JSON text (no full parse); NaN if absent. */
export function numberAfter(text: string, key: string): number {
  const at = text.indexOf(`"${key}":`);
  if (at < 0) return NaN;
  let i = at + key.length + 3;
  while (text.charCodeAt(i) === 32) i++;
  let j = i;
  while (j < text.length) {
    const c = text.charCodeAt(j);
    // digits, '.', '-', '+', 'e', 'E'
    if ((c >= 48 && c <= 57) || c === 46 || c === 45 || c === 43 || c === 101 || c === 69) j++;
    else break;
  }
  return j > i ? Number(text.slice(i, j)) : NaN;
}

/** The bench payload `{"s": seq, "t": publishedAtMs}`: sequence and publish time. */
export function benchFields(body: string): { seq: number; t: number } {
  return { seq: numberAfter(body, 's'), t: numberAfter(body, 't') };
}

export const frames = {
  connect: (nsp: string): string => `40${nsp},`,
  event: (nsp: string, args: readonly unknown[]): string => `42${nsp},${JSON.stringify(args)}`,
  pong: '3',
};

/**
 * A Frappe-shaped events-channel message (json.dumps(indent=1, sort_keys=True)),
 * built by hand: the publisher must not spend its CPU on JSON.stringify.
 */
export function frappeEvent(event: string, namespace: string, room: string | null, seq: number, t: number, pad = '', key?: string): string {
  const p = pad === '' ? '' : `,\n  "p": "${pad}"`;
  const r = room === null ? 'null' : JSON.stringify(room);
  const k = key === undefined ? '' : `,\n "idempotency_key": "${key}"`;
  return `{\n "event": "${event}",\n "message": {\n  "s": ${seq},\n  "t": ${t}${p}\n },\n "namespace": "${namespace}",\n "room": ${r}${k}\n}`;
}

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes of one machine. */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}
