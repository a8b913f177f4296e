import { Redis, type ChainableCommander } from 'ioredis';
import type { Namespace, Socket } from 'socket.io';
import type { Adapter, BroadcastOptions, Session } from 'socket.io-adapter';
import type { SocketData } from '../frappe/handlers';
import { commandsFlowing, onFlowing, periodic, TickPipeline, type RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import { MISSED_EVENT, SESSION_EVENT, handOutHeldOffsets, replayMissed, type MissedReason, type ReplaySource } from './replay';
import { privateSessionId } from '../shared/io-internals';

/**
 * Session recovery across workers and hosts (rooms, user, open documents).
 *
 * Frappe's v15+ client never re-subscribes after a reconnect, so a client
 * whose worker or host went away would silently lose its doc, doctype, task
 * and app rooms. socket.io-client (>= 4.6) sends back a private session id
 * (`pid`) and the last offset it saw when it reconnects; we keep each
 * session in a store shared by every worker (Redis in a cluster) and give it
 * back to whichever worker the client lands on.
 *
 * Sessions are written when a client connects and whenever its rooms change
 * (so they survive a crashed process), refreshed while it stays connected,
 * and kept for the recovery window after it disconnects. With history (a
 * cluster in sharded mode) the events it missed are replayed (`replay.ts`);
 * an offset that history no longer covers makes it a new client, told so by
 * `rtg_missed_updates`.
 */

export interface StoredSession {
  readonly sid: string;
  readonly pid: string;
  readonly rooms: readonly string[];
  readonly data: { site: string; user: string; user_type: string; openDocs: [string, string][] };
}

export interface SessionStore {
  save(sessions: readonly StoredSession[], ttlMs: number): Promise<void>;
  /** Returns the session and forgets it (a session is restored once). */
  take(pid: string): Promise<StoredSession | null>;
  touch(pids: readonly string[], ttlMs: number): Promise<void>;
  /** False while the store's connection is down or stalled: periodic refreshes wait. */
  available?(): boolean;
  remove(pid: string): Promise<void>;
  /** Missed-event replay, when the store's cluster keeps a history. */
  readonly replay?: ReplaySource | undefined;
  /**
   * True when the store dies with this process (process memory): saving a
   * connected socket's session ahead of a crash is then pointless, since the
   * crash takes the store with it; only disconnects (socket.io's
   * persistSession) are stored.
   */
  readonly inProcess?: boolean;
}

const MEMORY_MAX_SESSIONS = 100_000;

/**
 * `take` while the store's connection is down or stalled: nothing was sent,
 * so the session is still in the store for a later attempt (here once Redis
 * answers, or on another host).
 */
export class SessionStoreUnavailable extends Error {
  constructor() {
    super('session store unavailable (Redis down or stalled): session not read');
    this.name = 'SessionStoreUnavailable';
  }
}

/** One process (standalone): sessions in a bounded map. */
export class MemorySessionStore implements SessionStore {
  readonly inProcess = true;
  private readonly map = new Map<string, { until: number; s: StoredSession }>();

  save(sessions: readonly StoredSession[], ttlMs: number): Promise<void> {
    const until = Date.now() + ttlMs;
    for (const s of sessions) {
      this.map.delete(s.pid);
      if (this.map.size >= MEMORY_MAX_SESSIONS) {
        const oldest = this.map.keys().next().value;
        if (oldest !== undefined) this.map.delete(oldest);
      }
      this.map.set(s.pid, { until, s });
    }
    return Promise.resolve();
  }

  take(pid: string): Promise<StoredSession | null> {
    const e = this.map.get(pid);
    this.map.delete(pid);
    return Promise.resolve(e && e.until >= Date.now() ? e.s : null);
  }

  touch(pids: readonly string[], ttlMs: number): Promise<void> {
    const until = Date.now() + ttlMs;
    for (const pid of pids) {
      const e = this.map.get(pid);
      if (e) e.until = until;
    }
    const now = Date.now();
    for (const [pid, e] of this.map) if (e.until < now) this.map.delete(pid);
    return Promise.resolve();
  }

  remove(pid: string): Promise<void> {
    this.map.delete(pid);
    return Promise.resolve();
  }
}

/** A cluster: sessions in Redis, one key per session, expiring on their own. */
export class RedisSessionStore implements SessionStore {
  /**
   * Writes made while the connection was down or stalled (see
   * `commandsFlowing`), by pid: the last save with when it expires, or null
   * for a removal. Held here instead of queueing behind the outage (one
   * entry per session however often it changed) and written once commands
   * flow again.
   */
  private readonly deferred = new Map<string, { s: StoredSession; until: number } | null>();
  private flushing = false;

  /** Takes of every reconnection in one event-loop turn (a herd), as one pipeline. */
  private readonly batch: TickPipeline;

  /**
   * @param onDeferred given: writes are deferred while the connection is
   *   down or stalled, and this is called per write so recorded
   *   ('session_save' or 'session_remove'); omitted: every write is sent
   *   (and waits in ioredis' queue during an outage).
   */
  constructor(
    private readonly client: RedisClient,
    private readonly keys: Keys,
    readonly replay?: ReplaySource,
    private readonly onDeferred?: (what: 'session_save' | 'session_remove') => void,
  ) {
    this.batch = new TickPipeline(client);
    if (onDeferred) onFlowing(client, () => void this.flushDeferred());
  }

  /** Whether a write now is to be recorded here instead of sent. */
  private defer(): boolean {
    return this.onDeferred !== undefined && !commandsFlowing(this.client);
  }

  /** Writes recorded while Redis could not take them, not written yet. */
  get deferredCount(): number {
    return this.deferred.size;
  }

  async save(sessions: readonly StoredSession[], ttlMs: number): Promise<void> {
    if (this.defer()) {
      const until = Date.now() + ttlMs;
      for (const s of sessions) {
        this.deferred.set(s.pid, { s, until });
        this.onDeferred?.('session_save');
      }
      return;
    }
    for (const s of sessions) this.deferred.delete(s.pid);
    if (sessions.length === 1) {
      const s = sessions[0] as StoredSession;
      await this.client.set(this.keys.session(s.pid), JSON.stringify(s), 'PX', ttlMs);
      return;
    }
    await this.perKey(sessions, (p, s) => p.set(this.keys.session(s.pid), JSON.stringify(s), 'PX', ttlMs));
  }

  /**
   * One command per key (no multi-key command), written as one pipeline: a
   * connect storm saves hundreds of sessions per tick, and a refresh touches
   * every connected one, which would otherwise be a socket write each. On
   * Redis Cluster a pipeline must stay within a slot: one per key, in parallel.
   */
  private async perKey<T>(items: readonly T[], add: (p: ChainableCommander, item: T) => unknown): Promise<void> {
    const run = async (batch: readonly T[]): Promise<void> => {
      const p = this.client.pipeline();
      for (const item of batch) add(p, item);
      const failed = ((await p.exec()) ?? []).find(([err]) => err !== null);
      if (failed) throw failed[0] as Error;
    };
    if (this.client instanceof Redis) await run(items);
    else await Promise.all(items.map((item) => run([item])));
  }

  /** Writes the deferred saves (with what is left of their TTL) and removals; what fails is kept for the next time. */
  async flushDeferred(): Promise<void> {
    if (this.flushing || this.deferred.size === 0 || !commandsFlowing(this.client)) return;
    this.flushing = true;
    const batch = [...this.deferred];
    this.deferred.clear();
    const now = Date.now();
    try {
      await this.perKey(batch, (p, [pid, d]) =>
        d === null || d.until <= now
          ? p.del(this.keys.session(pid))
          : p.set(this.keys.session(pid), JSON.stringify(d.s), 'PX', d.until - now),
      );
    } catch {
      for (const [pid, d] of batch) if (!this.deferred.has(pid)) this.deferred.set(pid, d);
    } finally {
      this.flushing = false;
    }
  }

  async take(pid: string): Promise<StoredSession | null> {
    if (this.deferred.has(pid)) {
      // Saved (or removed) here while Redis was away: newer than any copy in Redis, which goes.
      const d = this.deferred.get(pid);
      this.deferred.set(pid, null);
      void this.flushDeferred();
      return d && d.until >= Date.now() ? d.s : null;
    }
    // Where writes are deferred (a worker), a read is not queued behind an outage or a
    // partition either: the handshake would wait for it, unbounded.
    if (this.defer()) throw new SessionStoreUnavailable();
    const key = this.keys.session(pid);
    const v = await this.batch.run<string | null>((p) => p.getdel(key));
    if (v === null) return null;
    try {
      return JSON.parse(v) as StoredSession;
    } catch {
      return null;
    }
  }

  async touch(pids: readonly string[], ttlMs: number): Promise<void> {
    await this.perKey(pids, (p, pid) => p.pexpire(this.keys.session(pid), ttlMs));
  }

  available(): boolean {
    return commandsFlowing(this.client);
  }

  async remove(pid: string): Promise<void> {
    if (this.defer()) {
      this.deferred.set(pid, null);
      this.onDeferred?.('session_remove');
      return;
    }
    this.deferred.delete(pid);
    await this.client.del(this.keys.session(pid));
  }
}

/** Why a reconnection that asked for its session was treated as new, by old pid, until its socket is tracked. */
const unrecovered = new Map<string, MissedReason>();
const UNRECOVERED_MAX = 10_000;

function noteUnrecovered(pid: string, reason: MissedReason): void {
  if (unrecovered.size >= UNRECOVERED_MAX) unrecovered.clear();
  unrecovered.set(pid, reason);
}

/** Old pids whose session could not be read (SessionStoreUnavailable), until their handshake is refused. */
const unreadable = new Set<string>();

/**
 * True (once) when `socket`'s reconnection asked for a session the store
 * could not read (Redis down or stalled): its handshake is then refused with
 * a retryable error, so socket.io-client retries with the same session id and
 * offset and recovers it once Redis answers, instead of starting over as a
 * new client with no rooms.
 */
export function sessionUnreadable(socket: Socket): boolean {
  const pid = (socket.handshake.auth as { pid?: unknown }).pid;
  return typeof pid === 'string' && unreadable.delete(pid);
}
/** Disconnect reasons after which socket.io-client reconnects and may ask for its session. */
const RECOVERABLE = new Set([
  'transport error',
  'transport close',
  'forced close',
  'ping timeout',
  'server shutting down',
  'forced server close',
]);

function toStored(sid: string, pid: string, rooms: Iterable<string>, data: SocketData): StoredSession {
  return {
    sid,
    pid,
    rooms: [...rooms].filter((r) => r !== sid),
    data: {
      site: data.site,
      user: data.user,
      user_type: data.user_type,
      openDocs: [...(data.openDocs?.values() ?? [])].map((d) => [d.doctype, d.docname]),
    },
  };
}

export function restoredData(s: StoredSession): SocketData {
  return {
    site: s.data.site,
    user: s.data.user,
    user_type: s.data.user_type,
    openDocs: new Map(s.data.openDocs.map(([dt, dn]) => [`open_doc:${dt}/${dn}`, { doctype: dt, docname: dn }])),
  };
}

export interface RecoveryDeps {
  readonly store: SessionStore;
  readonly windowMs: number;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/**
 * Wraps one namespace's adapter: sessions go to the shared store instead of
 * process memory, no per-event offsets are added (the leader's history
 * offsets are the only ones: `leader/publisher.ts`), and a socket's own emits stay local instead of being
 * published to every worker (socket.io routes `socket.emit` through the
 * adapter when recovery is on).
 */
export function withSessionRecovery(adapter: Adapter, d: RecoveryDeps): Adapter {
  const a = adapter as Adapter & { addOffsetIfNecessary?: (...args: unknown[]) => void };
  a.persistSession = (session: Session) => {
    d.store
      .save([toStored(session.sid, session.pid, session.rooms, session.data as SocketData)], d.windowMs)
      .catch((err: unknown) => d.log.warn({ err: errorMessage(err) }, 'could not persist session'));
  };
  // socket.io treats a null session as "not recoverable" (its typings say otherwise).
  a.restoreSession = (async (pid: string, offset: string) => {
    let s: StoredSession | null;
    try {
      s = await d.store.take(pid);
    } catch (err) {
      if (!(err instanceof SessionStoreUnavailable)) throw err;
      d.metrics.sessionRecoveries.inc({ result: 'redis_unavailable' });
      if (unreadable.size >= UNRECOVERED_MAX) unreadable.clear();
      unreadable.add(pid);
      return null;
    }
    let reason: MissedReason | null = s ? null : 'expired';
    if (s && d.store.replay) reason = await d.store.replay.history.check(offset).catch((): MissedReason => 'history_unreadable');
    d.metrics.sessionRecoveries.inc({ result: reason ?? 'restored' });
    if (!s || reason !== null) {
      noteUnrecovered(pid, reason ?? 'expired');
      return null;
    }
    return { sid: s.sid, pid: s.pid, rooms: [...s.rooms], data: restoredData(s), missedPackets: [] };
  }) as unknown as Adapter['restoreSession'];
  if (typeof a.addOffsetIfNecessary === 'function') a.addOffsetIfNecessary = () => undefined;
  const broadcast = a.broadcast.bind(a);
  a.broadcast = (packet: unknown, opts: BroadcastOptions) => {
    if (opts.rooms.size === 1 && (opts.except?.size ?? 0) === 0 && a.sids.has(opts.rooms.values().next().value as string)) {
      opts = { ...opts, flags: { ...opts.flags, local: true } };
    }
    return broadcast(packet, opts);
  };
  return a;
}

/**
 * Per-socket bookkeeping: the first offset, proactive saves on room changes
 * (so a crash does not lose the session), refresh while connected, removal
 * after a deliberate disconnect.
 */
export class SessionKeeper {
  private readonly dirty = new Map<string, Socket>();
  private flushScheduled = false;
  private readonly live = new Map<string, Socket>();
  private readonly timer: NodeJS.Timeout | null;
  /** Connected sessions are saved (and refreshed) only in a store that outlives this process. */
  private readonly proactive: boolean;
  /** One disconnect listener for every tracked socket (the socket is `this`). */
  private readonly onDisconnect: (this: Socket, reason: string) => void;

  constructor(private readonly d: RecoveryDeps) {
    this.proactive = d.store.inProcess !== true;
    // One refresh in flight at most, none while the store's connection is down or stalled.
    const refresh = periodic(
      () => d.store.available?.() ?? true,
      () => this.refresh(),
      () => d.metrics.redisPeriodicSkipped.inc({ task: 'session_refresh' }),
    );
    this.timer = this.proactive ? setInterval(refresh, Math.max(1000, Math.floor(d.windowMs / 3))) : null;
    this.timer?.unref();
    const forget = (socket: Socket, reason: string): void => this.forget(socket, reason);
    this.onDisconnect = function (this: Socket, reason: string) {
      forget(this, reason);
    };
  }

  /** TTL while connected: the window after a crash, plus one refresh period of slack. */
  private get liveTtl(): number {
    return this.d.windowMs + Math.max(1000, Math.floor(this.d.windowMs / 3)) * 2;
  }

  track(socket: Socket): void {
    const pid = privateSessionId(socket);
    if (!pid) return;
    const auth = socket.handshake.auth as { pid?: unknown; offset?: unknown };
    const replay = this.d.store.replay;
    if (socket.recovered) {
      if (replay) void replayMissed(socket, String(auth.offset), replay, this.d.metrics, this.d.log);
      else socket.emit(MISSED_EVENT, { reason: 'no_history' });
    } else {
      if (typeof auth.pid === 'string' && typeof auth.offset === 'string') {
        socket.emit(MISSED_EVENT, { reason: unrecovered.get(auth.pid) ?? 'expired' });
        unrecovered.delete(auth.pid);
      }
      // socket.io-client only asks for its session back if it has seen an
      // offset: the last string argument of an event. Frappe's client
      // listens to nothing by this name.
      if (replay) this.handOutOffset(socket, replay);
      else socket.emit(SESSION_EVENT, `${Date.now().toString(36)}`);
    }
    // In process memory nothing is stored while connected (nothing to
    // remove after a deliberate disconnect either), and no replay gate holds it.
    if (!this.proactive && !replay) return;
    this.live.set(socket.id, socket);
    this.markDirty(socket);
    socket.on('disconnect', this.onDisconnect);
  }

  /** Sockets waiting for their first offset, held; one position read per batch (`handOutHeldOffsets`). */
  private offsetBatch: Socket[] = [];

  private handOutOffset(socket: Socket, replay: ReplaySource): void {
    replay.gate.hold(socket.id);
    this.offsetBatch.push(socket);
    if (this.offsetBatch.length > 1) return;
    setImmediate(() => {
      const batch = this.offsetBatch;
      this.offsetBatch = [];
      void handOutHeldOffsets(batch, replay, this.d.metrics, this.d.log);
    });
  }

  private forget(socket: Socket, reason: string): void {
    this.d.store.replay?.gate.forget(socket.id);
    this.live.delete(socket.id);
    this.dirty.delete(socket.id);
    // Recoverable disconnects are persisted by socket.io (persistSession).
    const pid = privateSessionId(socket);
    if (pid && !RECOVERABLE.has(reason)) this.d.store.remove(pid).catch(() => undefined);
  }

  /**
   * A recovered socket whose handshake failed in a way the client retries
   * (backend unavailable, queue full, handshake timeout): the restore took
   * its session out of the store, so store it again, or the client's next
   * attempt would find it gone and be treated as new ('expired').
   */
  putBack(socket: Socket, data: SocketData): void {
    const pid = privateSessionId(socket);
    if (!socket.recovered || !pid) return;
    this.d.metrics.sessionRecoveries.inc({ result: 'put_back' });
    this.d.store
      .save([toStored(socket.id, pid, socket.rooms, data)], this.d.windowMs)
      .catch((err: unknown) => this.d.log.warn({ err: errorMessage(err) }, 'could not put a session back'));
  }

  /** Room membership of a tracked socket changed. */
  roomsChanged(nsp: Namespace, sid: string): void {
    const s = nsp.sockets.get(sid);
    if (s && this.live.has(sid)) this.markDirty(s);
  }

  private markDirty(socket: Socket): void {
    if (!this.proactive) return;
    this.dirty.set(socket.id, socket);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const batch: StoredSession[] = [];
      for (const s of this.dirty.values()) {
        const pid = privateSessionId(s);
        if (pid && s.connected) batch.push(toStored(s.id, pid, s.rooms, s.data as SocketData));
      }
      this.dirty.clear();
      if (batch.length > 0)
        this.d.store.save(batch, this.liveTtl).catch((err: unknown) => this.d.log.debug({ err: errorMessage(err) }, 'session save failed'));
    });
  }

  private async refresh(): Promise<void> {
    const pids: string[] = [];
    for (const s of this.live.values()) {
      const pid = privateSessionId(s);
      if (pid) pids.push(pid);
    }
    if (pids.length > 0)
      await this.d.store
        .touch(pids, this.liveTtl)
        .catch((err: unknown) => this.d.log.debug({ err: errorMessage(err) }, 'session refresh failed'));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
