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
 * First byte of a pre-encoded room broadcast on a sharded room channel. The
 * adapter's own messages start with `{` (JSON) or a msgpack map byte
 * (0x80-0x8f, 0xde, 0xdf), never with this.
 */
export const PRE_ENCODED_MARK = 0x21; // '!'

/**
 * The Socket.IO EVENT packet exactly as socket.io-parser encodes it (before
 * Engine.IO's "4" message prefix): `2/<site>,["event",...args]`.
 */
export function encodeEventPacket(site: string, event: string, args: readonly unknown[]): string {
  return `${PACKET_EVENT}/${site},${JSON.stringify([event, ...args])}`;
}

/**
 * Encodes a room broadcast for the workers, so the leader can broadcast
 * without namespace objects of its own. Sharded mode publishes on the room's
 * dynamic shard channel (only workers with members in the room are
 * subscribed) a pre-encoded Socket.IO packet that workers write to the
 * room's sockets without decoding or re-encoding it (`worker/fast-adapter.ts`).
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
  const nsp = `/${site}`;
  const channel = `${adapterPrefix}#${nsp}#${room}#`;
  if (mode === 'sharded') {
    return { channel, payload: `!${encodeEventPacket(site, event, args)}` };
  }
  const packet = { type: PACKET_EVENT, data: [event, ...args], nsp };
  const opts = { rooms: [room], except: [] as string[], flags: {} };
  return { channel, payload: msgpack([EMITTER_UID, packet, opts]) };
}

/** Events without a room go to every site namespace; workers fan them out locally. */
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
