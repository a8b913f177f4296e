/**
 * Live packets of sockets whose replay is in progress. While a socket's
 * missed events are read from history, live broadcasts to it are held here
 * (the worker's delivery asks `holds` per socket); once the replay is
 * written they follow, minus those the replay already covered, so the client
 * sees missed events first, in order, and nothing twice.
 *
 * The history is read on the command connection, live packets arrive on the
 * adapter's subscriber connection: Redis gives no order between the two, so
 * the live copy of an event the replay already wrote can arrive after the
 * replay finished (the subscriber connection being behind under load). After
 * a release the socket keeps a floor, the last history id the replay read,
 * for FLOOR_MS: live packets at or below it are dropped (counted in
 * gateway_recovery_live_duplicates_total). The floor is not lifted by the
 * first packet above it: with Redis Cluster the rooms' channels come over
 * several connections, in no order between them.
 */
import { compareOffsets } from '../events/encode';

export interface HeldPacket {
  /** The Socket.IO packet (`2/<site>,[...]`). */
  readonly packet: string;
  /** The history offset it carries, or null (presence, app handlers: not in history). */
  readonly offset: string | null;
}

/** Packets held per socket before the replay is abandoned as hopeless (a stuck Redis). */
const MAX_HELD = 10_000;
/** Upper bound on how long a floor outlives its replay (a socket that gets nothing live). */
export const FLOOR_MS = 10_000;

export type Offered = 'write' | 'held' | 'duplicate';

export class ReplayGate {
  private readonly held = new Map<string, HeldPacket[]>();
  private readonly overflowed = new Map<string, number>();
  private readonly floors = new Map<string, { offset: string; timer: NodeJS.Timeout }>();

  get active(): boolean {
    return this.held.size > 0 || this.floors.size > 0;
  }

  hold(sid: string): void {
    this.clearFloor(sid);
    if (!this.held.has(sid)) this.held.set(sid, []);
  }

  /** True when the caller must not write the packet: held, or the replay already wrote it (`offerLive` tells which). */
  offer(sid: string, packet: string, offset: string | null): boolean {
    return this.offerLive(sid, packet, offset) !== 'write';
  }

  offerLive(sid: string, packet: string, offset: string | null): Offered {
    const q = this.held.get(sid);
    if (!q) {
      const floor = this.floors.get(sid);
      if (floor === undefined || offset === null) return 'write';
      return compareOffsets(offset, floor.offset) <= 0 ? 'duplicate' : 'write';
    }
    if (q.length < MAX_HELD) q.push({ packet, offset });
    else this.overflowed.set(sid, (this.overflowed.get(sid) ?? 0) + 1);
    return 'held';
  }

  /**
   * Stops holding; returns what was held, in arrival order, and how many
   * packets did not fit. `floor`: the last history id the replay read
   * (live packets at or below it are dropped for FLOOR_MS, see above).
   */
  release(sid: string, floor: string | null = null): { held: HeldPacket[]; dropped: number } {
    const held = this.held.get(sid) ?? [];
    const dropped = this.overflowed.get(sid) ?? 0;
    this.held.delete(sid);
    this.overflowed.delete(sid);
    this.clearFloor(sid);
    if (floor !== null) {
      const timer = setTimeout(() => this.floors.delete(sid), FLOOR_MS);
      timer.unref();
      this.floors.set(sid, { offset: floor, timer });
    }
    return { held, dropped };
  }

  /** The socket is gone: forget everything about it. */
  forget(sid: string): void {
    this.held.delete(sid);
    this.overflowed.delete(sid);
    this.clearFloor(sid);
  }

  private clearFloor(sid: string): void {
    const f = this.floors.get(sid);
    if (f === undefined) return;
    clearTimeout(f.timer);
    this.floors.delete(sid);
  }
}
