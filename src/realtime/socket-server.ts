import type { IncomingMessage, Server as HttpServer } from 'node:http';
import { Server, type Namespace, type Socket } from 'socket.io';
import { Adapter } from 'socket.io-adapter';
import type { GatewayConfig } from '../config';
import { AppHandlers } from '../frappe/app-handlers';
import { registerCustomRooms, type CustomRoomsConfig } from '../frappe/custom-rooms';
import { authenticate, type AuthOptions } from '../frappe/auth';
import type { FrappeBackend, RequestContext } from '../frappe/backend';
import {
  automaticRooms,
  joinLocally,
  registerFrappeHandlers,
  subscriptionHoldOf,
  type JoinRooms,
  type SocketData,
} from '../frappe/handlers';
import type { Metrics } from '../metrics/metrics';
import type { PresenceStore } from '../presence/presence';
import { errorMessage } from '../shared/errors';
import { RateLimitedLog, type Logger } from '../shared/logger';
import { registerSocketApiServer, setSocketApiContext } from './socket-api';
import { MemorySessionStore, SessionKeeper, sessionUnreadable, withSessionRecovery, type SessionStore } from '../recovery/session-recovery';
import { createUserConnections, type UserConnections } from './user-limit';
import { createConnectionCounter, type ConnectionCounter } from './connection-counter';
import { boundJoins, clientIp, mayJoin, rateLimitEvents, retryableError, watchSlowReaders } from './limits';
import {
  childNamespaces,
  connectedNamespaceCount,
  preConnectCount,
  registeredNamespace,
  slimHandshakeRequest,
  unregisterNamespace,
  watchNamespaceAdds,
} from '../shared/io-internals';

/** The slice of the configuration the Socket.IO server reads (its own settings, authentication, rate limits, custom rooms). */
export type SocketServerConfig = Pick<
  GatewayConfig,
  | 'appsPath'
  | 'corsOrigins'
  | 'dropLogIntervalMs'
  | 'handshakeTimeoutMs'
  | 'maxConnectionsPerIp'
  | 'maxConnectionsPerUser'
  | 'maxHttpBufferBytes'
  | 'maxOutboundBytes'
  | 'maxOutboundPackets'
  | 'maxRoomsPerSocket'
  | 'pingIntervalMs'
  | 'pingTimeoutMs'
  | 'recoveryWindowMs'
  | 'trustProxy'
> &
  AuthOptions &
  CustomRoomsConfig &
  Pick<GatewayConfig, 'clientEventsPerSec' | 'clientEventsBurst'>;

export interface SocketServerDeps {
  readonly config: SocketServerConfig;
  readonly httpServer: HttpServer;
  readonly backend: FrappeBackend;
  readonly presence: PresenceStore;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Socket.IO adapter constructor (Redis adapter in cluster mode; in-memory when omitted). */
  readonly adapter?: Parameters<Server['adapter']>[0];
  /** Resolves once broadcasts to these rooms reach this process (cluster: Redis subscriptions confirmed). */
  readonly roomsReady?: (nsp: Namespace, rooms: string[]) => Promise<void>;
  /** Registers a listener for the loss of the Redis subscriptions (connection closed): rooms must be confirmed again. */
  readonly onSubscriptionsLost?: (listener: () => void) => void;
  /** Where recoverable sessions live (Redis in a cluster); process memory when omitted. */
  readonly sessions?: SessionStore;
  /** Connections per user (cluster-wide through Redis in a cluster); this process only when omitted. */
  readonly userConnections?: UserConnections;
  /** Engine.IO connections per client address (cluster-wide through Redis in a cluster); this process only when omitted. */
  readonly ipConnections?: ConnectionCounter;
  /** False while Redis is down or stalled: client events that would join rooms or write presence are refused (HandlerDeps). */
  readonly redisAvailable?: () => boolean;
  /** Registers a listener for Redis answering again: subscribe events held meanwhile run then (HandlerDeps). */
  readonly onRedisAvailable?: (listener: () => void) => void;
}

export interface SocketServer {
  readonly io: Server;
  /** Site namespaces that currently exist in this process. */
  siteNamespaces(): Iterable<Namespace>;
  /** The namespace of a site if this process has one; never creates it. */
  existingNamespace(site: string): Namespace | undefined;
  connectionCount(): number;
}

/** What app handlers see on a socket, beyond the Socket.IO API (docs/protocol.md section 7). */
interface FrappeSocketApi {
  user: string;
  user_type: string;
  installed_apps: readonly string[];
  sid: string | undefined;
  authorization_header: string | undefined;
  site_name: string;
  has_permission(doctype: string, name?: string): Promise<void>;
  frappe_request(
    path: string,
    args?: Record<string, unknown>,
    opts?: { method?: string; headers?: Record<string, string>; body?: string },
  ): Promise<Response>;
  gateway: {
    /** Users in a room across every worker and host, de-duplicated. */
    roomUsers(room: string): Promise<string[]>;
    /** Sockets in a room across every worker and host. */
    roomSockets(room: string): Promise<{ id: string; user: string }[]>;
  };
}

const SITE_NSP = /^\/[^/]+$/;
/**
 * An address slot taken by a handshake whose Engine.IO connection never came
 * (the handshake failed after allowRequest) is given back after this. A
 * successful handshake claims its slot within milliseconds.
 */
const UNCLAIMED_SLOT_MS = 10_000;
/** How often outbound buffers are checked against GATEWAY_MAX_OUTBOUND_BYTES/PACKETS. */
const SLOW_READER_CHECK_MS = 1000;

/** Rooms of one namespace whose Redis subscription was confirmed while they existed here. */
interface ConfirmedRooms {
  readonly rooms: Set<string>;
  /** Rooms deleted so far: a confirmation that spans a deletion is not remembered. */
  deletions: number;
  /** The subscriptions' generation these confirmations belong to. */
  generation: number;
}

/**
 * Joins and waits for `roomsReady` only for rooms not confirmed before: a
 * room that exists in this process and was confirmed since it was created
 * keeps its subscription (the adapter drops it when the room is deleted),
 * so the website and system-users rooms every socket joins cost a Redis
 * command once per namespace, not once per connect.
 */
function confirmingJoin(
  roomsReady: (nsp: Namespace, rooms: string[]) => Promise<void>,
  onSubscriptionsLost: ((listener: () => void) => void) | undefined,
): JoinRooms {
  const confirmed = new WeakMap<Namespace, ConfirmedRooms>();
  // Without a way to learn that subscriptions were lost, nothing is remembered.
  if (!onSubscriptionsLost) {
    return async (socket, rooms) => {
      socket.join(rooms);
      await roomsReady(socket.nsp, rooms);
    };
  }
  let generation = 0;
  onSubscriptionsLost(() => generation++);
  const of = (nsp: Namespace): ConfirmedRooms => {
    let c = confirmed.get(nsp);
    if (c && c.generation !== generation) {
      c.rooms.clear();
      c.generation = generation;
    }
    if (!c) {
      const created: ConfirmedRooms = { rooms: new Set(), deletions: 0, generation };
      nsp.adapter.on('delete-room', (room: string) => {
        created.deletions++;
        created.rooms.delete(room);
      });
      confirmed.set(nsp, (c = created));
    }
    return c;
  };
  return async (socket, rooms) => {
    const nsp = socket.nsp;
    socket.join(rooms);
    const c = of(nsp);
    const pending = rooms.filter((r) => !c.rooms.has(r));
    if (pending.length === 0) return;
    const deletions = c.deletions;
    await roomsReady(nsp, pending);
    if (c.deletions !== deletions || c.generation !== generation) return;
    for (const r of pending) if (nsp.adapter.rooms.has(r)) c.rooms.add(r);
  };
}

/** Releases a user's connection slot once, whichever of the socket or its connection goes first. */
function releaseOnce(perUser: UserConnections, site: string, user: string): () => void {
  let released = false;
  return () => {
    if (released) return;
    released = true;
    perUser.close(site, user);
  };
}

export function createSocketServer(deps: SocketServerDeps): SocketServer {
  const { config, metrics, log, backend, presence } = deps;
  const roomsReady = deps.roomsReady;
  const joinRooms: JoinRooms = roomsReady ? confirmingJoin(roomsReady, deps.onSubscriptionsLost) : joinLocally;
  const join: JoinRooms = (socket, rooms) => {
    if (!mayJoin(socket, rooms, config.maxRoomsPerSocket, metrics)) {
      return Promise.reject(new Error(`room limit reached (GATEWAY_MAX_ROOMS_PER_SOCKET=${config.maxRoomsPerSocket})`));
    }
    return joinRooms(socket, rooms);
  };
  const redisAvailable = deps.redisAvailable ?? (() => true);
  const handlerDeps = { join, backend, presence, metrics, log, redisAvailable, onRedisAvailable: deps.onRedisAvailable };
  const customRoomDeps = {
    config,
    join,
    backend,
    metrics,
    log: log.child({ sub: 'custom-rooms' }),
    redisAvailable,
    hold: subscriptionHoldOf(handlerDeps),
  };
  const perUser = deps.userConnections ?? createUserConnections(config.maxConnectionsPerUser, log);
  const perIp = deps.ipConnections ?? createConnectionCounter({ max: config.maxConnectionsPerIp, what: 'address', log });
  // Address slots taken by a handshake that has no Engine.IO connection yet.
  const reserved = new WeakMap<IncomingMessage, { ip: string; timer: NodeJS.Timeout }>();
  const recovery = config.recoveryWindowMs > 0;
  const store = deps.sessions ?? new MemorySessionStore();
  const keeper = recovery ? new SessionKeeper({ store, windowMs: config.recoveryWindowMs, metrics, log }) : null;
  const io = new Server(deps.httpServer, {
    path: '/socket.io/',
    serveClient: false,
    pingInterval: config.pingIntervalMs,
    pingTimeout: config.pingTimeoutMs,
    maxHttpBufferSize: config.maxHttpBufferBytes,
    // Namespace lifetime is ours (see `dropIfUnused`): socket.io's cleanup
    // closes a namespace when its last connected socket leaves, even while
    // other handshakes are still in its middleware; those then connect into a
    // closed namespace that no room-less delivery, room report or drain sees.
    cleanupEmptyChildNamespaces: false,
    // engine.io asks only for handshakes (requests without a sid).
    allowRequest: (req, callback) => {
      // Known before any work: refusing the Engine.IO handshake (HTTP 403)
      // makes socket.io-client retry with backoff (docs/protocol.md section 6).
      const origin = req.headers.origin;
      if (backend.unavailable(Array.isArray(origin) ? origin[0] : origin) || backend.handshakeQueueFull) {
        metrics.connectErrors.inc({ reason: 'backend_unavailable' });
        callback('Service unavailable: backend unavailable, retry', false);
        return;
      }
      if (config.maxConnectionsPerIp <= 0) {
        callback(null, true);
        return;
      }
      // The address's slot is taken now, atomically (cluster-wide through
      // Redis), so concurrent handshakes cannot overshoot the limit; the
      // Engine.IO connection of this request claims it below.
      const ip = clientIp(req, config.trustProxy);
      void perIp.tryOpen(ip).then((ok) => {
        if (!ok) {
          metrics.limitExceeded.inc({ limit: 'connections_per_ip' });
          metrics.connectErrors.inc({ reason: 'connections_per_ip' });
          callback(`Too many connections from this address (GATEWAY_MAX_CONNECTIONS_PER_IP=${config.maxConnectionsPerIp})`, false);
          return;
        }
        const timer = setTimeout(() => {
          if (reserved.delete(req)) perIp.close(ip);
        }, UNCLAIMED_SLOT_MS);
        timer.unref();
        reserved.set(req, { ip, timer });
        callback(null, true);
      });
    },
    cors: { origin: config.corsOrigins.length > 0 ? [...config.corsOrigins] : true, credentials: true },
    // Middlewares run again on recovery: credentials are re-checked.
    ...(recovery ? { connectionStateRecovery: { maxDisconnectionDuration: config.recoveryWindowMs, skipMiddlewares: false } } : {}),
  });
  io.engine.on('connection', (conn: { request: IncomingMessage; once(ev: 'close', fn: () => void): void }) => {
    const slot = reserved.get(conn.request);
    if (!slot) return;
    reserved.delete(conn.request);
    clearTimeout(slot.timer);
    conn.once('close', () => perIp.close(slot.ip));
  });
  const stopSlowReaderWatch = watchSlowReaders(
    io,
    { maxBytes: config.maxOutboundBytes, maxPackets: config.maxOutboundPackets, intervalMs: SLOW_READER_CHECK_MS },
    metrics,
    log.child({ sub: 'limits' }),
  );
  io.engine.on('close', stopSlowReaderWatch);
  io.engine.on('close', () => {
    perUser.stop();
    perIp.stop();
  });
  const baseAdapter = (deps.adapter ?? Adapter) as unknown as new (nsp: Namespace) => Adapter;
  if (keeper) {
    // socket.io instantiates it with `new`: a function (not an arrow) returning the adapter.
    io.adapter(function recoveringAdapter(nsp: Namespace): Adapter {
      const a = withSessionRecovery(new baseAdapter(nsp), { store, windowMs: config.recoveryWindowMs, metrics, log });
      a.on('join-room', (_room: string, sid: string) => keeper.roomsChanged(nsp, sid));
      a.on('leave-room', (_room: string, sid: string) => keeper.roomsChanged(nsp, sid));
      return a;
    } as unknown as typeof Adapter);
  } else if (deps.adapter) {
    io.adapter(deps.adapter);
  }

  // The main namespace is not a site: refuse it like any other invalid namespace.
  io.of('/').use((_socket, next) => next(new Error('Invalid namespace')));

  const appHandlers = new AppHandlers(config.appsPath, log.child({ sub: 'app-handlers' }), metrics);
  const sites = io.of(SITE_NSP);
  // Sockets between `_add` (a client asked for the namespace) and the moment
  // socket.io lists them in `_preConnectSockets`: session recovery awaits a
  // Redis lookup in between.
  const adding = new Map<Namespace, number>();
  io.on('new_namespace', (nsp: Namespace) => {
    if (!SITE_NSP.test(nsp.name)) return;
    watchNamespaceAdds(
      nsp,
      () => adding.set(nsp, (adding.get(nsp) ?? 0) + 1),
      () => {
        const n = (adding.get(nsp) ?? 1) - 1;
        if (n <= 0) adding.delete(nsp);
        else adding.set(nsp, n);
        dropLater(nsp);
      },
    );
  });

  // A site namespace lives while it has a socket, connected or in its
  // middleware, or one on its way in; then it goes, with its adapter (and
  // Redis subscriptions), so junk namespaces do not accumulate.
  const dropIfUnused = (nsp: Namespace): void => {
    if (nsp.sockets.size > 0 || preConnectCount(nsp) > 0 || (adding.get(nsp) ?? 0) > 0) return;
    if (!unregisterNamespace(io, sites, nsp)) return;
    Promise.resolve(nsp.adapter.close()).catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'adapter close failed'));
  };
  // socket.io settles a handshake (connect or clean up) a tick after the
  // middleware's `next`, and removes a disconnected socket after its
  // listeners ran: check once that has happened.
  const dropLater = (nsp: Namespace): void => {
    setImmediate(() => dropIfUnused(nsp));
  };

  // Refusals at info, at most one line per reason per interval: an operator
  // sees why clients cannot connect without a flood from a reconnect storm.
  const refusedLog = new RateLimitedLog(log, config.dropLogIntervalMs);
  const logRefusal = (socket: Socket, reason: string, message: string): void =>
    refusedLog.info(
      reason,
      {
        reason,
        site: socket.nsp.name.slice(1),
        remote: socket.handshake.address,
        forwardedFor: socket.handshake.headers['x-forwarded-for'],
        error: message,
      },
      `connection refused: ${message}`,
    );

  /**
   * The backend, or the gateway's way to it, is unavailable: close the
   * transport instead of answering CONNECT_ERROR. socket.io-client gives up
   * on a namespace after a CONNECT_ERROR, but reconnects with backoff after a
   * transport close. A connection that already carries another connected
   * namespace is not cut: that namespace gets a CONNECT_ERROR marked retryable.
   */
  const deferConnect = (socket: Socket, reason: string, code: string, message: string, done: (err?: Error) => void): void => {
    metrics.connectErrors.inc({ reason });
    keeper?.putBack(socket, socket.data as SocketData);
    logRefusal(socket, reason, `${message} (transport closed so the client retries)`);
    if (connectedNamespaceCount(socket) === 0) socket.conn.close();
    done(retryableError(code, message));
  };

  /**
   * Last step of a handshake: the user's connection count
   * (GATEWAY_MAX_CONNECTIONS_PER_USER). Counted once admitted, released when
   * the socket or its connection goes, whichever comes first.
   */
  const admitUser = (socket: Socket, site: string, user: string, settled: () => boolean, done: (err?: Error) => void): void => {
    // Unlimited: nothing is counted, so nothing to release (and no listener per socket).
    if (config.maxConnectionsPerUser <= 0) {
      done();
      return;
    }
    void perUser.tryOpen(site, user).then((ok) => {
      if (!ok) {
        metrics.limitExceeded.inc({ limit: 'connections_per_user' });
        metrics.connectErrors.inc({ reason: 'connections_per_user' });
        done(new Error(`Too many connections for this user (GATEWAY_MAX_CONNECTIONS_PER_USER=${config.maxConnectionsPerUser})`));
        return;
      }
      if (settled() || socket.conn.readyState !== 'open') {
        perUser.close(site, user);
        done();
        return;
      }
      // Built apart from this handshake's closures: the listeners live as long
      // as the socket and must not keep the middleware's state with them.
      const release = releaseOnce(perUser, site, user);
      socket.once('disconnect', release);
      socket.conn.once('close', release);
      done();
    });
  };

  sites.use((socket, next) => {
    const nsp = socket.nsp;
    // A recovered socket arrives with its previous rooms and data.
    const previous = socket.recovered ? ({ ...(socket.data as SocketData) } as SocketData) : null;
    let settled = false;
    const done = (err?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      next(err);
      dropLater(nsp);
    };
    const timer = setTimeout(() => {
      metrics.limitExceeded.inc({ limit: 'handshake_timeout' });
      deferConnect(
        socket,
        'handshake_timeout',
        'GW_ERR_HANDSHAKE_TIMEOUT',
        `Service unavailable: handshake not completed within ${config.handshakeTimeoutMs} ms, retry`,
        done,
      );
    }, config.handshakeTimeoutMs);
    if (backend.handshakeQueueFull) {
      metrics.limitExceeded.inc({ limit: 'backend_queue' });
      deferConnect(
        socket,
        'backend_queue',
        'GW_ERR_BACKEND_QUEUE_FULL',
        'Service unavailable: too many connections being authenticated, retry',
        done,
      );
      return;
    }
    if (sessionUnreadable(socket)) {
      // Its session is still in Redis: a retry recovers it (here once Redis answers, or on another host).
      deferConnect(
        socket,
        'redis_unavailable',
        'GW_ERR_REDIS_UNAVAILABLE',
        'Service unavailable: the session could not be read (Redis unreachable), retry',
        done,
      );
      return;
    }
    authenticate({ namespace: nsp.name, headers: socket.handshake.headers }, config, backend).then(
      (outcome) => {
        if (!outcome.ok) {
          if (outcome.reason === 'backend') metrics.authRequests.inc({ result: 'error' });
          if (outcome.reason === 'backend' && outcome.retryable) {
            deferConnect(socket, 'backend_unavailable', 'GW_ERR_BACKEND_UNAVAILABLE', outcome.message, done);
            return;
          }
          metrics.connectErrors.inc({ reason: outcome.reason });
          logRefusal(socket, outcome.reason, outcome.message);
          done(new Error(outcome.message));
          return;
        }
        metrics.authRequests.inc({ result: outcome.cached ? 'cached' : outcome.info.user === 'Guest' ? 'guest' : 'ok' });
        const data = socket.data as SocketData;
        if (previous && (previous.user !== outcome.info.user || previous.site !== outcome.site)) {
          // The credential now belongs to someone else: nothing of the old session carries over.
          for (const room of [...socket.rooms]) if (room !== socket.id) socket.leave(room);
          data.openDocs = undefined;
        }
        data.site = outcome.site;
        data.user = outcome.info.user;
        data.user_type = outcome.info.user_type;
        const ctx: RequestContext = { site: outcome.site, credential: outcome.credential, origin: outcome.origin };
        decorate(socket, ctx, outcome.info.installed_apps);
        // Joined before the CONNECT acknowledgement: once the client sees
        // `connect`, events to its automatic rooms reach it.
        join(socket, automaticRooms(outcome.info.user, outcome.info.user_type)).then(
          () => admitUser(socket, outcome.site, outcome.info.user, () => settled, done),
          (err: unknown) => {
            // Connected without its automatic rooms the client would be deaf
            // to its own events while looking healthy: refuse it instead.
            log.warn({ err: errorMessage(err) }, 'joining automatic rooms failed');
            deferConnect(
              socket,
              'join',
              'GW_ERR_JOIN_FAILED',
              `Service unavailable: could not join rooms (${errorMessage(err)}), retry`,
              done,
            );
          },
        );
      },
      (err: unknown) => {
        metrics.connectErrors.inc({ reason: 'internal' });
        log.error({ err: errorMessage(err) }, 'auth middleware failed');
        done(new Error(`Unauthorized: ${errorMessage(err)}`));
      },
    );
  });

  const ctxOf = new WeakMap<Socket, RequestContext>();

  // has_permission, frappe_request and gateway come from the prototype, bound on first use (socket-api.ts).
  registerSocketApiServer(io, { backend, log });
  const decorate = (socket: Socket, ctx: RequestContext, installedApps: readonly string[]): void => {
    ctxOf.set(socket, ctx);
    setSocketApiContext(socket, ctx);
    const s = socket as unknown as FrappeSocketApi;
    s.user = (socket.data as SocketData).user;
    s.user_type = (socket.data as SocketData).user_type;
    s.installed_apps = installedApps;
    s.site_name = ctx.site;
    s.sid = ctx.credential.kind === 'sid' ? ctx.credential.value : undefined;
    s.authorization_header = ctx.credential.kind === 'authorization' ? ctx.credential.value : undefined;
  };

  // One listener for every socket (the socket is `this`).
  function onSocketDisconnect(this: Socket): void {
    metrics.connections.dec({ namespace: (this.data as SocketData).site });
    dropLater(this.nsp);
  }

  sites.on('connection', (socket: Socket) => {
    const data = socket.data as SocketData;
    const ctx = ctxOf.get(socket);
    if (!ctx) {
      socket.disconnect(true);
      return;
    }
    ctxOf.delete(socket);
    // Engine.IO keeps the handshake's IncomingMessage for the connection's
    // lifetime (parser state, raw header list, socket references). Keep only
    // what handlers read (`socket.request.headers`, `url`, `method`).
    slimHandshakeRequest(socket);
    metrics.connectionsTotal.inc();
    metrics.connections.inc({ namespace: data.site });
    socket.on('disconnect', onSocketDisconnect);
    rateLimitEvents(socket, config, metrics);
    boundJoins(socket, config.maxRoomsPerSocket, metrics);
    registerFrappeHandlers(socket, ctx, handlerDeps);
    registerCustomRooms(socket, ctx, customRoomDeps);
    keeper?.track(socket);
    appHandlers.attach(socket, (socket as unknown as FrappeSocketApi).installed_apps);
  });

  return {
    io,
    siteNamespaces: () => childNamespaces(sites),
    existingNamespace: (site) => {
      const nsp = registeredNamespace(io, `/${site}`);
      return nsp && nsp.name !== '/' ? nsp : undefined;
    },
    connectionCount: () => io.engine.clientsCount,
  };
}
