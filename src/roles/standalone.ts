import { createServer } from 'node:http';
import { hostname } from 'node:os';
import { Registry } from 'prom-client';
import type { GatewayConfig } from '../config';
import { MemoryIdempotency } from '../events/idempotency';
import { Intake } from '../events/intake';
import { backendFromConfig } from '../frappe/backend';
import { createMetrics } from '../metrics/metrics';
import { createOpsServer } from '../ops/ops-server';
import { LocalPresence } from '../presence/presence';
import { drainConnections, drainPace } from '../realtime/drain';
import { deliverLocally } from '../realtime/local-delivery';
import { roomReport } from '../realtime/room-report';
import { createSocketServer } from '../realtime/socket-server';
import { instrumentServer } from '../realtime/server-metrics';
import { admissionRefused, queueChanged } from '../realtime/limits';
import { Admission, HandshakeSlots, gateHandshakes, slotHoldMs } from '../shared/admission';
import { closeServer, listen } from '../shared/http';
import { compactAfterConnectBursts } from '../shared/idle-compaction';
import { Services, createShutdown, type Running } from '../shared/lifecycle';
import { RateLimitedLog, type Logger } from '../shared/logger';

/**
 * Standalone mode: one process, in-memory adapter, events through the HTTP
 * publish API. Auth, rooms, presence, metrics and health work as in a cluster.
 */
export async function runStandalone(config: GatewayConfig, log: Logger): Promise<Running> {
  const services = new Services(log);
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: true, maxSites: config.metricsMaxSites });
  const httpServer = createServer();
  const backend = backendFromConfig(config, { metrics, log, socketSecret: () => config.socketSecret });
  const presence = new LocalPresence();
  const server = createSocketServer({ config, httpServer, backend, presence, metrics, log: log.child({ sub: 'socket' }) });
  instrumentServer(server.io, metrics);
  // Admission control in front of Engine.IO: this process is the whole host.
  const admission = new Admission(config.admissionRate, config.admissionBurst);
  const slots = new HandshakeSlots(config.admissionConcurrency, slotHoldMs(config.handshakeTimeoutMs));
  const admissionLog = new RateLimitedLog(log.child({ sub: 'admission' }), config.dropLogIntervalMs);
  gateHandshakes(
    httpServer,
    server.io,
    { admission, slots, queue: { limit: config.admissionQueue, maxWaitMs: config.admissionQueueMs } },
    () => admissionRefused(metrics, admissionLog, config),
    (result, length) => queueChanged(metrics, result, length),
  );
  const intake = new Intake(metrics, new RateLimitedLog(log.child({ sub: 'intake' }), config.dropLogIntervalMs), config.maxMessageBytes);
  let draining = false;
  const idempotency = new MemoryIdempotency(config.idempotencyWindowMs, config.idempotencyMaxKeys, () =>
    metrics.idempotencyKeysEvicted.inc(),
  );

  const ops = createOpsServer({
    config,
    log: log.child({ sub: 'ops' }),
    metrics,
    intake,
    readiness: async () => ({ ready: !draining, checks: { mode: 'standalone', draining } }),
    metricsText: async () => {
      metrics.admissionTokens.set(admission.tokens());
      metrics.admissionInFlight.set(slots.inFlight());
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
    publish: async (events) => {
      // The same rule as the cluster leader's script: one broadcast per key and site within the window.
      const fresh = events.filter((e) => e.idempotencyKey === undefined || idempotency.claim(e.namespace ?? '', e.idempotencyKey));
      if (fresh.length < events.length) metrics.eventsDeduplicated.inc({ by: 'idempotency_key' }, events.length - fresh.length);
      deliverLocally(server, metrics, fresh, config.fastPath);
    },
    cluster: async () => {
      const namespaces: Record<string, number> = {};
      for (const nsp of server.siteNamespaces()) namespaces[nsp.name.slice(1)] = nsp.sockets.size;
      return {
        mode: 'standalone',
        node: { id: `${hostname()}-${process.pid}`, pid: process.pid },
        leader: null,
        connections: server.connectionCount(),
        namespaces,
      };
    },
    rooms: async (site, room) => roomReport(server, site, room),
  });

  const compaction = compactAfterConnectBursts(httpServer, config, metrics.idleCompaction, log.child({ sub: 'memory' }));
  // Started in this order, stopped in reverse.
  services.onStop('idle compaction', () => compaction.stop());
  services.onStop('presence', () => presence.stop());
  services.onStop('socket.io', () => new Promise<void>((r) => server.io.close(() => r())));
  services.onStop('ops server', () => ops.close());
  // Both ports before anything starts: a taken port is one clear line from main.ts.
  await listen(httpServer, config.port, config.host);
  await ops.listen({ port: config.opsPort, host: config.opsHost });
  await services.start();

  log.info({ mode: 'standalone', port: config.port, opsPort: config.opsPort }, 'realtime-gateway listening');
  if (config.publishToken === null) {
    log.warn({ opsPort: config.opsPort }, 'GATEWAY_PUBLISH_TOKEN is not set: the publish API accepts requests from loopback only');
  }

  return {
    shutdown: createShutdown(
      services,
      {
        beginDrain: () => (draining = true),
        stopAccepting: () => closeServer(httpServer),
        drainClients: () => drainConnections(server.io, drainPace(config), log),
      },
      config.shutdownGraceMs,
      log,
    ),
  };
}
