import { randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { Registry } from 'prom-client';
import { setupStickyMaster } from '../cluster/sticky-master';
import { Supervisor } from '../cluster/supervisor';
import { workerEnv, type GatewayConfig } from '../config';
import { Intake } from '../events/intake';
import { eventToWire } from '../events/parse';
import { MqttIngress } from '../ingress/mqtt';
import { LeaderConsumer } from '../leader/leader-consumer';
import { createMetrics, type Metrics } from '../metrics/metrics';
import { createOpsServer, PartialAnswer } from '../ops/ops-server';
import { Liveness } from '../presence/redis-presence';
import { PresenceSweeper } from '../presence/sweeper';
import {
  commandNotSent,
  commandsFlowing,
  connectInBackground,
  createRedisClient,
  isReplyError,
  periodic,
  plainRedisError,
  quitClient,
  singleFlight,
  withDeadline,
  type RedisClient,
} from '../redis/connect';
import { createKeys } from '../redis/keys';
import { Admission, HandshakeSlots, slotHoldMs } from '../shared/admission';
import { errorMessage, GatewayError } from '../shared/errors';
import { closeServer, listen } from '../shared/http';
import { every, type Periodic } from '../shared/clock';
import { compactAfterConnectBursts } from '../shared/idle-compaction';
import { Services, createShutdown, type Running } from '../shared/lifecycle';
import { RateLimitedLog, type Logger } from '../shared/logger';
import { hostMetrics, primaryReadiness } from './primary-health';
import { admissionRefused, queueChanged } from '../realtime/limits';

/**
 * The primary of one host: owns the public port (sticky routing to workers),
 * the ops port, worker supervision, and competes for the cluster-wide events
 * consumer lease. This function only composes; each part lives in its
 * subsystem.
 */
export async function runPrimary(config: GatewayConfig, log: Logger): Promise<Running> {
  const redisCfg = config.redis;
  if (!redisCfg) throw new Error('the primary needs Redis');
  const nodeId = `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const services = new Services(log);
  const keys = createKeys(config.keyPrefix);
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: true, loopDelayOnClock: true });

  // gateway_redis_up follows the connections' own state, whether or not anyone asks /readyz.
  const redisState = new Map<string, boolean>();
  const refreshRedisUp = (): void => {
    const primaryUp = redisState.size > 0 && [...redisState.values()].every(Boolean);
    const workersUp = supervisor.list().every((w) => w.nodeId === null || w.redis);
    metrics.redisUp.set(primaryUp && workersUp ? 1 : 0);
  };
  const redis = (name: string, opts: Omit<Parameters<typeof createRedisClient>[1], 'name'>): RedisClient => {
    redisState.set(name, false);
    const c = createRedisClient(
      redisCfg,
      {
        ...opts,
        name: `${nodeId}:${name}`,
        role: name,
        onState: (up) => {
          redisState.set(name, up);
          refreshRedisUp();
        },
        onCommandError: (role) => metrics.redisCommandErrors.inc({ connection: role }),
        onUnanswered: (role, n) => metrics.redisUnanswered.set({ connection: role }, n),
      },
      log,
    );
    connectInBackground(c, log, name);
    services.onStop(`redis ${name}`, () => quitClient(c));
    return c;
  };
  const cmd = redis('cmd', {});
  const sub = redis('events', { pubsub: true });
  const fast = redis('health', { failFast: true });

  const intake = new Intake(metrics, new RateLimitedLog(log.child({ sub: 'intake' }), config.dropLogIntervalMs), config.maxMessageBytes);
  const consumer = new LeaderConsumer({ config, keys, sub, cmd, nodeId, intake, metrics, log: log.child({ sub: 'consumer' }) });
  const liveness = new Liveness(cmd, keys, config.presenceTtlMs);
  const sweeper = new PresenceSweeper({ cmd, keys, liveness, adapterMode: config.adapterMode, metrics, log });
  const supervisor = new Supervisor(
    {
      workers: config.workers,
      maxBackoffMs: config.workerRespawnMaxBackoffMs,
      killAfterMs: config.workerKillMs,
      bootTimeoutMs: config.workerBootMs,
      env: (slot) => workerEnv(config, slot),
    },
    log.child({ sub: 'supervisor' }),
    metrics,
  );
  const mqtt = config.mqtt
    ? new MqttIngress({ config, mqtt: config.mqtt, keys, cmd, isLeader: () => consumer.isLeader, metrics, log: log.child({ sub: 'mqtt' }) })
    : null;
  supervisor.onWorkerDied((info) => {
    if (info.nodeId) sweeper.sweepInBackground(info.nodeId);
  });

  // One bucket for the host: the primary sees every handshake before a worker does.
  const admission = new Admission(config.admissionRate, config.admissionBurst);
  // Handshakes in flight per worker, counted here: the primary routes each one.
  const slots = new HandshakeSlots(config.admissionConcurrency, slotHoldMs(config.handshakeTimeoutMs));

  let draining = false;
  const skipped = (task: string) => () => metrics.redisPeriodicSkipped.inc({ task });
  // Probes polled during a partition share one command in flight instead of queueing one each.
  const ping = singleFlight(() => fast.ping());
  const clusterView = singleFlight(() => Promise.all([consumer.currentLeader(), liveness.all()]));
  const ops = createOpsServer({
    config,
    log: log.child({ sub: 'ops' }),
    metrics,
    intake,
    readiness: async () => {
      const r = await primaryReadiness({
        ping,
        supervisor,
        consumer,
        metrics,
        registry,
        workersExpected: config.workers,
        draining: () => draining,
      });
      // Reported, never a reason to be unready: clients are served without the broker.
      return mqtt && consumer.isLeader ? { ...r, checks: { ...r.checks, mqtt: mqtt.report() } } : r;
    },
    metricsText: () =>
      hostMetrics({
        supervisor,
        registry,
        metrics,
        maxSites: config.metricsMaxSites,
        missingLog: new RateLimitedLog(log.child({ sub: 'metrics' }), 60_000),
        refresh: () => {
          refreshRedisUp();
          metrics.admissionTokens.set(admission.tokens());
          metrics.admissionInFlight.set(slots.inFlight());
        },
      }),
    publish: async (events) => {
      // Through the events channel, so API events are sequenced, replayable and
      // delivered exactly like Frappe's own publishes. On the fail-fast
      // connection (no offline queue: a command is written to the socket at
      // once or refused unsent) with a deadline. The answer says what is
      // known: nothing sent (down, stalled, refused unsent), sent but not
      // confirmed in time (Redis may run it later: the caller retries with
      // idempotency keys), or refused by Redis.
      if (!commandsFlowing(fast)) {
        throw new GatewayError('GW_ERR_REDIS_UNAVAILABLE', 'redis connection is down or stalled (no reply for 3 s): nothing was sent');
      }
      const pipe = fast.pipeline();
      for (const e of events) pipe.publish(config.eventsChannel, eventToWire(e));
      const ms = config.publishTimeoutMs;
      let res: [Error | null, unknown][] | null;
      try {
        res = await withDeadline(pipe.exec(), ms, `redis did not confirm within ${ms} ms (GATEWAY_PUBLISH_TIMEOUT_MS)`);
      } catch (err) {
        throw publishFailure([err], true);
      }
      const errors = (res ?? []).flatMap(([err]) => (err ? [err] : []));
      if (errors.length > 0) throw publishFailure(errors, errors.length === events.length);
    },
    cluster: async () => {
      // This host's own part answers whatever Redis does.
      const local = {
        mode: 'cluster',
        node: { id: nodeId, host: hostname(), pid: process.pid, ...consumer.state() },
        workers: supervisor.list(),
      };
      const ms = config.opsTimeoutMs;
      try {
        const [leader, nodes] = await withDeadline(
          clusterView(),
          ms,
          `the leader lease and the process registry did not come from redis within ${ms} ms (GATEWAY_OPS_TIMEOUT_MS)`,
        );
        return { ...local, leader, nodes: nodes.alive };
      } catch (err) {
        throw new PartialAnswer(`redis unavailable: ${plainRedisError(err)}`, local);
      }
    },
    rooms: async (site, room) => {
      const perWorker = await supervisor.ask((id) => ({ type: 'gw:rooms', id, site, room }));
      return { host: hostname(), note: 'this host only: query each host for the whole cluster', workers: perWorker };
    },
  });

  const publicServer = createPublicServer(metrics, log, {
    admission: { bucket: admission, slots, config },
    responsive: (id) => supervisor.isResponsive(id),
  });
  const openSockets = new Set<Socket>();
  publicServer.on('connection', (socket: Socket) => {
    openSockets.add(socket);
    socket.once('close', () => openSockets.delete(socket));
  });
  // Not while cmd is down or stalled, and one at a time (see `periodic`).
  const heartbeat = periodic(
    cmd,
    () => {
      const st = consumer.state();
      return liveness
        .beat(nodeId, {
          kind: 'primary',
          host: hostname(),
          pid: process.pid,
          leader: st.leader,
          epoch: st.epoch,
          workers: supervisor.list().length,
        })
        .catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'heartbeat failed'));
    },
    skipped('heartbeat'),
  );
  const sweepDead = periodic(
    cmd,
    () => sweeper.sweepDead().catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'presence sweep failed')),
    skipped('presence_sweep'),
  );

  // Started in this order, stopped in reverse (the Redis connections above stop last).
  services.onStop('liveness', () =>
    bounded(
      liveness.remove(nodeId).catch(() => undefined),
      REDIS_STOP_MS,
    ),
  );
  services.add(periodicService('heartbeat', Math.max(200, Math.floor(config.presenceTtlMs / 3)), heartbeat));
  services.add(
    periodicService('dead-host sweeper', Math.max(500, Math.floor(config.presenceTtlMs / 2)), () => {
      // The leader sweeps processes of hosts that died as a whole.
      if (consumer.isLeader) sweepDead();
    }),
  );
  services.onStop('ops server', () => ops.close());
  // Routed connections hold nothing here once handed over, but the hand-overs of a burst leave their garbage.
  const compaction = compactAfterConnectBursts(publicServer, config, metrics.idleCompaction, log.child({ sub: 'memory' }));
  services.onStop('idle compaction', () => compaction.stop());
  services.add({ name: 'supervisor', start: () => supervisor.start() });
  services.add({
    name: 'events consumer',
    start: () => {
      consumer.start().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'events consumer failed to start'));
    },
    stop: () => consumer.stop(),
  });
  if (mqtt) services.add({ name: 'mqtt ingress', start: () => mqtt.start(), stop: () => mqtt.stop() });
  // Both ports before anything starts: a port that is taken fails the start
  // (main.ts names it, exit 1) before any worker is forked.
  await listen(publicServer, config.port, config.host);
  await ops.listen({ port: config.opsPort, host: config.opsHost });
  await services.start();
  heartbeat();

  log.info(
    {
      mode: 'cluster',
      nodeId,
      port: config.port,
      opsPort: config.opsPort,
      opsHost: config.opsHost,
      workers: config.workers,
      redis: redisCfg.mode,
      adapter: config.adapterMode,
    },
    'realtime-gateway listening',
  );
  if (config.publishToken === null) {
    log.warn(
      { opsPort: config.opsPort },
      'GATEWAY_PUBLISH_TOKEN is not set: the publish and cluster APIs accept requests from loopback only',
    );
  }

  return {
    shutdown: createShutdown(
      services,
      {
        beginDrain: () => (draining = true),
        // Bounded: a connection the sticky balancer proxied to a worker that
        // died stays open and would hold close() (and the exit) forever.
        stopAccepting: () =>
          bounded(closeServer(publicServer), config.drainMs + 3000).then(() => {
            for (const socket of openSockets) socket.destroy();
          }),
        // Hand the events over first: a standby takes over within one renew interval.
        handOver: async () => {
          // Leave the broker first: what it has not had acknowledged goes to the next leader.
          await mqtt?.stop();
          await bounded(consumer.stop(), REDIS_STOP_MS);
        },
        drainClients: () => supervisor.drain(config.drainMs, Math.max(1000, config.shutdownGraceMs - 2000)),
      },
      config.shutdownGraceMs,
      log,
    ),
  };
}

/**
 * What a failed publish tells its caller, from the errors of its commands
 * (`all`: every event failed, or the whole pipeline did):
 * all refused before they were written, GW_ERR_REDIS_UNAVAILABLE (safe to
 * retry); all answered with a Redis error, GW_ERR_REDIS_REFUSED (not run);
 * anything else, or a mix, GW_ERR_PUBLISH_UNCONFIRMED: some may have been
 * run, now or when the link heals.
 */
export function publishFailure(errors: readonly unknown[], all: boolean): GatewayError {
  const first = errors[0];
  const reason = plainRedisError(first);
  if (all && errors.every(commandNotSent)) {
    return new GatewayError('GW_ERR_REDIS_UNAVAILABLE', `${reason}: nothing was sent`, { cause: first, retryable: true });
  }
  if (all && errors.every(isReplyError))
    return new GatewayError('GW_ERR_REDIS_REFUSED', `redis refused the events: ${reason}`, { cause: first });
  return new GatewayError('GW_ERR_PUBLISH_UNCONFIRMED', reason, { cause: first, retryable: true });
}

/**
 * Shutdown steps that talk to Redis wait at most this long: with Redis down
 * they would otherwise queue until the grace period's fuse (Ctrl-C hanging
 * for 30 s).
 */
const REDIS_STOP_MS = 1500;

function bounded(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p.then(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, ms)))]).finally(() => clearTimeout(timer));
}

/** A timer as a service: runs `fn` every `ms` from start until stop, on the process' clock (shared/clock). */
function periodicService(name: string, ms: number, fn: () => void): { name: string; start(): void; stop(): void } {
  let timer: Periodic | undefined;
  return {
    name,
    start: () => {
      timer = every(ms, fn);
    },
    stop: () => timer?.stop(),
  };
}

/**
 * The public Socket.IO port: sticky routing to the workers. A plain TCP
 * server: the primary reads the request line only and hands the socket over.
 */
export function createPublicServer(
  metrics: Metrics,
  log: Logger,
  options: {
    admission?: {
      bucket: Admission;
      slots?: HandshakeSlots;
      config: Pick<
        GatewayConfig,
        'admissionRate' | 'admissionBurst' | 'admissionConcurrency' | 'admissionQueue' | 'admissionQueueMs' | 'dropLogIntervalMs'
      >;
    };
    /** False for a worker that stopped answering (see the supervisor's WORKER_UNRESPONSIVE_MS). */
    responsive?: (workerId: number) => boolean;
  } = {},
): Server {
  const { admission, responsive } = options;
  const server = createServer();
  // The sticky balancer routes on the plain-text request line (Engine.IO sid),
  // so TLS has to be terminated in front of the gateway. A TLS ClientHello
  // (first byte 0x16) gets a clear log line instead of an unexplained failure.
  const tlsLog = new RateLimitedLog(log.child({ sub: 'sticky' }), 60_000);
  server.prependListener('connection', (socket) => {
    socket.once('data', (chunk: Buffer) => {
      if (chunk[0] !== 0x16) return;
      metrics.connectErrors.inc({ reason: 'tls_not_terminated' });
      tlsLog.warn(
        'tls',
        { remote: socket.remoteAddress },
        'TLS handshake on the Socket.IO port: terminate TLS before the gateway (nginx, ingress, load balancer)',
      );
      socket.destroy();
    });
  });
  const admissionLog = new RateLimitedLog(log.child({ sub: 'admission' }), admission?.config.dropLogIntervalMs ?? 10_000);
  setupStickyMaster(server, {
    onRequestLineTimeout: () => metrics.connectErrors.inc({ reason: 'request_line_timeout' }),
    ...(admission
      ? {
          admission: admission.bucket,
          ...(admission.slots ? { slots: admission.slots } : {}),
          queue: { limit: admission.config.admissionQueue, maxWaitMs: admission.config.admissionQueueMs },
          onQueue: (result, length) => queueChanged(metrics, result, length),
          onAdmissionRefused: () => admissionRefused(metrics, admissionLog, admission.config),
        }
      : {}),
    ...(responsive ? { responsive } : {}),
  });
  return server;
}
