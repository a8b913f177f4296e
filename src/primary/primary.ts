import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { AggregatorRegistry, Registry } from 'prom-client';
import type { GatewayConfig } from '../config';
import { encodeRoomBroadcast } from '../consumer/encode';
import { Intake } from '../consumer/intake';
import { LeaderConsumer } from '../consumer/leader-consumer';
import { openDocRoom } from '../frappe/rooms';
import { createMetrics } from '../ops/metrics';
import { createOpsServer } from '../ops/ops-server';
import { Liveness, sweepDeadWorker } from '../presence/redis-presence';
import { connectInBackground, createRedisClient, quitClient } from '../redis/connect';
import { createKeys } from '../redis/keys';
import type { Running } from '../standalone';
import { errorMessage } from '../shared/errors';
import { closeServer, listen } from '../shared/http';
import { Closers, armShutdownFuse } from '../shared/lifecycle';
import { RateLimitedLog, type Logger } from '../shared/logger';
import { setupStickyMaster } from './sticky-master';
import { Supervisor } from './supervisor';

const HEALTH_PING_TIMEOUT_MS = 1000;

/**
 * The primary of one host: owns the public port (sticky routing to workers),
 * the ops port, worker supervision, and competes for the cluster-wide events
 * consumer lease.
 */
export async function runPrimary(config: GatewayConfig, log: Logger): Promise<Running> {
  const redisCfg = config.redis;
  if (!redisCfg) throw new Error('the primary needs Redis');
  const hostId = `${hostname()}-${process.pid}`;
  const nodeId = `${hostId}-${randomBytes(3).toString('hex')}`;
  const closers = new Closers(log);
  const keys = createKeys(config.keyPrefix);
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: true });

  const cmd = createRedisClient(redisCfg, { name: `${nodeId}:cmd` }, log);
  const sub = createRedisClient(redisCfg, { name: `${nodeId}:events`, pubsub: true }, log);
  const fast = createRedisClient(redisCfg, { name: `${nodeId}:health`, failFast: true }, log);
  for (const [name, c] of [
    ['cmd', cmd],
    ['events', sub],
    ['health', fast],
  ] as const) {
    connectInBackground(c, log, name);
    closers.add(`redis ${name}`, () => quitClient(c));
  }

  const intake = new Intake(metrics, new RateLimitedLog(log.child({ sub: 'intake' }), config.dropLogIntervalMs), config.maxMessageBytes);
  const consumer = new LeaderConsumer({ config, keys, sub, cmd, nodeId, intake, metrics, log: log.child({ sub: 'consumer' }) });
  const liveness = new Liveness(cmd, keys, config.presenceTtlMs);

  const supervisor = new Supervisor(config, log.child({ sub: 'supervisor' }), metrics);

  // Presence of a process that died: remove its entries and tell the viewers.
  const sweep = async (workerNodeId: string): Promise<void> => {
    const changed = await sweepDeadWorker(cmd, keys, workerNodeId, liveness);
    for (const { ref, users } of changed) {
      const room = openDocRoom(ref.doctype, ref.docname);
      const p = encodeRoomBroadcast(config.adapterMode, keys.adapterPrefix, ref.site, room, 'doc_viewers', [
        { doctype: ref.doctype, docname: ref.docname, users },
      ]);
      await (config.adapterMode === 'sharded' ? cmd.spublish(p.channel, p.payload) : cmd.publish(p.channel, p.payload));
    }
    await liveness.remove(workerNodeId);
    metrics.presenceSweeps.inc(changed.length);
    if (changed.length > 0) log.info({ worker: workerNodeId, documents: changed.length }, 'swept presence of a dead worker');
  };
  supervisor.onWorkerDied((info) => {
    if (info.nodeId) sweep(info.nodeId).catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'presence sweep failed'));
  });
  // The leader also sweeps processes of hosts that died as a whole.
  const sweeper = setInterval(
    () => {
      if (!consumer.isLeader) return;
      liveness
        .all()
        .then(async ({ dead }) => {
          for (const id of dead) await sweep(id);
        })
        .catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'presence sweep failed'));
    },
    Math.max(500, Math.floor(config.presenceTtlMs / 2)),
  );
  closers.add('sweeper', () => clearInterval(sweeper));

  const beat = (): void => {
    if (cmd.status !== 'ready') return;
    const st = consumer.state();
    liveness
      .beat(nodeId, {
        kind: 'primary',
        host: hostname(),
        pid: process.pid,
        leader: st.leader,
        epoch: st.epoch,
        workers: supervisor.list().length,
      })
      .catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'heartbeat failed'));
  };
  const heartbeat = setInterval(beat, Math.max(200, Math.floor(config.presenceTtlMs / 3)));
  closers.add('heartbeat', () => clearInterval(heartbeat));
  closers.add('liveness', () => liveness.remove(nodeId).catch(() => undefined));

  let draining = false;
  const ops = createOpsServer({
    config,
    log: log.child({ sub: 'ops' }),
    metrics,
    intake,
    readiness: async () => {
      let redis = false;
      let redisError: string | undefined;
      try {
        await Promise.race([
          fast.ping(),
          new Promise((_r, rej) => setTimeout(() => rej(new Error('ping timed out')), HEALTH_PING_TIMEOUT_MS).unref()),
        ]);
        redis = true;
      } catch (err) {
        redisError = errorMessage(err);
      }
      metrics.redisUp.set(redis ? 1 : 0);
      const workersUp = supervisor.upCount();
      // Workers whose Redis connections are up. At least one must be, so the
      // host can serve; requiring all would take a host out of rotation while
      // one respawned worker connects, so the count is reported instead.
      const workersRedis = supervisor.list().filter((w) => w.nodeId !== null && w.redis).length;
      const ready = redis && workersRedis > 0 && !draining;
      const reason = draining
        ? 'draining'
        : !redis
          ? `redis unreachable: ${redisError ?? ''}`
          : workersUp === 0
            ? 'no worker is up'
            : workersRedis === 0
              ? 'no worker is connected to redis yet'
              : undefined;
      return {
        ready,
        checks: {
          mode: 'cluster',
          redis,
          workersUp,
          workersRedis,
          workersExpected: config.workers,
          draining,
          leader: consumer.state().leader,
          ...(reason ? { reason } : {}),
        },
      };
    },
    metricsText: async () => {
      const parts: object[] = (await supervisor.ask((id) => ({ type: 'gw:metrics', id }))).filter(Array.isArray);
      parts.push(await registry.getMetricsAsJSON());
      const agg = AggregatorRegistry.aggregate(parts);
      return { contentType: agg.contentType, body: await agg.metrics() };
    },
    publish: async (events) => {
      // Through the events channel, so API events are sequenced, replayable and
      // delivered exactly like Frappe's own publishes.
      const pipe = cmd.pipeline();
      for (const e of events) pipe.publish(config.eventsChannel, JSON.stringify(e));
      const res = await pipe.exec();
      const failed = res?.find(([err]) => err);
      if (failed?.[0]) throw failed[0];
    },
    cluster: async () => {
      const [leader, nodes] = await Promise.all([
        consumer.currentLeader().catch(() => null),
        liveness.all().catch(() => ({ alive: [], dead: [] })),
      ]);
      return {
        mode: 'cluster',
        node: { id: nodeId, host: hostname(), pid: process.pid, ...consumer.state() },
        leader,
        workers: supervisor.list(),
        nodes: nodes.alive,
      };
    },
    rooms: async (site, room) => {
      const perWorker = await supervisor.ask((id) => ({ type: 'gw:rooms', id, site, room }));
      return { host: hostname(), note: 'this host only: query each host for the whole cluster', workers: perWorker };
    },
  });
  closers.add('ops server', () => ops.close());

  supervisor.start();
  const publicServer = createServer();
  // The sticky balancer routes on the plain-text request line (Engine.IO sid),
  // so TLS has to be terminated in front of the gateway. A TLS ClientHello
  // (first byte 0x16) gets a clear log line instead of an unexplained failure.
  const tlsLog = new RateLimitedLog(log.child({ sub: 'sticky' }), 60_000);
  publicServer.prependListener('connection', (socket) => {
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
  setupStickyMaster(publicServer);
  await listen(publicServer, config.port, config.host);
  await ops.listen({ port: config.opsPort, host: config.host });
  consumer.start().catch((err: unknown) => log.error({ err: errorMessage(err) }, 'events consumer failed to start'));
  closers.add('consumer', () => consumer.stop());
  beat();
  log.info(
    {
      mode: 'cluster',
      nodeId,
      port: config.port,
      opsPort: config.opsPort,
      workers: config.workers,
      redis: redisCfg.mode,
      adapter: config.adapterMode,
    },
    'realtime-gateway listening',
  );
  if (config.publishToken === null) {
    log.warn({ opsPort: config.opsPort }, 'GATEWAY_PUBLISH_TOKEN is not set: the publish API accepts requests from loopback only');
  }

  return {
    shutdown: async (reason) => {
      if (draining) return;
      draining = true;
      armShutdownFuse(config.shutdownGraceMs, log);
      log.info({ reason }, 'shutting down: draining');
      const stopAccepting = closeServer(publicServer);
      // Hand the events over first: a standby takes over within one renew interval.
      await consumer.stop();
      await supervisor.drain(config.drainMs, Math.max(1000, config.shutdownGraceMs - 2000));
      await stopAccepting;
      await closers.close();
    },
  };
}
