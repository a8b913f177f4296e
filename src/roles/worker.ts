import { every } from '../shared/clock';
import cluster from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { createAdapter } from '@socket.io/redis-adapter';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import { setupWorker } from '@socket.io/sticky';
import { Registry } from 'prom-client';
import type { Namespace, Server } from 'socket.io';
import type { Adapter } from 'socket.io-adapter';
import type { GatewayConfig } from '../config';
import { decodeAllSites } from '../events/encode';
import { deliverToAllSites } from '../realtime/local-delivery';
import { HistoryReader } from '../recovery/history';
import { replayOf } from '../recovery/replay';
import { ReplayGate } from '../recovery/replay-gate';
import { backendFromConfig } from '../frappe/backend';
import { createMetrics } from '../metrics/metrics';
import { Liveness, RedisPresence } from '../presence/redis-presence';
import { sessionIdFor } from '../cluster/sticky-master';
import { commandsFlowing, connectInBackground, createRedisClient, onFlowing, periodic, quitClient } from '../redis/connect';
import { createKeys } from '../redis/keys';
import { SocketSecret } from '../redis/socket-secret';
import { roomReport } from '../realtime/room-report';
import { openDocRoom } from '../events/rooms';
import { drainConnections, drainPace } from '../realtime/drain';
import { errorMessage } from '../shared/errors';
import { asPrimaryMessage, WORKER_ALIVE_INTERVAL_MS, type WorkerToPrimary } from '../cluster/ipc';
import { Services, createShutdown } from '../shared/lifecycle';
import { HandshakeTracker, slotHoldMs } from '../shared/admission';
import type { Logger } from '../shared/logger';
import { RedisSessionStore } from '../recovery/session-recovery';
import { createSocketServer } from '../realtime/socket-server';
import { countAdapterTimeouts, instrumentServer } from '../realtime/server-metrics';
import { WorkerDelivery } from '../realtime/fast-adapter';
import { localWhileRedisUnavailable } from '../realtime/fail-fast-broadcast';
import type { SocketServer } from '../realtime/socket-server';
import { createUserConnections } from '../realtime/user-limit';
import { createConnectionCounter } from '../realtime/connection-counter';
import { compactAfterConnectBursts } from '../shared/idle-compaction';

/** How long the sessions opened and closed here are counted before one `gw:sessions` report. */
const SESSION_REPORT_MS = 25;

function send(m: WorkerToPrimary): void {
  if (process.connected) process.send?.(m, undefined, undefined, () => undefined);
}

/**
 * @socket.io/sticky's setupWorker (it takes the connections the primary
 * hands over), minus its report of every Engine.IO session opened and
 * closed as an IPC message of its own: those are counted and sent at most
 * every SESSION_REPORT_MS (`gw:sessions`, read by the primary's least-loaded
 * routing). Two IPC writes per connection were ~6% of a worker's CPU in a
 * 10,000-client storm, by profile (BENCHMARKS.md, "Handshake throughput").
 */
function setupStickyWorker(io: Server): void {
  const before = new Set(io.engine.listeners('connection'));
  setupWorker(io);
  for (const l of io.engine.listeners('connection')) if (!before.has(l)) io.engine.off('connection', l as (...a: unknown[]) => void);
  let opened = 0;
  let closed = 0;
  const report = (): void => {
    send({ type: 'gw:sessions', opened, closed });
    opened = 0;
    closed = 0;
  };
  // At most one report per SESSION_REPORT_MS: a storm hands this worker about
  // one connection per event-loop turn, so a report per turn was still one
  // IPC write per connection (2% of a worker, by profile). The primary counts
  // what it routed here as pending until the report, so it still balances.
  const count = (): void => {
    if (opened + closed === 0) setTimeout(report, SESSION_REPORT_MS).unref();
  };
  const onClose = (): void => {
    count();
    closed++;
  };
  io.engine.on('connection', (conn: { once(ev: 'close', fn: () => void): void }) => {
    count();
    opened++;
    conn.once('close', onClose);
  });
}

/**
 * A worker: one Socket.IO server behind the primary's sticky balancer, the
 * Redis adapter between all workers of all hosts, cluster-wide presence.
 */
export async function runWorker(config: GatewayConfig, log: Logger): Promise<void> {
  const redisCfg = config.redis;
  if (!redisCfg) throw new Error('a worker needs Redis');
  const nodeId = `${hostname()}-${process.ppid}-w${cluster.worker?.id ?? 0}-${randomBytes(3).toString('hex')}`;
  const services = new Services(log);
  const keys = createKeys(config.keyPrefix);
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: true });

  const onCommandError = (role: string): void => metrics.redisCommandErrors.inc({ connection: role });
  const onUnanswered = (role: string, n: number): void => metrics.redisUnanswered.set({ connection: role }, n);
  // The command connection stalled (commands without replies): not connected to Redis, whatever its status says.
  let pubStalled = false;
  let reportStatus: (() => void) | null = null;
  const onPubState = (up: boolean): void => {
    const stalled = !up && pub.status === 'ready';
    if (stalled === pubStalled) return;
    pubStalled = stalled;
    // Tell the primary now (readiness), not at the next heartbeat.
    reportStatus?.();
  };
  const pub = createRedisClient(redisCfg, { name: `${nodeId}:pub`, onCommandError, onUnanswered, onState: onPubState }, log);
  const sub = createRedisClient(redisCfg, { name: `${nodeId}:sub`, subscriber: true, onCommandError, onUnanswered }, log);
  // Lookups that must not wait for a Redis outage to end (auth cache, secret).
  const fast = createRedisClient(redisCfg, { name: `${nodeId}:fast`, failFast: true, onCommandError, onUnanswered }, log);
  for (const [name, c] of [
    ['pub', pub],
    ['sub', sub],
    ['fast', fast],
  ] as const) {
    connectInBackground(c, log, name);
    services.onStop(`redis ${name}`, () => quitClient(c));
  }

  const skipped = (task: string) => () => metrics.redisPeriodicSkipped.inc({ task });
  const secret = new SocketSecret(config.socketSecret, fast, log, skipped('socket_secret'));
  services.onStop('socket secret', () => secret.stop());
  const backend = backendFromConfig(config, { metrics, log, socketSecret: () => secret.get(), redis: { client: fast, keys } });
  const liveness = new Liveness(pub, keys, config.presenceTtlMs);
  // Client-driven writes (room joins, presence, sessions) neither wait nor
  // queue while the connections are down or stalled: joins are refused,
  // closes and session writes are recorded here and applied once both flow
  // again. `sub` only counts as stalled with a command in flight, `pub` has a
  // heartbeat every GATEWAY_PRESENCE_TTL_MS / 3.
  const redisAvailable = (): boolean => commandsFlowing(pub) && commandsFlowing(sub);
  const presence = new RedisPresence(pub, keys, nodeId, liveness, redisAvailable, () =>
    metrics.redisDeferred.inc({ what: 'presence_close' }),
  );
  // Runs before the Redis clients close: a drained worker leaves the registry at once.
  // Bounded: with Redis down it would wait for the grace period's fuse.
  services.onStop('liveness', () =>
    Promise.race([liveness.remove(nodeId).catch(() => undefined), new Promise((r) => setTimeout(r, 1500).unref())]),
  );

  // Missed-event history exists in sharded mode only (the leader appends offsets to pre-encoded packets).
  const history = config.history && config.adapterMode === 'sharded' ? new HistoryReader(pub, keys) : null;
  const gate = history ? new ReplayGate() : null;
  let server: SocketServer | null = null;
  const delivery = new WorkerDelivery({
    metrics,
    log: log.child({ sub: 'delivery' }),
    fastPath: config.fastPath,
    history,
    gate,
    namespaces: () => server?.siteNamespaces() ?? [],
    existingNamespace: (site) => server?.existingNamespace(site),
  });
  const baseAdapter =
    config.adapterMode === 'sharded'
      ? createShardedAdapter(pub, sub, { channelPrefix: keys.adapterPrefix, subscriptionMode: 'dynamic' })
      : createAdapter(pub, sub, { key: keys.adapterPrefix });
  // socket.io instantiates it with `new`: a function (not an arrow) returning the adapter.
  const adapter = function workerAdapter(nsp: Namespace): Adapter {
    const a = delivery.hooks((baseAdapter as (n: Namespace) => Adapter)(nsp), nsp);
    return countAdapterTimeouts(localWhileRedisUnavailable(a, redisAvailable, metrics), metrics);
  };
  // A room is usable once Redis confirmed its subscription. Re-subscribing to
  // what the adapter just subscribed is idempotent in Redis and, on the same
  // connection, answers only after the adapter's own request.
  const roomsReady =
    config.adapterMode === 'sharded'
      ? async (nsp: Namespace, rooms: string[]) => {
          await Promise.all(rooms.map((r) => sub.ssubscribe(`${keys.adapterPrefix}#${nsp.name}#${r}#`)));
        }
      : async (nsp: Namespace) => {
          await sub.psubscribe(`${keys.adapterPrefix}#${nsp.name}#*`);
        };

  const httpServer = createServer();
  // Sticky routing happens per TCP connection: a kept-alive connection (from a
  // browser's pool or a proxy) could carry another session's request to this
  // worker. Closing after each HTTP (polling) response makes every request
  // pass the primary's sid-based routing again. WebSocket upgrades are unaffected.
  httpServer.prependListener('request', (_req, res) => res.setHeader('Connection', 'close'));
  server = createSocketServer({
    config,
    httpServer,
    backend,
    presence,
    metrics,
    log: log.child({ sub: 'socket' }),
    adapter,
    roomsReady,
    // The subscriber's connection closed: every subscription must be confirmed again after it.
    onSubscriptionsLost: (listener) => sub.on('close', listener),
    sessions: new RedisSessionStore(pub, keys, history && gate ? { history, gate, fastPath: config.fastPath } : undefined, (what) =>
      metrics.redisDeferred.inc({ what }),
    ),
    redisAvailable,
    onRedisAvailable: (listener) => {
      for (const c of [pub, sub]) onFlowing(c, () => redisAvailable() && listener());
    },
    userConnections: createUserConnections(config.maxConnectionsPerUser, log, {
      client: fast,
      keys,
      onRefreshSkipped: skipped('counter_refresh'),
    }),
    ipConnections: createConnectionCounter({
      max: config.maxConnectionsPerIp,
      what: 'address',
      log,
      redis: { client: fast, key: (ip) => keys.ipConnections(ip), onRefreshSkipped: skipped('counter_refresh') },
    }),
  });
  const io = server.io;
  const srv = server;
  setupStickyWorker(io);
  // The primary counts this worker's handshakes in flight (GATEWAY_ADMISSION_CONCURRENCY): tell it when each is over.
  if (config.admissionConcurrency > 0)
    new HandshakeTracker(io, slotHoldMs(config.handshakeTimeoutMs), () => send({ type: 'gw:handshake-done' }), replayOf).watch(httpServer);
  instrumentServer(io, metrics);
  // Session ids name this worker, so the primary routes a session's requests without shared state.
  io.engine.generateId = () => sessionIdFor(cluster.worker?.id ?? 0);
  // Bounded: io.close() waits for every adapter to unsubscribe, which with
  // Redis down would hold the drain until the primary's deadline.
  services.onStop(
    'socket.io',
    () =>
      new Promise<void>((r) => {
        io.close(() => r());
        setTimeout(r, 1500).unref();
      }),
  );

  // Room-less events arrive on the adapter's subscriber connection, after
  // and before the room broadcasts they were published between.
  if (config.adapterMode === 'sharded') {
    sub.on('smessageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString() === keys.allSitesChannel) delivery.onAllSites(message);
    });
    sub.on('close', () => delivery.subscriberLost());
    sub.on('ready', () => {
      void delivery.subscriberBack(sub.ssubscribe(keys.allSitesChannel));
    });
    sub.ssubscribe(keys.allSitesChannel).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'all-sites subscription failed'));
    void delivery.start();
  } else {
    sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString() !== keys.allSitesChannel) return;
      const m = decodeAllSites(message.toString('utf8'));
      if (!m) return;
      metrics.broadcastsReceived.inc({ kind: 'all_sites' });
      deliverToAllSites(srv, m.event, m.message, metrics);
    });
    sub.subscribe(keys.allSitesChannel).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'all-sites subscription failed'));
  }

  // Not while pub is down or stalled, and one at a time: a partition must not queue a beat per period.
  const beatOnce = (): Promise<void> => {
    const namespaces: Record<string, number> = {};
    for (const nsp of srv.siteNamespaces()) namespaces[nsp.name.slice(1)] = nsp.sockets.size;
    return liveness.beat(nodeId, {
      kind: 'worker',
      host: hostname(),
      pid: process.pid,
      primaryPid: process.ppid,
      connections: srv.connectionCount(),
      namespaces,
    });
  };
  const beatLiveness = periodic(
    pub,
    () => beatOnce().catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'heartbeat failed')),
    skipped('heartbeat'),
  );
  // Redis answers again after an outage or a partition: liveness first (a
  // sweeper must not take this worker for dead again), then the closes
  // recorded meanwhile, then the entries the other hosts swept while this
  // worker looked dead (its sockets stayed connected), with doc_viewers.
  let resyncing = false;
  const resync = async (): Promise<void> => {
    if (resyncing || !redisAvailable()) return;
    resyncing = true;
    try {
      await beatOnce();
      await presence.applyDeferred();
      for (const { ref, users } of await presence.reassert()) {
        srv
          .existingNamespace(ref.site)
          ?.to(openDocRoom(ref.doctype, ref.docname))
          .emit('doc_viewers', { doctype: ref.doctype, docname: ref.docname, users });
      }
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'presence resync after a Redis outage failed');
    } finally {
      resyncing = false;
    }
  };
  for (const c of [pub, sub]) onFlowing(c, () => void resync());
  const status = (): void => {
    // fast too: the auth cache and the connection counters fail open without it.
    const redis = pub.status === 'ready' && sub.status === 'ready' && fast.status === 'ready' && !pubStalled;
    metrics.redisUp.set(redis ? 1 : 0);
    send({ type: 'gw:status', connections: srv.connectionCount(), redis });
    beatLiveness();
  };
  reportStatus = status;
  // Both on the process' clock (shared/clock), whose grid is the primary's: the primary
  // receives every worker's gw:alive at the instants it wakes for its own lease tick.
  const beat = every(Math.max(200, Math.floor(config.presenceTtlMs / 3)), status);
  services.onStop('heartbeat', () => beat.stop());
  // Tells the primary this event loop runs (see WORKER_UNRESPONSIVE_MS).
  const alive = every(WORKER_ALIVE_INTERVAL_MS, () => send({ type: 'gw:alive' }), { ref: false });
  services.onStop('alive', () => alive.stop());
  // Handed-over connections arrive as the HTTP server's 'connection' (setupWorker).
  const compaction = compactAfterConnectBursts(httpServer, config, metrics.idleCompaction, log.child({ sub: 'memory' }));
  services.onStop('idle compaction', () => compaction.stop());
  for (const c of [pub, sub, fast]) c.on('ready', status).on('close', status);

  const shutdown = (drainMs: number) =>
    createShutdown(
      services,
      { drainClients: () => drainConnections(io, drainPace(config, drainMs), log) },
      config.shutdownGraceMs,
      log,
    )('drain');
  process.on('message', (raw: unknown) => {
    const m = asPrimaryMessage(raw);
    if (!m) return;
    switch (m.type) {
      case 'gw:metrics':
        registry.getMetricsAsJSON().then(
          (body) => send({ type: 'gw:reply', id: m.id, body }),
          (err: unknown) => send({ type: 'gw:reply', id: m.id, body: { error: errorMessage(err) } }),
        );
        break;
      case 'gw:rooms':
        send({ type: 'gw:reply', id: m.id, body: roomReport(srv, m.site, m.room) });
        break;
      case 'gw:drain':
        if (services.stopped) return;
        shutdown(m.drainMs)
          .then(() => send({ type: 'gw:drained' }))
          .finally(() => process.exit(0));
        break;
    }
  });
  // The primary is gone (crash or SIGKILL): nothing will route to us any more.
  process.on('disconnect', () => {
    log.warn('primary disconnected, exiting');
    process.exit(1);
  });
  // The primary owns shutdown; a SIGTERM sent to the whole process group must not cut the drain short.
  process.on('SIGTERM', () => undefined);
  process.on('SIGINT', () => undefined);

  send({ type: 'gw:hello', nodeId });
  status();
  log.info({ nodeId, adapter: config.adapterMode }, 'worker ready');
}
