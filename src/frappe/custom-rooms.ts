/**
 * Declarative custom rooms (GATEWAY_CUSTOM_ROOMS, docs/mqtt.md): a client
 * joins `sensor:42` with `subscribe_room` when the pattern `sensor:{id}` is
 * configured and the backend grants read permission on its doctype/name, as
 * `doc_subscribe` does (same backend call, same cache). Rooms that match no
 * pattern are refused. A `latest` room gives the joining client its last
 * event at once; `conflate` rooms are marked for `realtime/conflation.ts`.
 */
import type { Server, Socket } from 'socket.io';
import type { CustomRoomSpec, GatewayConfig } from '../config';
import { compileRoomPattern, findRoomPattern, latestKey, type RoomPattern } from '../events/room-patterns';
import type { Metrics } from '../metrics/metrics';
import { connectInBackground, createRedisClient, quitClient, type RedisClient } from '../redis/connect';
import { createKeys, type Keys } from '../redis/keys';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { FrappeBackend, RequestContext } from './backend';
import { nameArg, type JoinRooms, type SocketData } from './handlers';
import { SubscriptionHold } from './subscription-hold';

/** The custom rooms' slice of the configuration. */
export type CustomRoomsConfig = Pick<GatewayConfig, 'conflateBacklog' | 'customRooms' | 'keyPrefix' | 'redis'>;

export const SUBSCRIBE_ROOM = 'subscribe_room';
export const UNSUBSCRIBE_ROOM = 'unsubscribe_room';
/** Room names Frappe itself builds from doc names: the same bound as events' rooms. */
const MAX_ROOM = 1024;
/** Rooms whose conflate pattern is remembered (the lookup runs per broadcast and socket). */
const PATTERN_CACHE_MAX = 10_000;
/** Unsent bytes on a WebSocket from which a client counts as backed up. */
const BACKLOG_BYTES = 64 * 1024;

export interface CustomRoomDeps {
  readonly config: CustomRoomsConfig;
  readonly join: JoinRooms;
  readonly backend: FrappeBackend;
  /** False while Redis is down or stalled (see HandlerDeps). */
  readonly redisAvailable?: () => boolean;
  /**
   * Given: a `subscribe_room` sent while Redis is unavailable is held (with
   * the Frappe subscribe events, in the same per-socket bound) and run, its
   * permission check included, once Redis answers; omitted or full: refused
   * at once.
   */
  readonly hold?: SubscriptionHold | null;
  readonly metrics: Metrics;
  readonly log: Logger;
}

/** What conflation needs to know about a socket (see `conflationOf`). */
export interface ConflationSettings {
  /** Queued Engine.IO packets from which the client counts as backed up. */
  readonly backlogPackets: number;
  readonly backlogBytes: number;
  /** The conflate pattern `room` is an instance of, or null. */
  patternOf(room: string): string | null;
}

interface Compiled {
  readonly all: readonly RoomPattern[];
  readonly conflation: ConflationSettings | null;
  readonly keys: Keys;
}

const compiledFor = new WeakMap<readonly CustomRoomSpec[], Compiled>();
const conflationBySocket = new WeakMap<Socket, ConflationSettings>();
const latestReaders = new WeakMap<Server, RedisClient>();
/** False until a socket with conflation settings exists: the fast path then skips the lookup. */
let conflating = false;

function compile(config: CustomRoomsConfig): Compiled {
  const hit = compiledFor.get(config.customRooms);
  if (hit) return hit;
  const all = config.customRooms.map(compileRoomPattern);
  const conflating = all.filter((p) => p.spec.conflate);
  const cache = new Map<string, string | null>();
  const conflation: ConflationSettings | null =
    conflating.length === 0
      ? null
      : {
          backlogPackets: config.conflateBacklog,
          backlogBytes: BACKLOG_BYTES,
          patternOf: (room) => {
            const known = cache.get(room);
            if (known !== undefined) return known;
            const found = findRoomPattern(conflating, room)?.pattern.spec.pattern ?? null;
            if (cache.size >= PATTERN_CACHE_MAX) cache.clear();
            cache.set(room, found);
            return found;
          },
        };
  const c: Compiled = { all, conflation, keys: createKeys(config.keyPrefix) };
  compiledFor.set(config.customRooms, c);
  return c;
}

/** Conflation settings of a socket, when custom rooms with `conflate` are configured. */
export function conflationOf(socket: Socket): ConflationSettings | undefined {
  return conflating ? conflationBySocket.get(socket) : undefined;
}

/**
 * One fail-fast Redis connection per Socket.IO server for latest values,
 * opened on first use and closed with the server's HTTP listener.
 */
function latestReader(socket: Socket, config: CustomRoomsConfig, log: Logger): RedisClient | null {
  const redis = config.redis;
  if (!redis) return null;
  const io = socket.nsp.server;
  let c = latestReaders.get(io);
  if (!c) {
    const client = createRedisClient(redis, { name: `latest-${process.pid}`, failFast: true }, log);
    connectInBackground(client, log, 'latest');
    io.httpServer.once('close', () => void quitClient(client));
    latestReaders.set(io, client);
    c = client;
  }
  return c;
}

export function registerCustomRooms(socket: Socket, ctx: RequestContext, deps: CustomRoomDeps): void {
  const { config, join, backend, metrics, log } = deps;
  if (config.customRooms.length === 0) return;
  const compiled = compile(config);
  if (compiled.conflation) {
    conflating = true;
    conflationBySocket.set(socket, compiled.conflation);
  }
  const data = socket.data as SocketData;

  const roomArg = (v: unknown): string | undefined => {
    const s = nameArg(v);
    return s !== undefined && s.length <= MAX_ROOM ? s : undefined;
  };

  const sendLatest = async (room: string): Promise<void> => {
    const redis = latestReader(socket, config, log);
    if (!redis) return;
    let raw: string | null;
    try {
      raw = await redis.get(latestKey(compiled.keys, data.site, room));
    } catch (err) {
      log.warn({ room: room.slice(0, 128), err: errorMessage(err) }, 'latest value unavailable');
      return;
    }
    if (raw === null || !socket.connected) return;
    try {
      const e = JSON.parse(raw) as { event?: unknown; message?: unknown };
      if (typeof e.event === 'string') socket.emit(e.event, e.message);
    } catch {
      log.warn({ room: room.slice(0, 128) }, 'latest value is not JSON');
    }
  };

  const subscribe = (args: unknown[]): void => {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (ok: boolean) => void) : undefined;
    const room = roomArg(args[0]);
    const found = room === undefined ? null : findRoomPattern(compiled.all, room);
    if (room === undefined || !found) {
      metrics.clientEventsRejected.inc({ event: SUBSCRIBE_ROOM });
      metrics.customRoomSubscriptions.inc({ result: 'unknown_pattern' });
      ack?.(false);
      return;
    }
    if (deps.redisAvailable && !deps.redisAvailable()) {
      if (deps.hold?.hold(socket, SubscriptionHold.key(SUBSCRIBE_ROOM, room), ack, () => subscribe(args))) {
        metrics.redisDeferred.inc({ what: 'subscribe' });
        return;
      }
      metrics.clientEventsRefused.inc({ event: SUBSCRIBE_ROOM, reason: 'redis_unavailable' });
      ack?.(false);
      return;
    }
    metrics.clientEvents.inc({ event: SUBSCRIBE_ROOM });
    const { pattern, values } = found;
    const doctype = pattern.fill(pattern.spec.doctype, values);
    const name = pattern.spec.name === null ? undefined : pattern.fill(pattern.spec.name, values);
    (async () => {
      let ok: boolean;
      try {
        ok = await backend.canSubscribe(ctx, doctype, name);
        metrics.permissionChecks.inc({ result: ok ? 'allowed' : 'denied' });
      } catch (err) {
        metrics.permissionChecks.inc({ result: 'error' });
        throw err;
      }
      if (!ok || !socket.connected) {
        metrics.customRoomSubscriptions.inc({ result: 'denied' });
        return false;
      }
      await join(socket, [room]);
      metrics.customRoomSubscriptions.inc({ result: 'joined' });
      // Joined first, then read: an event published in between may arrive
      // twice (live and as the latest value), never an older one after it.
      if (pattern.spec.latest) await sendLatest(room);
      return true;
    })().then(
      (ok) => ack?.(ok),
      (err: unknown) => {
        metrics.customRoomSubscriptions.inc({ result: 'error' });
        log.warn({ event: SUBSCRIBE_ROOM, doctype, err: errorMessage(err) }, 'client event failed');
        ack?.(false);
      },
    );
  };
  socket.on(SUBSCRIBE_ROOM, (...args: unknown[]) => subscribe(args));

  socket.on(UNSUBSCRIBE_ROOM, (...args: unknown[]) => {
    const last = args[args.length - 1];
    const ack = typeof last === 'function' ? (last as (ok: boolean) => void) : undefined;
    const room = roomArg(args[0]);
    // Only custom rooms: the automatic ones (user, website, all) are not the client's to leave.
    if (room === undefined || !findRoomPattern(compiled.all, room)) {
      metrics.clientEventsRejected.inc({ event: UNSUBSCRIBE_ROOM });
      ack?.(false);
      return;
    }
    metrics.clientEvents.inc({ event: UNSUBSCRIBE_ROOM });
    deps.hold?.cancel(socket, SubscriptionHold.key(SUBSCRIBE_ROOM, room));
    socket.leave(room);
    ack?.(true);
  });
}
