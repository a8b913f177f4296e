/**
 * Live packets of sockets whose replay is in progress. While a socket's
 * missed events are read from history, live broadcasts to it are held here
 * (the worker's delivery asks `holds` per socket); once the replay is
 * written they follow, minus those the replay already covered, so the client
 * sees missed events first, in order, and nothing twice.
 */
export interface HeldPacket {
  /** The Socket.IO packet (`2/<site>,[...]`). */
  readonly packet: string;
  /** The history offset it carries, or null (presence, app handlers: not in history). */
  readonly offset: string | null;
}

/** Packets held per socket before the replay is abandoned as hopeless (a stuck Redis). */
const MAX_HELD = 10_000;

export class ReplayGate {
  private readonly held = new Map<string, HeldPacket[]>();
  private readonly overflowed = new Map<string, number>();

  get active(): boolean {
    return this.held.size > 0;
  }

  hold(sid: string): void {
    if (!this.held.has(sid)) this.held.set(sid, []);
  }

  /** True when the packet was held (the caller must not write it). */
  offer(sid: string, packet: string, offset: string | null): boolean {
    const q = this.held.get(sid);
    if (!q) return false;
    if (q.length < MAX_HELD) q.push({ packet, offset });
    else this.overflowed.set(sid, (this.overflowed.get(sid) ?? 0) + 1);
    return true;
  }

  /** Stops holding; returns what was held, in arrival order, and how many packets did not fit. */
  release(sid: string): { held: HeldPacket[]; dropped: number } {
    const held = this.held.get(sid) ?? [];
    const dropped = this.overflowed.get(sid) ?? 0;
    this.held.delete(sid);
    this.overflowed.delete(sid);
    return { held, dropped };
  }
}
