import type { Socket as NetSocket } from 'node:net';
import type { Namespace, Socket } from 'socket.io';
import { Adapter } from 'socket.io-adapter';
import { PRE_ENCODED_MARK, closeEventArgs, compareOffsets, offsetOf, sitePacket } from '../events/encode';
import type { Metrics } from '../metrics/metrics';
import type { HistoryEntry, HistoryReader } from '../recovery/history';
import { laterOffset } from '../recovery/history';
import type { ReplayGate } from '../recovery/replay-gate';
import { MISSED_EVENT } from '../recovery/replay';
import { errorMessage } from '../shared/errors';
import {
  adapterInternals,
  singleBufferFrame,
  uncorkAll,
  writeFrameDirect,
  writeToEngine,
  type AdapterInternals,
} from '../shared/io-internals';
import type { Logger } from '../shared/logger';
import { conflateIfBackedUp } from './conflation';

/** Marks a packet whose Socket.IO encoding is already known (see `WorkerDelivery.hooks`). */
const PRE_ENCODED = Symbol('preEncoded');

interface PreEncodedPacket {
  type: number;
  data: unknown[];
  nsp: string;
  [PRE_ENCODED]?: string;
}

type HookableAdapter = AdapterInternals & { rooms: Map<string, Set<string>> };

const HOOKED = Symbol('preEncodedEncoder');

/** Lets the adapter's encoder pass pre-encoded packets through (`_encode` then builds the frame once). */
function acceptPreEncoded(h: HookableAdapter & { [HOOKED]?: true }): void {
  if (h[HOOKED]) return;
  h[HOOKED] = true;
  const encoder = h.encoder;
  h.encoder = {
    encode: (packet: unknown) => {
      const pre = (packet as PreEncodedPacket)[PRE_ENCODED];
      return pre !== undefined ? [pre] : encoder.encode(packet);
    },
  };
}

export interface WorkerDeliveryDeps {
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Direct frame writes (GATEWAY_FAST_PATH). */
  readonly fastPath: boolean;
  /** History on: packets carry offsets, a subscriber gap is filled from history. */
  readonly history: HistoryReader | null;
  readonly gate: ReplayGate | null;
  /** The worker's site namespaces (known once the Socket.IO server exists). */
  namespaces(): Iterable<Namespace>;
  existingNamespace(site: string): Namespace | undefined;
}

const ALL_SITES_KEY = '*';

/**
 * A worker's delivery of the leader's broadcasts, room and room-less ones on
 * the one adapter subscriber connection (so Redis's per-connection order is
 * the client's order):
 *  - pre-encoded packets (`!` + packet, `events/encode.ts`) go to the room's
 *    sockets without decoding the JSON and encoding it again; the WebSocket
 *    frame is built once for the whole room and written straight to each
 *    idle WebSocket connection (`writeFrameDirect` in shared/io-internals.ts), unless the fast path is off;
 *  - with history, each channel remembers the last offset it delivered and
 *    drops what is at or below it (a leader re-sending, a gap filled twice);
 *  - when the subscriber connection drops, live packets are held until the
 *    gap is read from history and delivered, then follow.
 */
export class WorkerDelivery {
  private readonly lastByChannel = new Map<string, string>();
  private newest: string | null = null;
  /** Non-null while a subscriber gap is being filled: live packets wait here. */
  private pending: (() => void)[] | null = null;
  private gapFrom: string | null = null;
  private filling = false;
  private lostWhileFilling = false;
  private backWhileFilling: Promise<unknown> | null = null;

  constructor(private readonly d: WorkerDeliveryDeps) {}

  /** The position to fill a gap from if the subscriber drops before any packet arrived. */
  async start(): Promise<void> {
    if (!this.d.history) return;
    try {
      this.newest = laterOffset(this.newest, await this.d.history.current());
    } catch (err) {
      this.d.log.debug({ err: errorMessage(err) }, 'history position unreadable');
    }
  }

  /** Instruments one namespace's adapter (see the class comment). */
  hooks(a: Adapter, nsp: Namespace): Adapter {
    const h = adapterInternals(a) as HookableAdapter;
    const { metrics } = this.d;
    acceptPreEncoded(h);
    if (typeof h.onMessage === 'function') {
      const onMessage = h.onMessage.bind(a);
      h.onMessage = (message, offset) => {
        metrics.broadcastsReceived.inc({ kind: 'adapter' });
        return onMessage(message, offset);
      };
    }
    a.on('delete-room', (room: string) => this.lastByChannel.delete(`${nsp.name}#${room}`));
    if (typeof h.onRawMessage === 'function' && typeof h.channel === 'string') {
      const onRawMessage = h.onRawMessage.bind(a);
      const prefix = h.channel;
      h.onRawMessage = (raw, channel) => {
        if (raw[0] !== PRE_ENCODED_MARK) return onRawMessage(raw, channel);
        const ch = channel.toString();
        if (!ch.startsWith(prefix) || ch.length <= prefix.length) return undefined;
        metrics.broadcastsReceived.inc({ kind: 'adapter' });
        const room = ch.slice(prefix.length, -1);
        const packet = raw.toString('utf8', 1);
        this.ingest(`${nsp.name}#${room}`, packet, () => this.toRoom(nsp, room, packet));
        return undefined;
      };
    }
    return a;
  }

  /** A room-less broadcast (`!` + argument list) from the all-sites channel. */
  onAllSites(raw: Buffer): void {
    if (raw[0] !== PRE_ENCODED_MARK) return;
    this.d.metrics.broadcastsReceived.inc({ kind: 'all_sites' });
    const args = raw.toString('utf8', 1);
    this.ingest(ALL_SITES_KEY, args, () => this.toAllSites(args));
  }

  /** The subscriber connection closed: hold live packets until the gap is filled. */
  subscriberLost(): void {
    if (!this.d.history) return;
    if (this.filling) this.lostWhileFilling = true;
    if (this.pending !== null) return;
    this.pending = [];
    this.gapFrom = this.newest;
  }

  /**
   * The subscriber is back and `resubscribed` resolved (every channel
   * subscribed again): what was broadcast since the last packet seen is read
   * from history and delivered, then the held live packets.
   */
  async subscriberBack(resubscribed: Promise<unknown>): Promise<void> {
    const history = this.d.history;
    // One fill at a time; a connection lost again during it gets its own fill on the next 'ready'.
    if (!history || this.pending === null) return;
    if (this.filling) {
      this.backWhileFilling = resubscribed;
      return;
    }
    this.filling = true;
    this.lostWhileFilling = false;
    this.backWhileFilling = null;
    let filled = 0;
    let missed: string | null;
    try {
      await resubscribed;
      const from = this.gapFrom;
      missed = from === null ? null : await history.check(from);
      if (from !== null && missed === null) {
        await history.readAfter(from, (e) => {
          if (this.fromHistory(e)) filled++;
        });
      }
    } catch (err) {
      this.d.log.warn({ err: errorMessage(err) }, 'subscriber gap fill failed');
      missed = 'history_unreadable';
    }
    if (missed !== null) {
      // Connected clients cannot ask for what they missed: tell them.
      this.d.metrics.eventsDropped.inc({ reason: 'history_gap' });
      this.d.log.warn({ from: this.gapFrom, reason: missed }, 'subscriber gap could not be read from history');
      for (const nsp of this.d.namespaces()) nsp.local.emit(MISSED_EVENT, { reason: missed });
    }
    this.filling = false;
    if (filled > 0) this.d.metrics.gapEvents.inc(filled);
    if (this.lostWhileFilling) {
      this.gapFrom = this.newest;
      const again = this.backWhileFilling;
      if (again) await this.subscriberBack(again);
      return;
    }
    const held = this.pending ?? [];
    this.pending = null;
    for (const run of held) run();
    this.d.log.info({ from: this.gapFrom, filled, held: held.length }, 'subscriber gap filled from history');
  }

  private fromHistory(e: HistoryEntry): boolean {
    if (e.namespace === '') {
      const args = closeEventArgs(e.args, e.id);
      return this.accept(ALL_SITES_KEY, e.id) && (this.toAllSites(args), true);
    }
    const nsp = this.d.existingNamespace(e.namespace);
    if (!nsp || !nsp.adapter.rooms.has(e.room)) return false;
    const packet = sitePacket(e.namespace, closeEventArgs(e.args, e.id));
    return this.accept(`${nsp.name}#${e.room}`, e.id) && (this.toRoom(nsp, e.room, packet), true);
  }

  private ingest(key: string, packet: string, deliver: () => void): void {
    if (!this.d.history) {
      deliver();
      return;
    }
    const offset = offsetOf(packet);
    if (offset === null) {
      // Not the leader's (presence sweeps): no history, no order to keep.
      deliver();
      return;
    }
    if (this.pending !== null) {
      this.pending.push(() => {
        if (this.accept(key, offset)) deliver();
      });
      return;
    }
    if (this.accept(key, offset)) deliver();
  }

  /** Records `offset` as delivered on the channel; false when it already was. */
  private accept(key: string, offset: string): boolean {
    const last = this.lastByChannel.get(key);
    if (last !== undefined && compareOffsets(offset, last) <= 0) {
      this.d.metrics.eventsDeduplicated.inc({ by: 'offset' });
      return false;
    }
    this.lastByChannel.set(key, offset);
    this.newest = laterOffset(this.newest, offset);
    return true;
  }

  private toAllSites(args: string): void {
    for (const nsp of this.d.namespaces()) this.deliver(nsp, null, sitePacket(nsp.name.slice(1), args));
  }

  private toRoom(nsp: Namespace, room: string, packet: string): void {
    if (nsp.adapter.rooms.has(room)) this.deliver(nsp, room, packet);
  }

  private deliver(nsp: Namespace, room: string | null, packet: string): void {
    deliverPreEncoded(nsp, room, packet, this.d.fastPath, this.d.gate?.active ? this.d.gate : null, this.d.metrics);
  }
}

/**
 * Local delivery of a pre-encoded packet (it must not be published again) to
 * a room's sockets, or every socket of the namespace when `room` is null.
 * Sockets whose replay is in progress get it through `gate` instead.
 */
export function deliverPreEncoded(
  nsp: Namespace,
  room: string | null,
  packet: string,
  fastPath: boolean,
  gate: ReplayGate | null,
  /** Set in workers: conflation of configured rooms for backed-up sockets (docs/mqtt.md). */
  metrics: Metrics | null = null,
): void {
  const h = adapterInternals(nsp.adapter) as HookableAdapter;
  const offset = gate ? offsetOf(packet) : null;
  if (!fastPath) {
    const rooms = new Set<string>(room === null ? [] : [room]);
    // socket.io's own path: decode, then the in-memory adapter's broadcast.
    const except = new Set<string>();
    if (gate) h.apply({ rooms, except: new Set() }, (s) => offerToGate(gate, s.id, packet, offset, metrics) && except.add(s.id));
    const data = JSON.parse(packet.slice(packet.indexOf(',') + 1)) as unknown[];
    Adapter.prototype.broadcast.call(nsp.adapter, { type: 2, data, nsp: nsp.name }, { rooms, except, flags: {} });
    return;
  }
  acceptPreEncoded(h);
  const pre: PreEncodedPacket = { type: 2, data: [], nsp: nsp.name, [PRE_ENCODED]: packet };
  const packetOpts: Record<string, unknown> = { preEncoded: true };
  const encoded = h._encode(pre, packetOpts);
  // One buffer for the whole frame: each direct write is then one plain
  // socket write instead of cork, two writes, uncork and a writev.
  const frame = singleBufferFrame(packetOpts.wsPreEncodedFrame);
  // engine.io's own write (the fallback below, conflation) sends the same one buffer.
  if (frame !== undefined) packetOpts.wsPreEncodedFrame = frame;
  const conflate = room !== null && metrics !== null;
  const corked = room === null ? backlogCork(nsp) : null;
  const each = (socket: Socket): void => {
    if (gate && offerToGate(gate, socket.id, packet, offset, metrics)) return;
    if (conflate && conflateIfBackedUp(socket, room, encoded, packetOpts, metrics)) return;
    if (frame === undefined || !writeFrameDirect(socket, frame, corked)) {
      writeToEngine(socket, encoded, packetOpts);
    }
  };
  // The namespace's sockets (or the one room's) directly: what the adapter's
  // `apply` visits for one room or none, without its per-socket id set
  // (one room has no duplicates to skip) or the sids-to-socket lookup.
  if (room === null) {
    for (const socket of nsp.sockets.values()) each(socket);
    return;
  }
  const ids = nsp.adapter.rooms.get(room);
  if (!ids) return;
  for (const id of ids) {
    const socket = nsp.sockets.get(id);
    if (socket) each(socket);
  }
}

/** Connections corked by site broadcasts of the current turn (see `backlogCork`). */
const corkedThisTurn: NetSocket[] = [];
/** Namespaces that had a site broadcast on the current turn. */
const broadcastThisTurn = new Set<Namespace>();

function endTurn(): void {
  broadcastThisTurn.clear();
  uncorkAll(corkedThisTurn);
}

/**
 * A worker that is behind reads several site broadcasts in one chunk from
 * its subscriber connection and delivers them on one event-loop turn: 2,000
 * clients x k frames = 2,000 x k socket writes. The first site broadcast of
 * a namespace on a turn is written at once (nothing to merge it with, and nothing held when
 * the worker keeps up); from the second on, each directly written connection
 * is corked, and at the end of the turn (a microtask, after the chunk's
 * other messages) uncorked: the 2nd..k-th frames go out in one writev per
 * connection. Returns the list to cork into, or null for a direct write.
 */
function backlogCork(nsp: Namespace): NetSocket[] | null {
  if (broadcastThisTurn.has(nsp)) return corkedThisTurn;
  if (broadcastThisTurn.size === 0) queueMicrotask(endTurn);
  broadcastThisTurn.add(nsp);
  return null;
}

/** True when the gate took the packet (held during a replay, or a live copy of what the replay wrote: counted, dropped). */
function offerToGate(gate: ReplayGate, sid: string, packet: string, offset: string | null, metrics: Metrics | null): boolean {
  const r = gate.offerLive(sid, packet, offset);
  if (r === 'duplicate') metrics?.recoveryLiveDuplicates.inc();
  return r !== 'write';
}
