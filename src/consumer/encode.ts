import { encode as msgpack } from 'notepack.io';
import type { AdapterMode } from '../config';
import type { FrappeEvent } from '../frappe/message';

/** Socket.IO packet and adapter message constants (socket.io-parser / socket.io-adapter). */
const PACKET_EVENT = 2;
const MESSAGE_BROADCAST = 3;
/** The uid adapters treat as "not one of us": every worker delivers it. */
const EMITTER_UID = 'emitter';

export interface Publication {
  readonly channel: string;
  readonly payload: string | Buffer;
}

/**
 * Encodes a room broadcast exactly as a Socket.IO Redis adapter would publish
 * it, so the leader can broadcast without namespace objects of its own:
 * sharded mode publishes JSON on the room's dynamic channel (only workers with
 * members in the room are subscribed to it); classic mode publishes msgpack on
 * the room channel every worker of the namespace pattern-subscribes to.
 */
export function encodeRoomBroadcast(mode: AdapterMode, adapterPrefix: string, site: string, room: string, event: string, args: readonly unknown[]): Publication {
  const nsp = `/${site}`;
  const channel = `${adapterPrefix}#${nsp}#${room}#`;
  const packet = { type: PACKET_EVENT, data: [event, ...args], nsp };
  const opts = { rooms: [room], except: [] as string[], flags: {} };
  if (mode === 'sharded') {
    return { channel, payload: JSON.stringify({ uid: EMITTER_UID, nsp, type: MESSAGE_BROADCAST, data: { opts, packet } }) };
  }
  return { channel, payload: msgpack([EMITTER_UID, packet, opts]) };
}

/** Events without a room go to every site namespace; workers fan them out locally. */
export function encodeAllSites(e: FrappeEvent): string {
  return JSON.stringify({ event: e.event, message: e.message });
}

export function decodeAllSites(raw: string): { event: string; message: unknown } | null {
  try {
    const o = JSON.parse(raw) as { event?: unknown; message?: unknown };
    return typeof o.event === 'string' ? { event: o.event, message: o.message } : null;
  } catch {
    return null;
  }
}
