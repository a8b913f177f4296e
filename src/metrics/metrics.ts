import perfHooks, { createHistogram } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { onClockRun } from '../shared/clock';

/**
 * Every label value a labelled metric can take, where the set is closed:
 * each series exists at 0 from start, so `rate()` and alerts see the first
 * increment (a series born at 1 is invisible to `increase()`). Subsystems
 * that add a reason add it here.
 */
export const KNOWN_LABELS = {
  connectErrorReasons: [
    'namespace',
    'origin',
    'no_auth',
    'backend',
    'internal',
    'tls_not_terminated',
    'request_line_timeout',
    'admission',
    'connections_per_ip',
    'redis_unavailable',
  ],
  eventSources: ['redis', 'api'],
  dropReasons: ['oversized', 'malformed_json', 'not_object', 'bad_event', 'bad_room', 'bad_namespace', 'no_namespace'],
  routeTargets: ['room', 'all_sites'],
  dedupeSources: ['idempotency_key', 'offset'],
  broadcastKinds: ['adapter', 'all_sites'],
  authResults: ['ok', 'cached', 'guest', 'error'],
  permissionResults: ['allowed', 'denied', 'error'],
  publishStatuses: ['202', '400', '401', '403', '413', '502', '503', '504'],
  leaderTransitions: ['leader', 'standby'],
  takeoverFailures: ['progress_unreadable', 'timeout', 'error'],
  recoveryResults: [
    'restored',
    'expired',
    'trimmed',
    'history_lost',
    'foreign_offset',
    'no_history',
    'history_unreadable',
    'overflow',
    'put_back',
    'redis_unavailable',
  ],
  limits: [
    'admission',
    'backend_queue',
    'client_events',
    'connections_per_ip',
    'connections_per_user',
    'handshake_timeout',
    'outbound_buffer',
    'rooms_per_socket',
  ],
  /** socket.io's DisconnectReason values. */
  disconnectReasons: [
    'transport error',
    'transport close',
    'forced close',
    'ping timeout',
    'parse error',
    'server shutting down',
    'forced server close',
    'client namespace disconnect',
    'server namespace disconnect',
  ],
  transports: ['polling', 'websocket'],
  /** Connection roles of the primary (cmd, events, health) and the workers (pub, sub, ctl, fast). */
  redisConnections: ['cmd', 'events', 'health', 'pub', 'sub', 'ctl', 'fast'],
  adapterRequests: ['fetchSockets', 'serverSideEmit', 'other'],
  workerRestartReasons: ['exit', 'unresponsive'],
  periodicTasks: ['heartbeat', 'presence_sweep', 'session_refresh', 'counter_refresh', 'socket_secret'],
} as const;

/** Label value for the sites beyond the top N of gateway_connections. */
export const OTHER_SITES = 'other';

/**
 * Bounds the `namespace` label: the `max` sites with the most connections
 * keep their own series, the rest are summed as `other` (a host serving
 * thousands of sites must not export thousands of series).
 */
export function capSites(counts: ReadonlyMap<string, number>, max: number): Map<string, number> {
  const sorted = [...counts.entries()].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  if (sorted.length <= max) return new Map(sorted);
  const out = new Map(sorted.slice(0, max));
  let other = 0;
  for (const [, n] of sorted.slice(max)) other += n;
  out.set(OTHER_SITES, (out.get(OTHER_SITES) ?? 0) + other);
  return out;
}

/** Open connections per site; exported through a gauge capped to the top sites. */
export class SiteConnections {
  readonly counts = new Map<string, number>();
  constructor(registry: Registry, maxSites: number) {
    const counts = this.counts;
    new Gauge({
      name: 'gateway_connections',
      help: `Open Socket.IO connections by site namespace (top sites by connections; the rest as namespace="${OTHER_SITES}")`,
      labelNames: ['namespace'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [namespace, n] of capSites(counts, maxSites)) this.set({ namespace }, n);
      },
    });
  }

  inc(labels: { namespace: string }): void {
    this.counts.set(labels.namespace, (this.counts.get(labels.namespace) ?? 0) + 1);
  }

  dec(labels: { namespace: string }): void {
    const n = (this.counts.get(labels.namespace) ?? 0) - 1;
    if (n > 0) this.counts.set(labels.namespace, n);
    else this.counts.delete(labels.namespace);
  }
}

function zero<L extends string>(m: Counter<L> | Gauge<L>, label: L, values: readonly string[]): void {
  for (const v of values) m.inc({ [label]: v } as Partial<Record<L, string>>, 0);
}

/**
 * All metric definitions. Each process creates the set on its own registry;
 * the primary aggregates its workers' registries (counters summed, gauges
 * summed unless marked otherwise) and adds its own. `maxSites` caps the
 * site label where the metrics are exported (workers leave it to their primary).
 */
/** Sampling interval of `nodejs_eventloop_lag_*` (prom-client's default is 10 ms). */
export const EVENT_LOOP_SAMPLE_MS = 100;

/**
 * Runs `collect` (prom-client's default metrics) with the event-loop delay
 * histogram fed by the process' clock (shared/clock) instead of
 * `monitorEventLoopDelay`, whose own timer would wake the process every
 * EVENT_LOOP_SAMPLE_MS (10 of an idle primary's ~30 wake-ups a second). Each
 * run of the clock (every lease tick of a primary, 250 ms by default) records
 * how late its timer fired, plus EVENT_LOOP_SAMPLE_MS: the scale of the
 * workers' histogram, which records the interval between its samples, so the
 * host's `max` of the processes compares like with like. prom-client looks
 * the function up when it builds the collector: it is swapped for that call only.
 */
function withClockLoopDelay(collect: () => void): void {
  const h = createHistogram();
  const histogram = {
    enable: () => onClockRun((lateMs) => h.record(Math.max(1, Math.round((EVENT_LOOP_SAMPLE_MS + lateMs) * 1e6)))),
    disable: () => onClockRun(null),
    reset: () => h.reset(),
    percentile: (p: number) => h.percentile(p),
    get min() {
      return h.min;
    },
    get max() {
      return h.max;
    },
    get mean() {
      return h.mean;
    },
    get stddev() {
      return h.stddev;
    },
  };
  const hooks = perfHooks as { monitorEventLoopDelay: unknown };
  const original = hooks.monitorEventLoopDelay;
  hooks.monitorEventLoopDelay = () => histogram;
  try {
    collect();
  } finally {
    hooks.monitorEventLoopDelay = original;
  }
}

export function createMetrics(registry: Registry, opts: { defaults: boolean; maxSites?: number; loopDelayOnClock?: boolean }) {
  // The event-loop delay histogram samples every 100 ms instead of prom-client's 10: its timer woke
  // every process 100 times a second, ~1-2 ms of CPU per second per idle process (25-30% of an
  // idle primary's or worker's CPU, measured with /proc/<pid>/task/*/schedstat over 20 s runs).
  if (opts.defaults) {
    if (opts.loopDelayOnClock) withClockLoopDelay(() => collectDefaultMetrics({ register: registry }));
    else collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
  }
  const r = [registry];
  const m = {
    registry,
    connections: new SiteConnections(registry, opts.maxSites ?? Infinity),
    connectionsByTransport: new Gauge({
      name: 'gateway_connections_by_transport',
      help: 'Open Engine.IO connections by transport (polling until upgraded to websocket)',
      labelNames: ['transport'],
      registers: r,
    }),
    disconnects: new Counter({
      name: 'gateway_disconnects_total',
      help: 'Socket.IO disconnections, by socket.io disconnect reason',
      labelNames: ['reason'],
      registers: r,
    }),
    redisCommandErrors: new Counter({
      name: 'gateway_redis_command_errors_total',
      help: 'Redis commands that failed (rejected by Redis or by a connection that is down), by connection role',
      labelNames: ['connection'],
      registers: r,
    }),
    redisUnanswered: new Gauge({
      name: 'gateway_redis_commands_unanswered',
      help: 'Redis commands sent and not answered yet, by connection role (grows while a connection is stalled, e.g. a network partition)',
      labelNames: ['connection'],
      registers: r,
    }),
    redisPeriodicSkipped: new Counter({
      name: 'gateway_redis_periodic_skipped_total',
      help: 'Runs of a periodic Redis task (heartbeat, refresh, sweep) not sent because its connection was down or stalled, or its previous run had no reply yet, by task',
      labelNames: ['task'],
      registers: r,
    }),
    adapterTimeouts: new Counter({
      name: 'gateway_adapter_request_timeouts_total',
      help: 'Cluster-wide adapter requests (fetchSockets, serverSideEmit) that timed out waiting for other servers',
      labelNames: ['request'],
      registers: r,
    }),
    metricsWorkersMissing: new Gauge({
      name: 'gateway_metrics_workers_missing',
      help: 'Workers that did not answer the last /metrics scrape in time (their gauges are missing; their counters are carried over)',
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
    eventsDeduplicated: new Counter({
      name: 'gateway_events_deduplicated_total',
      help: 'Duplicate events not delivered, by what recognised them: idempotency_key (the leader or standalone: an event with the same key and site was broadcast within GATEWAY_IDEMPOTENCY_WINDOW_MS) or offset (a worker: a packet at or below the last offset it delivered on that channel, e.g. a new leader re-sending the history tail on Redis Cluster; counted per worker that received it)',
      labelNames: ['by'],
      registers: r,
    }),
    idempotencyKeysEvicted: new Counter({
      name: 'gateway_idempotency_keys_evicted_total',
      help: 'Standalone mode: idempotency keys forgotten before their window ended because GATEWAY_IDEMPOTENCY_MAX_KEYS were held',
      registers: r,
    }),
    eventsRouted: new Counter({
      name: 'gateway_events_routed_total',
      help: 'Realtime events broadcast by the consumer once Redis confirmed the batch (standalone: delivered locally), by target (room or all_sites); duplicates are not counted here but in gateway_events_deduplicated_total',
      labelNames: ['target'],
      registers: r,
    }),
    broadcastsUnpublished: new Counter({
      name: 'gateway_broadcasts_unpublished_total',
      help: "Broadcasts a worker made itself (app handlers' socket.to(room).emit, doc_viewers) while its Redis connections were down or stalled: delivered to its own sockets at once, not published to the other workers",
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
    clientEventsRefused: new Counter({
      name: 'gateway_client_events_refused_total',
      help: "Client events refused at once (acknowledged with false), by event and reason: redis_unavailable = this worker's Redis connection was down or stalled, and the event would join a room or write presence",
      labelNames: ['event', 'reason'],
      registers: r,
    }),
    redisDeferred: new Counter({
      name: 'gateway_redis_deferred_total',
      help: 'Writes a client caused while Redis was down or stalled, recorded in the worker and applied when Redis answers again instead of queueing behind the outage, by what: presence_close, session_save, session_remove, subscribe (a subscribe event held, run once Redis answers)',
      labelNames: ['what'],
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
    redisUp: new Gauge({
      name: 'gateway_redis_up',
      help: '1 while all Redis connections of every process of the host are ready',
      registers: r,
      aggregator: 'min',
    }),
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
    replaySkipped: new Counter({
      name: 'gateway_replay_unaligned_skipped_events_total',
      help: 'Buffered events an unaligned takeover did not broadcast again because the history already held them (broadcast by a predecessor)',
      registers: r,
    }),
    leaderDeferred: new Counter({
      name: 'gateway_leader_takeovers_deferred_total',
      help: 'Takeovers given up because the previous leader progress was not in this process standby buffer (subscribed after it), leaving the lease to a standby that may hold it',
      registers: r,
    }),
    leaderTakeoverFailed: new Counter({
      name: 'gateway_leader_takeovers_failed_total',
      help: 'Takeovers that acquired the lease but could not align (progress unreadable, not aligned within one lease period, error) and released it',
      labelNames: ['reason'],
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
    leaderBatchEvents: new Histogram({
      name: 'gateway_leader_batch_events',
      help: 'Events per fenced broadcast batch of the events leader (one script call each)',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: r,
    }),
    leaderGarbageCollections: new Histogram({
      name: 'gateway_leader_garbage_collection_seconds',
      help: "Pause of each full GC the events leader ran because V8's old space grew by GATEWAY_LEADER_GARBAGE_BYTES since its last full GC",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers: r,
    }),
    workersUp: new Gauge({ name: 'gateway_workers_up', help: 'Worker processes running on this host', registers: r }),
    workersUnresponsive: new Gauge({
      name: 'gateway_workers_unresponsive',
      help: 'Workers of this host silent on IPC for 1.5 s or more (stopped, or event loop stalled): new sessions avoid them',
      registers: r,
    }),
    workerRestarts: new Counter({
      name: 'gateway_worker_restarts_total',
      help: 'Workers respawned, by reason: exit (it died unexpectedly), unresponsive (silent on IPC for GATEWAY_WORKER_KILL_MS, killed with SIGKILL) or boot_timeout (no hello within GATEWAY_WORKER_BOOT_MS of its fork, killed with SIGKILL)',
      labelNames: ['reason'],
      registers: r,
    }),
    sessionRecoveries: new Counter({
      name: 'gateway_session_recoveries_total',
      help: 'Reconnections that asked for their session back, by result (restored; expired, trimmed, history_lost, foreign_offset: treated as new; put_back: restored, then the handshake failed in a way the client retries, so the session was stored again; redis_unavailable: the store could not be read, Redis down or stalled, so the handshake was refused with a retryable error and the session left in place)',
      labelNames: ['result'],
      registers: r,
    }),
    limitExceeded: new Counter({
      name: 'gateway_limit_exceeded_total',
      help: 'Client actions refused or clients disconnected by a limit (SECURITY.md), by limit',
      labelNames: ['limit'],
      registers: r,
    }),
    admissionTokens: new Gauge({
      name: 'gateway_admission_tokens',
      help: 'New connections this host would admit at once now (GATEWAY_ADMISSION_BURST when idle; 0 while a herd is being refused)',
      registers: r,
    }),
    admissionInFlight: new Gauge({
      name: 'gateway_admission_in_flight',
      help: 'Handshakes admitted and not over yet (connected, failed or closed), this host; at most GATEWAY_ADMISSION_CONCURRENCY per worker',
      registers: r,
    }),
    admissionQueue: new Gauge({
      name: 'gateway_admission_queue',
      help: 'New connections waiting for a free handshake slot, this host; at most GATEWAY_ADMISSION_QUEUE',
      registers: r,
    }),
    admissionQueueWaits: new Counter({
      name: 'gateway_admission_queue_waits_total',
      help: 'New connections that found every handshake slot taken, by result (admitted: a slot freed within GATEWAY_ADMISSION_QUEUE_MS; expired: it did not, HTTP 503; full: the queue was full, HTTP 503 at once; closed: the client left while waiting)',
      labelNames: ['result'],
      registers: r,
    }),
    recoveryReplayed: new Counter({
      name: 'gateway_recovery_replayed_events_total',
      help: 'Missed events a recovered client received from history',
      registers: r,
    }),
    recoveryLiveDuplicates: new Counter({
      name: 'gateway_recovery_live_duplicates_total',
      help: 'Live copies of events a replay had already written, arriving after it (dropped; recovery/replay-gate.ts)',
      registers: r,
    }),
    gapEvents: new Counter({
      name: 'gateway_history_gap_events_total',
      help: "Events a worker read from history after its subscriber connection came back (its clients' gap)",
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
    mqttMessages: new Counter({
      name: 'gateway_mqtt_messages_total',
      help: 'MQTT messages received by the ingress, by rule and result (published, duplicate, redis_error, dropped_<reason>)',
      labelNames: ['rule', 'result'],
      registers: r,
    }),
    mqttConnected: new Gauge({ name: 'gateway_mqtt_connected', help: '1 while this process holds the MQTT subscription', registers: r }),
    mqttLag: new Histogram({
      name: 'gateway_mqtt_lag_seconds',
      help: 'From receipt of an MQTT message to its publish on the events channel, by rule',
      labelNames: ['rule'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: r,
    }),
    customRoomSubscriptions: new Counter({
      name: 'gateway_custom_room_subscriptions_total',
      help: 'subscribe_room requests, by result (joined, denied, unknown_pattern, error)',
      labelNames: ['result'],
      registers: r,
    }),
    idleCompaction: new Histogram({
      name: 'gateway_idle_compaction_seconds',
      help: 'Pause of each compaction after a connect burst (two full garbage collections; GATEWAY_IDLE_COMPACT_MS), per process',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: r,
    }),
    conflatedEvents: new Counter({
      name: 'gateway_conflated_events_total',
      help: 'Events of conflate rooms replaced by a newer one before a backed-up client received them, by room pattern',
      labelNames: ['room_pattern'],
      registers: r,
    }),
  };
  zero(m.connectErrors, 'reason', KNOWN_LABELS.connectErrorReasons);
  zero(m.eventsReceived, 'source', KNOWN_LABELS.eventSources);
  zero(m.eventsDropped, 'reason', KNOWN_LABELS.dropReasons);
  zero(m.eventsRouted, 'target', KNOWN_LABELS.routeTargets);
  zero(m.eventsDeduplicated, 'by', KNOWN_LABELS.dedupeSources);
  zero(m.broadcastsReceived, 'kind', KNOWN_LABELS.broadcastKinds);
  zero(m.authRequests, 'result', KNOWN_LABELS.authResults);
  zero(m.permissionChecks, 'result', KNOWN_LABELS.permissionResults);
  zero(m.publishRequests, 'status', KNOWN_LABELS.publishStatuses);
  zero(m.leaderTransitions, 'to', KNOWN_LABELS.leaderTransitions);
  zero(m.leaderTakeoverFailed, 'reason', KNOWN_LABELS.takeoverFailures);
  zero(m.sessionRecoveries, 'result', KNOWN_LABELS.recoveryResults);
  zero(m.limitExceeded, 'limit', KNOWN_LABELS.limits);
  zero(m.disconnects, 'reason', KNOWN_LABELS.disconnectReasons);
  zero(m.connectionsByTransport, 'transport', KNOWN_LABELS.transports);
  zero(m.redisCommandErrors, 'connection', KNOWN_LABELS.redisConnections);
  zero(m.redisUnanswered, 'connection', KNOWN_LABELS.redisConnections);
  zero(m.adapterTimeouts, 'request', KNOWN_LABELS.adapterRequests);
  zero(m.workerRestarts, 'reason', KNOWN_LABELS.workerRestartReasons);
  zero(m.redisPeriodicSkipped, 'task', KNOWN_LABELS.periodicTasks);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
