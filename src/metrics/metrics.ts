import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * All metric definitions. Each process creates the set on its own registry;
 * the primary aggregates its workers' registries (counters summed, gauges
 * summed unless marked otherwise) and adds its own.
 */
export function createMetrics(registry: Registry, opts: { defaults: boolean }) {
  if (opts.defaults) collectDefaultMetrics({ register: registry });
  const r = [registry];
  return {
    registry,
    connections: new Gauge({
      name: 'gateway_connections',
      help: 'Open Socket.IO connections by site namespace',
      labelNames: ['namespace'],
      registers: r,
    }),
    connectionsTotal: new Counter({ name: 'gateway_connections_total', help: 'Socket.IO connections accepted', registers: r }),
    connectErrors: new Counter({
      name: 'gateway_connect_errors_total',
      help: 'Connections refused by the Frappe middleware, by reason',
      labelNames: ['reason'],
      registers: r,
    }),
    eventsReceived: new Counter({
      name: 'gateway_events_received_total',
      help: 'Realtime events received, by source (redis channel or HTTP publish API)',
      labelNames: ['source'],
      registers: r,
    }),
    eventsDropped: new Counter({
      name: 'gateway_events_dropped_total',
      help: 'Realtime events dropped, by reason',
      labelNames: ['reason'],
      registers: r,
    }),
    eventsRouted: new Counter({
      name: 'gateway_events_routed_total',
      help: 'Realtime events broadcast by the consumer, by target (room or all_sites)',
      labelNames: ['target'],
      registers: r,
    }),
    broadcastsReceived: new Counter({
      name: 'gateway_worker_broadcasts_total',
      help: 'Broadcasts a worker received for rooms or sites with local members',
      labelNames: ['kind'],
      registers: r,
    }),
    authRequests: new Counter({
      name: 'gateway_auth_requests_total',
      help: 'Connection authentications, by result',
      labelNames: ['result'],
      registers: r,
    }),
    permissionChecks: new Counter({
      name: 'gateway_permission_checks_total',
      help: 'Subscription permission checks, by result',
      labelNames: ['result'],
      registers: r,
    }),
    backendDuration: new Histogram({
      name: 'gateway_backend_request_duration_seconds',
      help: 'Duration of calls to the Frappe backend',
      labelNames: ['endpoint'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: r,
    }),
    clientEvents: new Counter({
      name: 'gateway_client_events_total',
      help: 'Client events handled, by event',
      labelNames: ['event'],
      registers: r,
    }),
    clientEventsRejected: new Counter({
      name: 'gateway_client_events_rejected_total',
      help: 'Client events ignored for bad arguments, by event',
      labelNames: ['event'],
      registers: r,
    }),
    appHandlerErrors: new Counter({
      name: 'gateway_app_handler_errors_total',
      help: 'App realtime handlers that failed to load or run, by app',
      labelNames: ['app'],
      registers: r,
    }),
    publishRequests: new Counter({
      name: 'gateway_publish_requests_total',
      help: 'HTTP publish API requests, by status code',
      labelNames: ['status'],
      registers: r,
    }),
    redisUp: new Gauge({ name: 'gateway_redis_up', help: '1 when the process reaches Redis', registers: r, aggregator: 'min' }),
    leader: new Gauge({ name: 'gateway_leader', help: '1 while this process is the cluster-wide events consumer', registers: r }),
    leaderEpoch: new Gauge({
      name: 'gateway_leader_epoch',
      help: 'Fencing epoch of the last leadership this process held',
      registers: r,
      aggregator: 'max',
    }),
    leaderTransitions: new Counter({
      name: 'gateway_leader_transitions_total',
      help: 'Leadership acquisitions and losses of this process',
      labelNames: ['to'],
      registers: r,
    }),
    replayedEvents: new Counter({
      name: 'gateway_replayed_events_total',
      help: 'Events a new leader replayed from its standby buffer',
      registers: r,
    }),
    replayUnaligned: new Counter({
      name: 'gateway_replay_unaligned_total',
      help: 'Takeovers where the previous leader progress was not found in the standby buffer',
      registers: r,
    }),
    consumerLag: new Gauge({
      name: 'gateway_consumer_lag_events',
      help: 'Events received but not yet broadcast by the leader',
      registers: r,
    }),
    standbyBuffer: new Gauge({ name: 'gateway_standby_buffer_events', help: 'Events held for replay after a failover', registers: r }),
    fencedBatches: new Counter({
      name: 'gateway_fenced_batches_total',
      help: 'Broadcast batches refused because this process lost the lease (split-brain guard)',
      registers: r,
    }),
    publishToEmit: new Histogram({
      name: 'gateway_consume_to_publish_seconds',
      help: 'From receipt on the events channel to broadcast through Redis',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: r,
    }),
    workersUp: new Gauge({ name: 'gateway_workers_up', help: 'Worker processes running on this host', registers: r }),
    workerRestarts: new Counter({
      name: 'gateway_worker_restarts_total',
      help: 'Workers respawned after an unexpected exit',
      registers: r,
    }),
    sessionRecoveries: new Counter({
      name: 'gateway_session_recoveries_total',
      help: 'Reconnections that asked for their session back, by result (restored or expired)',
      labelNames: ['result'],
      registers: r,
    }),
    limitExceeded: new Counter({
      name: 'gateway_limit_exceeded_total',
      help: 'Client actions refused or clients disconnected by a limit (SECURITY.md), by limit',
      labelNames: ['limit'],
      registers: r,
    }),
    backendCircuitState: new Gauge({
      name: 'gateway_backend_circuit_state',
      help: 'Frappe backend circuit breaker: 0 closed, 1 half-open (probing), 2 open (calls fail fast); the worst backend',
      registers: r,
      aggregator: 'max',
    }),
    eventsSubscriptionLost: new Counter({
      name: 'gateway_events_subscription_lost_total',
      help: 'Times the events channel subscription was lost (Redis closed it, e.g. client-output-buffer-limit pubsub) and re-established',
      registers: r,
    }),
    standbyBufferBytes: new Gauge({
      name: 'gateway_standby_buffer_bytes',
      help: 'Bytes of events held for replay after a failover',
      registers: r,
    }),
    presenceSweeps: new Counter({
      name: 'gateway_presence_swept_total',
      help: 'Presence entries removed because their process died',
      registers: r,
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
