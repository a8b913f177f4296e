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
    return true;
  }

  /** Stops holding; returns what was held, in arrival order. */
  release(sid: string): HeldPacket[] {
    const q = this.held.get(sid) ?? [];
    this.held.delete(sid);
    return q;
  }
}
