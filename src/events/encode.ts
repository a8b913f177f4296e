import { encode as msgpack } from 'notepack.io';
import type { AdapterMode } from '../config';
import type { FrappeEvent } from './parse';

/** Socket.IO packet and adapter message constants (socket.io-parser / socket.io-adapter). */
const PACKET_EVENT = 2;
/** The uid adapters treat as "not one of us": every worker delivers it. */
const EMITTER_UID = 'emitter';

export interface Publication {
  readonly channel: string;
  readonly payload: string | Buffer;
}

/**
 * First byte of a pre-encoded broadcast on a sharded channel. The adapter's
 * own messages start with `{` (JSON) or a msgpack map byte (0x80-0x8f, 0xde,
 * 0xdf), never with this.
 */
export const PRE_ENCODED_MARK = 0x21; // '!'

/**
 * A history offset as the leader's script appends it (a Redis stream id,
 * `<ms>-<seq>`). Anything else in a client's offset (an app handler's string
 * argument, an older gateway's token) is not one of ours.
 */
export const OFFSET_RE = /^\d{1,16}-\d{1,16}$/;

/** Orders two offsets (stream ids); both must match OFFSET_RE. */
export function compareOffsets(a: string, b: string): number {
  const da = a.indexOf('-');
  const db = b.indexOf('-');
  const ma = Number(a.slice(0, da));
  const mb = Number(b.slice(0, db));
  if (ma !== mb) return ma < mb ? -1 : 1;
  const sa = Number(a.slice(da + 1));
  const sb = Number(b.slice(db + 1));
  return sa === sb ? 0 : sa < sb ? -1 : 1;
}

/**
 * The event's argument list `["event",...args` without its closing bracket,
 * so the leader's script can append the history offset as the last argument
 * (socket.io-client records the last string argument as its offset).
 * Throws on a value JSON cannot encode (BigInt, cycles): callers drop it.
 */
export function openEventArgs(event: string, args: readonly unknown[]): string {
  const body = JSON.stringify([event, ...args]);
  return body.slice(0, -1);
}

/** Closes an `openEventArgs` list, with the offset as last argument or without one. */
export function closeEventArgs(open: string, offset: string | null): string {
  return offset === null ? `${open}]` : `${open},"${offset}"]`;
}

/** A Socket.IO EVENT packet for a namespace, from an encoded argument list (socket.io-parser's encoding). */
export function sitePacket(site: string, args: string): string {
  return `${PACKET_EVENT}/${site},${args}`;
}

/**
 * The Socket.IO EVENT packet exactly as socket.io-parser encodes it (before
 * Engine.IO's "4" message prefix): `2/<site>,["event",...args]`.
 */
export function encodeEventPacket(site: string, event: string, args: readonly unknown[]): string {
  return sitePacket(site, JSON.stringify([event, ...args]));
}

/**
 * The offset a pre-encoded argument list carries as its last argument, or
 * null. Offsets contain neither quotes nor commas, so the last `,"` starts it.
 */
export function offsetOf(args: string): string | null {
  if (!args.endsWith('"]')) return null;
  const i = args.lastIndexOf(',"');
  if (i === -1) return null;
  const o = args.slice(i + 2, -2);
  return OFFSET_RE.test(o) ? o : null;
}

/** The sharded adapter's dynamic channel of a room (`<prefix>#/<site>#<room>#`). */
export function roomChannel(adapterPrefix: string, site: string, room: string): string {
  return `${adapterPrefix}#/${site}#${room}#`;
}

/**
 * Encodes a room broadcast for the workers, so the leader can broadcast
 * without namespace objects of its own. Sharded mode publishes on the room's
 * dynamic shard channel (only workers with members in the room are
 * subscribed) a pre-encoded Socket.IO packet that workers write to the
 * room's sockets without decoding or re-encoding it (`realtime/fast-adapter.ts`).
 * Classic mode publishes what the classic adapter itself would (msgpack), on
 * the room channel every worker of the namespace pattern-subscribes to.
 */
export function encodeRoomBroadcast(
  mode: AdapterMode,
  adapterPrefix: string,
  site: string,
  room: string,
  event: string,
  args: readonly unknown[],
): Publication {
  const channel = roomChannel(adapterPrefix, site, room);
  if (mode === 'sharded') {
    return { channel, payload: `!${encodeEventPacket(site, event, args)}` };
  }
  const packet = { type: PACKET_EVENT, data: [event, ...args], nsp: `/${site}` };
  const opts = { rooms: [room], except: [] as string[], flags: {} };
  return { channel, payload: msgpack([EMITTER_UID, packet, opts]) };
}

/** Classic mode: events without a room, as JSON; workers fan them out locally. */
export function encodeAllSites(e: FrappeEvent): string {
  return JSON.stringify({ event: e.event, message: e.message });
}

/**
 * Runs an encoder over an event that came from outside. JSON.parse builds a
 * value of any depth without recursing, but JSON.stringify, msgpack and
 * socket.io-parser recurse: a message nested a few thousand levels deep
 * parses, then overflows the stack once encoded. A consumer that let that
 * throw would die on the event and again on its replay, so the caller drops
 * it instead (`null`).
 */
export function encodeOrNull<T>(encode: () => T): T | null {
  try {
    return encode();
  } catch {
    return null;
  }
}

export function decodeAllSites(raw: string): { event: string; message: unknown } | null {
  try {
    const o = JSON.parse(raw) as { event?: unknown; message?: unknown };
    return typeof o.event === 'string' ? { event: o.event, message: o.message } : null;
  } catch {
    return null;
  }
}
