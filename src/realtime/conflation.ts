/**
 * Conflation for slow clients (GATEWAY_CUSTOM_ROOMS `conflate: true`,
 * docs/mqtt.md): while a client's outbound queue is backed up, a broadcast to
 * one of its conflate rooms waits in a per-socket slot instead of the queue,
 * and a newer broadcast to that room replaces it (counted). The slots are
 * written out, oldest room first, once the queue went down. Other rooms and
 * other clients are unaffected. Called from the worker fast path
 * (`fast-adapter.ts`) for the leader's pre-encoded broadcasts.
 */
import type { Socket } from 'socket.io';
import { conflationOf } from '../frappe/custom-rooms';
import type { Metrics } from '../metrics/metrics';
import { outboundQueue, writeToEngine } from '../shared/io-internals';

/** How often a socket with waiting slots is checked for a shorter queue. */
const FLUSH_CHECK_MS = 20;

interface Slot {
  readonly encoded: unknown[];
  readonly opts: Record<string, unknown>;
}

interface Pending {
  readonly slots: Map<string, Slot>;
  timer: NodeJS.Timeout | null;
}

const pendingBySocket = new WeakMap<Socket, Pending>();

function backedUp(socket: Socket, packets: number, bytes: number): boolean {
  const q = outboundQueue(socket);
  return q.packets >= packets || q.bytes >= bytes;
}

function write(socket: Socket, slot: Slot): void {
  writeToEngine(socket, slot.encoded, slot.opts);
}

/**
 * True when the broadcast was taken over (held or conflated): the caller
 * must not write it. False: deliver as usual.
 */
export function conflateIfBackedUp(
  socket: Socket,
  room: string,
  encoded: unknown[],
  opts: Record<string, unknown>,
  metrics: Metrics,
): boolean {
  const settings = conflationOf(socket);
  if (!settings) return false;
  const pattern = settings.patternOf(room);
  if (pattern === null) return false;
  let pending = pendingBySocket.get(socket);
  const held = pending?.slots.has(room) === true;
  // A room with a waiting slot keeps conflating until it is written out, so
  // a newer event never overtakes an older one of the same room.
  if (!held && !backedUp(socket, settings.backlogPackets, settings.backlogBytes)) return false;
  if (held) metrics.conflatedEvents.inc({ room_pattern: pattern });
  if (!pending) {
    const p: Pending = { slots: new Map(), timer: null };
    pendingBySocket.set(socket, p);
    socket.once('disconnect', () => {
      if (p.timer) clearInterval(p.timer);
      p.slots.clear();
      pendingBySocket.delete(socket);
    });
    pending = p;
  }
  // Delete first: a replaced slot moves to the end, after rooms that waited longer.
  pending.slots.delete(room);
  pending.slots.set(room, { encoded, opts });
  if (!pending.timer) {
    const p = pending;
    p.timer = setInterval(() => {
      if (!socket.connected) return;
      if (backedUp(socket, settings.backlogPackets, settings.backlogBytes)) return;
      if (p.timer) clearInterval(p.timer);
      p.timer = null;
      const slots = [...p.slots.values()];
      p.slots.clear();
      for (const s of slots) write(socket, s);
    }, FLUSH_CHECK_MS);
  }
  return true;
}
