import type { Socket } from 'socket.io';

/**
 * Subscriptions held per socket while Redis is unavailable; beyond, refused.
 * A Frappe page subscribes to a handful of rooms per form it opens.
 */
export const MAX_HELD_SUBSCRIPTIONS = 64;

type Ack = ((ok: boolean) => void) | undefined;

interface Held {
  readonly run: () => void;
  readonly ack: Ack;
}

/**
 * Subscribe events a socket sends while this process's Redis connections are
 * down or stalled, kept in the worker and run once Redis answers again (their
 * acknowledgement comes then), by socket, then by event and arguments: a
 * repeat replaces, an unsubscribe cancels, a disconnect drops. Bounded by
 * sockets x MAX_HELD_SUBSCRIPTIONS, not by how often a page sends them. One
 * per Socket.IO server: the Frappe subscribe events and `subscribe_room`
 * share a socket's bound.
 */
export class SubscriptionHold {
  private readonly held = new Map<Socket, Map<string, Held>>();

  constructor(
    private readonly redisAvailable: () => boolean,
    onRedisAvailable: (listener: () => void) => void,
  ) {
    onRedisAvailable(() => {
      if (this.held.size === 0 || !this.redisAvailable()) return;
      const runs = [...this.held.values()].flatMap((m) => [...m.values()].map((h) => h.run));
      this.held.clear();
      for (const run of runs) run();
    });
  }

  static key(event: string, a: string, b = ''): string {
    return `${event}\0${a}\0${b}`;
  }

  /**
   * Holds `run` (the event again, acknowledged then, if the socket is still
   * connected) under `key`; a held one with the same key is superseded (its
   * acknowledgement says false). False, holding nothing, when the socket is
   * gone or already holds MAX_HELD_SUBSCRIPTIONS other ones.
   */
  hold(socket: Socket, key: string, ack: Ack, run: () => void): boolean {
    if (!socket.connected) return false;
    let mine = this.held.get(socket);
    if (!mine) this.held.set(socket, (mine = new Map()));
    if (!mine.has(key) && mine.size >= MAX_HELD_SUBSCRIPTIONS) return false;
    mine.get(key)?.ack?.(false);
    mine.set(key, {
      ack,
      run: () => {
        if (socket.connected) run();
      },
    });
    return true;
  }

  /** An unsubscribe: the held subscribe with this key, if any, is dropped (acknowledged false). */
  cancel(socket: Socket, key: string): void {
    const mine = this.held.get(socket);
    mine?.get(key)?.ack?.(false);
    mine?.delete(key);
  }

  /** The socket disconnected: what it held is dropped. */
  drop(socket: Socket): void {
    this.held.delete(socket);
  }
}
