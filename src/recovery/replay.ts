import type { Socket } from 'socket.io';
import { closeEventArgs, compareOffsets, sitePacket } from '../events/encode';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { HistoryReader, Unrecoverable } from './history';
import type { ReplayGate } from './replay-gate';
import { socketPacket, writeToEngine } from '../shared/io-internals';

/** Tells the page it may have missed updates (docs: README, "Session recovery"). Payload `{ reason }`. */
export const MISSED_EVENT = 'rtg_missed_updates';
/** The event that hands a fresh client its first offset. */
export const SESSION_EVENT = 'rtg_session';

export type MissedReason = Unrecoverable | 'expired' | 'no_history' | 'history_unreadable' | 'overflow';

/** Where missed events come from (a cluster with history on). */
export interface ReplaySource {
  readonly history: HistoryReader;
  readonly gate: ReplayGate;
  /** Off: packets take socket.io's packet path instead of pre-encoded writes. */
  readonly fastPath: boolean;
}

function write(socket: Socket, packet: string, fastPath: boolean): void {
  if (fastPath) {
    writeToEngine(socket, [packet], { preEncoded: true });
    return;
  }
  const data = JSON.parse(packet.slice(packet.indexOf(',') + 1)) as unknown[];
  socketPacket(socket, { type: 2, data });
}

/** Writes what was held for the socket, minus what `covered` (the last history id read) already includes. */
function releaseHeld(socket: Socket, src: ReplaySource, covered: string | null, metrics: Metrics): void {
  // A socket gone meanwhile keeps no floor (its disconnect already cleared the gate).
  const { held, dropped } = src.gate.release(socket.id, socket.connected ? covered : null);
  if (dropped > 0) {
    metrics.eventsDropped.inc({ reason: 'replay_overflow' }, dropped);
    socket.emit(MISSED_EVENT, { reason: 'overflow' });
  }
  for (const h of held) {
    if (!socket.connected) continue;
    if (covered !== null && h.offset !== null && compareOffsets(h.offset, covered) <= 0) continue;
    write(socket, h.packet, src.fastPath);
  }
}

/**
 * A recovered socket: its rooms are back and subscribed (socket.io joined
 * them before the middlewares, whose own joins are confirmed after them on
 * the same connection), so every event after `offset` is either in history
 * already or arrives live from now on. Live packets are held while history
 * is read; the socket gets the missed events of its rooms (and room-less
 * ones) in order, then the held packets the history did not cover.
 * socket.io would write `missedPackets` before the middlewares re-checked the
 * credential and before the socket can receive live broadcasts, which is why
 * the replay happens here instead of in `restoreSession`.
 */
export function replayMissed(socket: Socket, offset: string, src: ReplaySource, metrics: Metrics, log: Logger): Promise<void> {
  const p = replay(socket, offset, src, metrics, log);
  running.set(socket, p);
  const forget = (): boolean => running.delete(socket);
  p.then(forget, forget);
  return p;
}

/** Replays being read and written, per socket. */
const running = new WeakMap<Socket, Promise<void>>();

/**
 * The replay of a socket that just connected, while it runs: part of its
 * handshake's cost, so admission (GATEWAY_ADMISSION_CONCURRENCY) keeps the
 * handshake's slot until it is written.
 */
export function replayOf(socket: Socket): Promise<void> | undefined {
  return running.get(socket);
}

async function replay(socket: Socket, offset: string, src: ReplaySource, metrics: Metrics, log: Logger): Promise<void> {
  src.gate.hold(socket.id);
  const site = socket.nsp.name.slice(1);
  let covered: string | null;
  let replayed = 0;
  try {
    covered = await src.history.readAfter(offset, (e) => {
      if (!socket.connected) return;
      if (e.namespace === '' || (e.namespace === site && socket.rooms.has(e.room))) {
        write(socket, sitePacket(site, closeEventArgs(e.args, e.id)), src.fastPath);
        replayed++;
      }
    });
    // Trimming between the check and the read would have cut the front of what we read.
    const late = await src.history.check(offset);
    if (late !== null) socket.emit(MISSED_EVENT, { reason: late });
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'missed events unreadable');
    socket.emit(MISSED_EVENT, { reason: 'history_unreadable' });
    covered = null;
  }
  releaseHeld(socket, src, covered, metrics);
  metrics.recoveryReplayed.inc(replayed);
}

/**
 * New sockets' first offset: the history's current position, so a later
 * recovery replays exactly what came after their connection. Their live
 * packets are already held (`gate.hold`) and stay held until it is written,
 * so a client's last offset never moves back. One read of the position
 * serves them all: it starts after every hold, so each socket's offset still
 * covers whatever it received before its hold (a connect storm reads once
 * per batch, not once per socket).
 */
export async function handOutHeldOffsets(sockets: readonly Socket[], src: ReplaySource, metrics: Metrics, log: Logger): Promise<void> {
  let current: string | null = null;
  try {
    current = await src.history.current();
  } catch (err) {
    log.debug({ err: errorMessage(err) }, 'history position unreadable');
  }
  for (const socket of sockets) {
    if (current !== null && socket.connected) socket.emit(SESSION_EVENT, current);
    releaseHeld(socket, src, null, metrics);
  }
}
