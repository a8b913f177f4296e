/**
 * The configuration contract: every option the gateway reads, documented once,
 * with its default and unit. `load.ts` turns the environment (plus an optional
 * Frappe bench) into a frozen `GatewayConfig` using these specs.
 */

import type { CustomRoomSpec, MqttConfig } from './mqtt-config';

export type { CustomRoomSpec, MqttConfig, MqttRule } from './mqtt-config';
export type RedisMode = 'standalone' | 'sentinel' | 'cluster';
export type AdapterMode = 'sharded' | 'classic';
export type PermissionFlavour = 'v15' | 'v16';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export interface RedisConfig {
  readonly mode: RedisMode;
  /** redis:// or rediss:// URL; for sentinel/cluster it carries credentials and TLS only. */
  readonly url: string;
  readonly sentinels: readonly HostPort[];
  readonly sentinelName: string;
  /** ioredis sentinelUsername / sentinelPassword: credentials of the sentinels themselves. */
  readonly sentinelUsername: string | null;
  readonly sentinelPassword: string | null;
  readonly clusterNodes: readonly HostPort[];
}

export type LogFormat = 'auto' | 'pretty' | 'json';

export interface GatewayConfig {
  readonly port: number;
  readonly opsPort: number;
  readonly host: string;
  readonly opsHost: string;
  readonly workers: number;
  readonly redis: RedisConfig | null;
  readonly adapterMode: AdapterMode;
  readonly eventsChannel: string;
  readonly keyPrefix: string;
  readonly backendUrl: string | null;
  readonly defaultSite: string | null;
  readonly publishToken: string | null;
  readonly benchPath: string | null;
  readonly appsPath: string | null;
  readonly permissionFlavour: PermissionFlavour;
  readonly socketSecret: string | null;
  readonly allowedOrigins: readonly string[];
  readonly corsOrigins: readonly string[];
  readonly maxMessageBytes: number;
  readonly maxHttpBufferBytes: number;
  readonly backendTimeoutMs: number;
  readonly backendConcurrency: number;
  readonly authCacheTtlMs: number;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly leaderLeaseMs: number;
  readonly leaderRenewMs: number;
  /** The events leader holds a batch open this long after its first event (0 = no hold). */
  readonly leaderCoalesceMs: number;
  readonly standbyBufferEvents: number;
  readonly standbyBufferMs: number;
  readonly presenceTtlMs: number;
  readonly recoveryWindowMs: number;
  /** Missed-event history for replay (sharded adapter mode only). */
  readonly history: boolean;
  readonly historyMs: number;
  readonly historyMaxEvents: number;
  /** Workers write pre-encoded frames straight to idle WebSockets (off = socket.io's normal emit path only). */
  readonly fastPath: boolean;
  /** Quiet period after a connect burst that triggers two full GCs (0 = never). */
  readonly idleCompactMs: number;
  /** New connections that make a burst for `idleCompactMs`. */
  readonly idleCompactConnections: number;
  readonly shutdownGraceMs: number;
  readonly drainMs: number;
  readonly drainRate: number;
  readonly workerRespawnMaxBackoffMs: number;
  /** A worker silent on IPC this long is killed (SIGKILL) and replaced; 0 = never. */
  readonly workerKillMs: number;
  /** A worker without hello this long after its fork is killed (SIGKILL) and replaced; 0 = never. */
  readonly workerBootMs: number;
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
  readonly dropLogIntervalMs: number;
  readonly clientEventsPerSec: number;
  readonly clientEventsBurst: number;
  readonly maxRoomsPerSocket: number;
  readonly backendQueue: number;
  readonly maxOutboundBytes: number;
  readonly maxOutboundPackets: number;
  readonly maxConnectionsPerIp: number;
  readonly trustProxy: boolean;
  /** New connections (Engine.IO handshakes) admitted per second per host; 0 = no admission control. */
  readonly admissionRate: number;
  readonly admissionBurst: number;
  /** Handshakes in flight per process (worker; standalone: the process); 0 = no bound. */
  readonly admissionConcurrency: number;
  /** Handshakes per host that wait for a slot instead of the 503 at once, and for how long; 0 = refused at once. */
  readonly admissionQueue: number;
  readonly admissionQueueMs: number;
  readonly handshakeTimeoutMs: number;
  readonly publishTimeoutMs: number;
  /** How long the leader remembers a publisher's idempotency key (at most one broadcast per key meanwhile). */
  readonly idempotencyWindowMs: number;
  /** Standalone mode: idempotency keys held in memory at most (the oldest goes first). */
  readonly idempotencyMaxKeys: number;
  readonly opsTimeoutMs: number;
  readonly metricsMaxSites: number;
  /** MQTT ingress (docs/mqtt.md); null = off. */
  readonly mqtt: MqttConfig | null;
  readonly customRooms: readonly CustomRoomSpec[];
  readonly latestTtlMs: number;
  readonly conflateBacklog: number;
  readonly backendCircuitFailures: number;
  readonly backendCircuitOpenMs: number;
  readonly standbyBufferBytes: number;
  /** Old-space growth of the events leader that makes it run a full GC (0 = V8 decides alone). */
  readonly leaderGarbageBytes: number;
  readonly maxConnectionsPerUser: number;
}

export type OptionKind =
  | { kind: 'port' }
  | { kind: 'int'; min: number; max: number }
  | { kind: 'string' }
  | { kind: 'url'; protocols: readonly string[] }
  | { kind: 'enum'; values: readonly string[] }
  | { kind: 'list' }
  | { kind: 'hostports' };

export interface OptionSpec {
  readonly env: string;
  readonly type: OptionKind;
  /** Default as the environment would spell it; undefined = unset. */
  readonly default?: string;
  readonly doc: string;
  /** Key in Frappe's bench config (config.json / common_site_config.json) that feeds this option. */
  readonly benchKey?: string;
  /** Masked in check-config output and logs; may also be given as `<env>_FILE` (a file holding the value). */
  readonly secret?: boolean;
}

const ms = (min: number, max: number): OptionKind => ({ kind: 'int', min, max });

/** Ordered as they appear in the README's configuration table. */
export const OPTIONS = {
  port: { env: 'GATEWAY_PORT', type: { kind: 'port' }, default: '9000', benchKey: 'socketio_port', doc: 'Public Socket.IO port.' },
  opsPort: {
    env: 'GATEWAY_OPS_PORT',
    type: { kind: 'port' },
    default: '9090',
    doc: 'Ops port: /livez, /readyz, /metrics, publish and cluster APIs.',
  },
  host: { env: 'GATEWAY_HOST', type: { kind: 'string' }, default: '0.0.0.0', doc: 'Address both ports bind to.' },
  opsHost: {
    env: 'GATEWAY_OPS_HOST',
    type: { kind: 'string' },
    doc: 'Address the ops port binds to (default: GATEWAY_HOST), e.g. 127.0.0.1 to keep it off the network.',
  },
  workers: {
    env: 'GATEWAY_WORKERS',
    type: { kind: 'int', min: 1, max: 256 },
    doc: 'Worker processes on this host (default: number of CPUs). Ignored in standalone mode, which is one process.',
  },
  redisUrl: {
    env: 'GATEWAY_REDIS_URL',
    type: { kind: 'url', protocols: ['redis:', 'rediss:'] },
    benchKey: 'redis_queue (v14: redis_socketio)',
    secret: true,
    doc: 'Redis for the events channel, adapter, leader lease and presence. Unset = standalone (one process, HTTP publish API only). Or GATEWAY_REDIS_URL_FILE: a file holding it.',
  },
  redisMode: {
    env: 'GATEWAY_REDIS_MODE',
    type: { kind: 'enum', values: ['standalone', 'sentinel', 'cluster'] },
    default: 'standalone',
    doc: 'Redis topology.',
  },
  redisSentinels: {
    env: 'GATEWAY_REDIS_SENTINELS',
    type: { kind: 'hostports' },
    doc: 'Sentinel mode: comma-separated host:port of the sentinels.',
  },
  redisSentinelName: {
    env: 'GATEWAY_REDIS_SENTINEL_NAME',
    type: { kind: 'string' },
    default: 'mymaster',
    doc: 'Sentinel mode: monitored master name.',
  },
  redisSentinelUsername: {
    env: 'GATEWAY_REDIS_SENTINEL_USERNAME',
    type: { kind: 'string' },
    doc: 'Sentinel mode: username for the sentinels themselves (the master credentials come from GATEWAY_REDIS_URL).',
  },
  redisSentinelPassword: {
    env: 'GATEWAY_REDIS_SENTINEL_PASSWORD',
    type: { kind: 'string' },
    secret: true,
    doc: 'Sentinel mode: password for the sentinels themselves. Or GATEWAY_REDIS_SENTINEL_PASSWORD_FILE.',
  },
  redisClusterNodes: {
    env: 'GATEWAY_REDIS_CLUSTER_NODES',
    type: { kind: 'hostports' },
    doc: 'Cluster mode: comma-separated host:port seed nodes (default: the host of GATEWAY_REDIS_URL).',
  },
  adapterMode: {
    env: 'GATEWAY_ADAPTER_MODE',
    type: { kind: 'enum', values: ['sharded', 'classic'] },
    default: 'sharded',
    doc: 'Socket.IO Redis adapter: sharded pub/sub with dynamic room channels (Redis >= 7) or classic pattern pub/sub.',
  },
  eventsChannel: {
    env: 'GATEWAY_EVENTS_CHANNEL',
    type: { kind: 'string' },
    default: 'events',
    doc: 'Redis channel Frappe publishes realtime events to.',
  },
  keyPrefix: {
    env: 'GATEWAY_KEY_PREFIX',
    type: { kind: 'string' },
    default: 'rtg',
    doc: 'Prefix of every Redis key and channel the gateway owns (one per cluster).',
  },
  backendUrl: {
    env: 'GATEWAY_BACKEND_URL',
    type: { kind: 'url', protocols: ['http:', 'https:'] },
    benchKey: 'webserver_host + webserver_port',
    doc: 'Frappe web server for auth and permission calls. Unset = the request Origin (Frappe behaviour); with a bench path, http://<webserver_host or 127.0.0.1>:<webserver_port> (gunicorn, direct).',
  },
  defaultSite: {
    env: 'GATEWAY_DEFAULT_SITE',
    type: { kind: 'string' },
    benchKey: 'default_site',
    doc: 'Site for connections whose Host is localhost or 127.0.0.1.',
  },
  publishToken: {
    env: 'GATEWAY_PUBLISH_TOKEN',
    type: { kind: 'string' },
    secret: true,
    doc: 'Bearer token of POST /api/v1/publish and the /api/v1/cluster APIs. Unset = they accept loopback clients only. Or GATEWAY_PUBLISH_TOKEN_FILE.',
  },
  benchPath: {
    env: 'GATEWAY_BENCH_PATH',
    type: { kind: 'string' },
    doc: 'Frappe bench directory: reads config.json and sites/common_site_config.json; app handlers from apps/<app>/realtime/handlers.js.',
  },
  permissionFlavour: {
    env: 'GATEWAY_PERMISSION_FLAVOUR',
    type: { kind: 'enum', values: ['v15', 'v16'] },
    default: 'v16',
    doc: 'Permission endpoints: v16 has_permission, or v15 can_subscribe_doc/can_subscribe_doctype.',
  },
  socketSecret: {
    env: 'GATEWAY_SOCKET_SECRET',
    type: { kind: 'string' },
    secret: true,
    doc: 'Sent as X-Frappe-Socket-Secret on backend calls. Unset = read Redis key socketio_auth_secret when Redis is configured. Or GATEWAY_SOCKET_SECRET_FILE.',
  },
  allowedOrigins: {
    env: 'GATEWAY_ALLOWED_ORIGINS',
    type: { kind: 'list' },
    default: '',
    doc: 'Addition, off by default: extra origins accepted even when they differ from the Host: bare hostnames (any scheme and port) or full origins such as http://dashboard.local:5173 (scheme, host and port must match).',
  },
  maxMessageBytes: {
    env: 'GATEWAY_MAX_MESSAGE_BYTES',
    type: { kind: 'int', min: 256, max: 64 * 1024 * 1024 },
    default: String(1024 * 1024),
    doc: 'Largest events-channel or publish-API message accepted, in bytes.',
  },
  maxHttpBufferBytes: {
    env: 'GATEWAY_MAX_HTTP_BUFFER_BYTES',
    type: { kind: 'int', min: 1024, max: 64 * 1024 * 1024 },
    default: '1000000',
    doc: 'Socket.IO maxHttpBufferSize: largest client packet, in bytes.',
  },
  backendTimeoutMs: {
    env: 'GATEWAY_BACKEND_TIMEOUT_MS',
    type: ms(100, 120_000),
    default: '5000',
    doc: 'Timeout of one auth or permission call to the backend.',
  },
  backendConcurrency: {
    env: 'GATEWAY_BACKEND_CONCURRENCY',
    type: { kind: 'int', min: 1, max: 10_000 },
    default: '32',
    doc: 'Backend calls in flight at once per process; more wait their turn (a reconnect storm queues instead of timing out together). The timeout counts from when a call starts.',
  },
  authCacheTtlMs: {
    env: 'GATEWAY_AUTH_CACHE_TTL_MS',
    type: ms(0, 600_000),
    default: '10000',
    doc: 'How long a get_user_info answer is reused for the same credential and site (0 = off). Permission answers are never cached longer than this either.',
  },
  pingIntervalMs: { env: 'GATEWAY_PING_INTERVAL_MS', type: ms(1000, 300_000), default: '25000', doc: 'Engine.IO pingInterval.' },
  pingTimeoutMs: { env: 'GATEWAY_PING_TIMEOUT_MS', type: ms(1000, 300_000), default: '20000', doc: 'Engine.IO pingTimeout.' },
  leaderLeaseMs: {
    env: 'GATEWAY_LEADER_LEASE_MS',
    type: ms(300, 60_000),
    default: '1500',
    doc: 'Leader lease length; a crashed leader is replaced after at most this plus one standby poll.',
  },
  leaderRenewMs: {
    env: 'GATEWAY_LEADER_RENEW_MS',
    type: ms(50, 20_000),
    default: '250',
    doc: 'Leader renewal and standby acquisition interval.',
  },
  leaderCoalesceMs: {
    env: 'GATEWAY_LEADER_COALESCE_MS',
    type: ms(0, 50),
    default: '0',
    doc: 'Coalescing window of the events leader: an event reaching an idle leader holds its batch open this long (its subscriber socket paused meanwhile) so that the next events share one read, one fenced script call and one reply; adds up to this much latency (more on CPU-contended hosts: see BENCHMARKS.md). 0 (default) = every event is sent as soon as no batch is in flight.',
  },
  standbyBufferEvents: {
    env: 'GATEWAY_STANDBY_BUFFER_EVENTS',
    type: { kind: 'int', min: 100, max: 10_000_000 },
    default: '200000',
    doc: 'Events a standby keeps to replay after a failover (count bound).',
  },
  standbyBufferMs: {
    env: 'GATEWAY_STANDBY_BUFFER_MS',
    type: ms(1000, 600_000),
    default: '30000',
    doc: 'Events a standby keeps to replay after a failover (age bound).',
  },
  presenceTtlMs: {
    env: 'GATEWAY_PRESENCE_TTL_MS',
    type: ms(1000, 600_000),
    default: '15000',
    doc: 'A crashed process disappears from doc_viewers within this time.',
  },
  recoveryWindowMs: {
    env: 'GATEWAY_RECOVERY_WINDOW_MS',
    type: ms(0, 3_600_000),
    default: '120000',
    doc: 'A client that reconnects within this time, to any worker or host, gets its rooms (doc, doctype, task, app rooms) and open documents back (0 = off).',
  },
  history: {
    env: 'GATEWAY_HISTORY',
    type: { kind: 'enum', values: ['on', 'off'] },
    default: 'on',
    doc: 'Keep the events the leader broadcast in a Redis stream so a recovered client gets what it missed (sharded adapter mode only).',
  },
  historyMs: {
    env: 'GATEWAY_HISTORY_MS',
    type: ms(1000, 3_600_000),
    default: '120000',
    doc: 'Age bound of the missed-event history (a client offline longer is told it may have missed updates).',
  },
  historyMaxEvents: {
    env: 'GATEWAY_HISTORY_MAX_EVENTS',
    type: { kind: 'int', min: 100, max: 10_000_000 },
    default: '600000',
    doc: 'Count bound of the missed-event history (approximate: Redis trims whole stream nodes). The default lets GATEWAY_HISTORY_MS rule up to 5,000 events/s (120 s x 5,000); at a higher rate the history covers GATEWAY_HISTORY_MAX_EVENTS / rate seconds. Redis memory: about 0.3-0.45 MB per 1,000 events of 300-400 bytes, so up to ~170-260 MB at this bound (docs/protocol.md section 10).',
  },
  fastPath: {
    env: 'GATEWAY_FAST_PATH',
    type: { kind: 'enum', values: ['on', 'off'] },
    default: 'on',
    doc: "Workers write the leader's pre-encoded frames straight to idle WebSockets, one socket write per client (site broadcasts delivered on one event-loop turn leave in one write per client); off = every packet takes socket.io's normal emit path.",
  },
  idleCompactMs: {
    env: 'GATEWAY_IDLE_COMPACT_MS',
    type: ms(0, 600_000),
    default: '5000',
    doc: 'After a connect burst (GATEWAY_IDLE_COMPACT_CONNECTIONS new connections), once a period this long brings fewer than a tenth of that many, the process runs one compacting full garbage collection, so that the heap pages the burst left fragmented go back to the OS (10,000 idle connections: RSS 28.4 -> 17.1 KB per connection standalone, 46.9 -> 20.5 KB for one worker and its primary; BENCHMARKS.md, idle memory). The event loop stops meanwhile: ~0.4-0.8 s of CPU at 10,000 connections on a 2-core machine, longer in wall time when the CPU is contended (gateway_idle_compaction_seconds). 0 = off.',
  },
  idleCompactConnections: {
    env: 'GATEWAY_IDLE_COMPACT_CONNECTIONS',
    type: { kind: 'int', min: 1, max: 10_000_000 },
    default: '1000',
    doc: 'New connections to a process (the primary counts those it routes) since its last compaction that make a burst for GATEWAY_IDLE_COMPACT_MS.',
  },
  shutdownGraceMs: { env: 'GATEWAY_SHUTDOWN_GRACE_MS', type: ms(1000, 600_000), default: '30000', doc: 'SIGTERM: hard deadline for exit.' },
  drainMs: {
    env: 'GATEWAY_DRAIN_MS',
    type: ms(0, 600_000),
    default: '10000',
    doc: 'SIGTERM: clients are disconnected in jittered batches over this period.',
  },
  drainRate: {
    env: 'GATEWAY_DRAIN_RATE',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '200',
    doc: 'SIGTERM: at most this many clients disconnected per second by each process; the drain then lasts longer than GATEWAY_DRAIN_MS for a process holding more than rate x drain connections, up to GATEWAY_SHUTDOWN_GRACE_MS minus 8 s (0 = off: the drain always lasts GATEWAY_DRAIN_MS). 200 is about what one worker authenticated per second in the rolling-restart bench (2 vCPU).',
  },
  workerRespawnMaxBackoffMs: {
    env: 'GATEWAY_WORKER_RESPAWN_MAX_BACKOFF_MS',
    type: ms(100, 600_000),
    default: '30000',
    doc: 'Upper bound of the backoff between respawns of a crash-looping worker.',
  },
  workerKillMs: {
    env: 'GATEWAY_WORKER_KILL_MS',
    type: ms(0, 3_600_000),
    default: '30000',
    doc: 'A worker silent on IPC this long (stopped, or its event loop stuck; it is unresponsive after 1.5 s) is killed with SIGKILL and a replacement forked; its clients reconnect to the other workers and recover their sessions (0 = never kill).',
  },
  workerBootMs: {
    env: 'GATEWAY_WORKER_BOOT_MS',
    type: ms(0, 3_600_000),
    default: '60000',
    doc: 'A worker that has not finished booting (its first message to the primary) this long after its fork, stuck or stopped, is killed with SIGKILL and respawned with the crash backoff (GATEWAY_WORKER_RESPAWN_MAX_BACKOFF_MS); new sessions avoid it after 1.5 s. A worker boots in well under a second on an idle machine (0 = never kill).',
  },
  logLevel: {
    env: 'GATEWAY_LOG_LEVEL',
    type: { kind: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    default: 'info',
    doc: 'pino log level.',
  },
  logFormat: {
    env: 'GATEWAY_LOG_FORMAT',
    type: { kind: 'enum', values: ['auto', 'pretty', 'json'] },
    default: 'auto',
    doc: 'auto = human-readable when stdout is a terminal, JSON lines otherwise.',
  },
  publishTimeoutMs: {
    env: 'GATEWAY_PUBLISH_TIMEOUT_MS',
    type: ms(100, 60_000),
    default: '2000',
    doc: 'The publish API answers 504 `GW_ERR_PUBLISH_UNCONFIRMED` when Redis has not confirmed the events it was sent within this time (they may or may not be delivered: retry with the same idempotency keys); 503 `GW_ERR_REDIS_UNAVAILABLE` at once when the connection is down or stalled and nothing was sent. Never 202 for an event not handed to Redis.',
  },
  idempotencyWindowMs: {
    env: 'GATEWAY_IDEMPOTENCY_WINDOW_MS',
    type: ms(1000, 86_400_000),
    default: '300000',
    doc: 'An event published with an idempotency key (`Idempotency-Key` header or `idempotency_key` field) is broadcast at most once per key and site within this time; later ones are dropped and counted (`gateway_events_deduplicated_total`). Redis holds one key per keyed event for this long: about 100 bytes plus the key name (165 bytes measured for a UUID key), i.e. ~50 MB at 1,000 keyed events/s with the default.',
  },
  idempotencyMaxKeys: {
    env: 'GATEWAY_IDEMPOTENCY_MAX_KEYS',
    type: { kind: 'int', min: 1000, max: 10_000_000 },
    default: '100000',
    doc: 'Standalone mode: idempotency keys held in memory at most; past it the oldest is forgotten before its window ends (counted in `gateway_idempotency_keys_evicted_total`). Cluster mode keeps them in Redis.',
  },
  opsTimeoutMs: {
    env: 'GATEWAY_OPS_TIMEOUT_MS',
    type: ms(100, 60_000),
    default: '2000',
    doc: "The cluster API (`/api/v1/cluster`) answers 503 `redis unavailable` (with this host's own part, `partial: true`) when Redis has not answered within this time.",
  },
  metricsMaxSites: {
    env: 'GATEWAY_METRICS_MAX_SITES',
    type: { kind: 'int', min: 1, max: 100_000 },
    default: '100',
    doc: 'Sites with the most connections that get their own `namespace` label on gateway_connections; the rest are summed as `other`.',
  },
  dropLogIntervalMs: {
    env: 'GATEWAY_DROP_LOG_INTERVAL_MS',
    type: ms(0, 3_600_000),
    default: '10000',
    doc: 'At most one log line per drop reason per interval (drops are always counted in metrics).',
  },
  corsOrigins: {
    env: 'GATEWAY_CORS_ORIGINS',
    type: { kind: 'list' },
    default: '',
    doc: 'CORS: empty = reflect the request Origin with credentials (Frappe behaviour); else only these origins.',
  },
  clientEventsPerSec: {
    env: 'GATEWAY_CLIENT_EVENTS_PER_SEC',
    type: { kind: 'int', min: 0, max: 100_000 },
    default: '50',
    doc: 'Limit: client events (subscriptions, app handler events) per second per socket, token bucket; beyond it an event is ignored and acknowledged with false (0 = off).',
  },
  clientEventsBurst: {
    env: 'GATEWAY_CLIENT_EVENTS_BURST',
    type: { kind: 'int', min: 1, max: 100_000 },
    default: '100',
    doc: 'Limit: client events a socket may send at once before GATEWAY_CLIENT_EVENTS_PER_SEC applies (token bucket size).',
  },
  maxRoomsPerSocket: {
    env: 'GATEWAY_MAX_ROOMS_PER_SOCKET',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '1000',
    doc: 'Limit: rooms one socket may be in (automatic rooms included); further joins are refused (0 = off).',
  },
  backendQueue: {
    env: 'GATEWAY_BACKEND_QUEUE',
    type: { kind: 'int', min: 1, max: 1_000_000 },
    default: '1000',
    doc: 'Limit: backend calls waiting for a slot per process, separately for handshakes and for permission checks; beyond it a handshake is refused at the transport level (the client retries) and a subscription is refused.',
  },
  maxOutboundBytes: {
    env: 'GATEWAY_MAX_OUTBOUND_BYTES',
    type: { kind: 'int', min: 0, max: 1024 * 1024 * 1024 },
    default: String(8 * 1024 * 1024),
    doc: 'Limit: bytes a WebSocket client has not read yet (ws bufferedAmount); beyond it the client is disconnected (0 = off). Checked once a second.',
  },
  maxOutboundPackets: {
    env: 'GATEWAY_MAX_OUTBOUND_PACKETS',
    type: { kind: 'int', min: 0, max: 10_000_000 },
    default: '10000',
    doc: 'Limit: packets queued for a client by Engine.IO (a polling client that stopped polling); beyond it the client is disconnected (0 = off).',
  },
  maxConnectionsPerIp: {
    env: 'GATEWAY_MAX_CONNECTIONS_PER_IP',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '0',
    doc: 'Limit: Engine.IO connections per client address, cluster-wide (Redis counter; standalone without Redis: the process); beyond it the handshake gets HTTP 403. 0 = off, the default: behind a proxy every client shares the proxy address, so enable it with GATEWAY_TRUST_PROXY=true there (or on a gateway that faces clients directly).',
  },
  trustProxy: {
    env: 'GATEWAY_TRUST_PROXY',
    type: { kind: 'enum', values: ['false', 'true'] },
    default: 'false',
    doc: 'true = the client address for per-address limits is the first X-Forwarded-For hop (set it only behind a proxy that overwrites that header).',
  },
  admissionConcurrency: {
    env: 'GATEWAY_ADMISSION_CONCURRENCY',
    type: { kind: 'int', min: 0, max: 100_000 },
    default: '0',
    doc: "Limit: handshakes in flight per worker (standalone: the process), from the Engine.IO request until the Socket.IO connection is established (and a recovered client's missed events are written) or fails; a handshake beyond it waits in the primary for a free slot (GATEWAY_ADMISSION_QUEUE, _QUEUE_MS), else gets HTTP 503 (the primary routes only to a worker with a free slot) and socket.io-client retries with its backoff (0 = off, the default). Admits as fast as the worker completes handshakes (backend, Redis, CPU), so a reconnect herd after a host loss queues outside the worker: with 64, the surviving host's established clients kept a 7x lower p99 in a 5,000-client host loss, but a refused client waits out its backoff (1-5 s), which made the herd's reconnection and a paced rolling restart slower (p95 2.4 s -> 8.7 s at 64, 4.2 s at 256; BENCHMARKS.md \"Host-loss herd\").",
  },
  admissionQueue: {
    env: 'GATEWAY_ADMISSION_QUEUE',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '1000',
    doc: 'Limit: new connections per host held waiting for a free slot of GATEWAY_ADMISSION_CONCURRENCY instead of the HTTP 503 at once (the primary, standalone: the process, keeps the socket and the bytes read so far; each waiting connection costs its socket and ~1 KB). Slots go to the oldest first; beyond this count the handshake gets the 503 at once (0 = no queue: refused at once). Used only with GATEWAY_ADMISSION_CONCURRENCY > 0.',
  },
  admissionQueueMs: {
    env: 'GATEWAY_ADMISSION_QUEUE_MS',
    type: ms(0, 60_000),
    default: '2000',
    doc: "How long a new connection waits for a free slot (GATEWAY_ADMISSION_QUEUE) before it gets the HTTP 503 and socket.io-client's backoff (0 = no queue). Keep it well under the client's connect timeout (socket.io-client: 20 s).",
  },
  admissionRate: {
    env: 'GATEWAY_ADMISSION_RATE',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '1000',
    doc: 'Limit: new connections (Engine.IO handshakes) admitted per second per host, token bucket in the primary (standalone: the process); beyond it the handshake gets HTTP 503 and socket.io-client retries with its backoff, so a reconnect herd after a host loss is spread out instead of starving established sockets (0 = off). Keep it above what a paced rolling restart sends a host (GATEWAY_DRAIN_RATE x workers of the draining host): a refused client waits out its backoff, which made a paced 5,000-client roll slower (BENCHMARKS.md rolling-restart).',
  },
  admissionBurst: {
    env: 'GATEWAY_ADMISSION_BURST',
    type: { kind: 'int', min: 1, max: 1_000_000 },
    default: '2000',
    doc: 'Limit: new connections a host admits at once before GATEWAY_ADMISSION_RATE applies (token bucket size).',
  },
  handshakeTimeoutMs: {
    env: 'GATEWAY_HANDSHAKE_TIMEOUT_MS',
    type: ms(100, 120_000),
    default: '10000',
    doc: 'Limit: a connection whose authentication and room joins have not completed within this time is closed at the transport level, so the client retries.',
  },
  backendCircuitFailures: {
    env: 'GATEWAY_BACKEND_CIRCUIT_FAILURES',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '5',
    doc: 'Backend calls failing in a row (timeout, unreachable, HTTP 5xx) that open the circuit: calls then fail at once and handshakes are refused at the Engine.IO level, so clients retry (0 = no breaker).',
  },
  backendCircuitOpenMs: {
    env: 'GATEWAY_BACKEND_CIRCUIT_OPEN_MS',
    type: ms(100, 600_000),
    default: '5000',
    doc: 'How long an open backend circuit fails calls before one probe call is let through.',
  },
  standbyBufferBytes: {
    env: 'GATEWAY_STANDBY_BUFFER_BYTES',
    type: { kind: 'int', min: 1024 * 1024, max: 16 * 1024 * 1024 * 1024 },
    default: String(16 * 1024 * 1024),
    doc: 'Events a standby keeps to replay after a failover (memory bound, with the count and age bounds): the memory actually held, i.e. the 64 KiB slabs the messages are copied into (a message over 16 KiB in its own buffer) plus 33 bytes per event of index; a message over GATEWAY_MAX_MESSAGE_BYTES costs the index only (it is never delivered). The default covers the failover window (lease plus one poll) at up to ~9 MB/s of events.',
  },
  leaderGarbageBytes: {
    env: 'GATEWAY_LEADER_GARBAGE_BYTES',
    type: { kind: 'int', min: 0, max: 1024 * 1024 * 1024 },
    default: String(8 * 1024 * 1024),
    doc: "Garbage bound of the events leader: when V8's old space has grown by more than this since its last full GC (checked once per broadcast batch), the leader runs one full GC at once (at most one a second; gateway_leader_garbage_collection_seconds). Under a junk flood the leader's in-flight batches are promoted faster than a CPU-contended host's concurrent marking finishes, and the old space grew by ~30 MB before V8 collected it: 100,000 junk messages peaked at +44 MB RSS, +23 MB with this bound (BENCHMARKS.md, junk-memory). 0 = off (V8 decides alone).",
  },
  maxConnectionsPerUser: {
    env: 'GATEWAY_MAX_CONNECTIONS_PER_USER',
    type: { kind: 'int', min: 0, max: 1_000_000 },
    default: '1000',
    doc: 'Limit: Socket.IO connections per user and site, cluster-wide (Redis counter); beyond it the connection is refused with a CONNECT_ERROR (0 = off; Guest is not limited). High by default: IoT dashboards often share one account across hundreds of screens.',
  },
  mqttUrl: {
    env: 'GATEWAY_MQTT_URL',
    type: { kind: 'url', protocols: ['mqtt:', 'mqtts:'] },
    doc: 'MQTT broker of the IoT ingress (docs/mqtt.md), mqtt:// or mqtts:// (TLS). Unset = off. Needs Redis: only the events leader subscribes.',
  },
  mqttUsername: { env: 'GATEWAY_MQTT_USERNAME', type: { kind: 'string' }, doc: 'MQTT username.' },
  mqttPassword: { env: 'GATEWAY_MQTT_PASSWORD', type: { kind: 'string' }, secret: true, doc: 'MQTT password.' },
  mqttClientId: {
    env: 'GATEWAY_MQTT_CLIENT_ID',
    type: { kind: 'string' },
    doc: 'MQTT client id (default `<GATEWAY_KEY_PREFIX>-gateway-leader`): the same on every host, so the broker session (queued QoS 1 messages) moves to the new leader.',
  },
  mqttCleanSession: {
    env: 'GATEWAY_MQTT_CLEAN_SESSION',
    type: { kind: 'enum', values: ['false', 'true'] },
    default: 'false',
    doc: 'true = the broker forgets the session on disconnect: QoS 1 messages sent during a failover are lost.',
  },
  mqttQos: {
    env: 'GATEWAY_MQTT_QOS',
    type: { kind: 'enum', values: ['0', '1'] },
    default: '1',
    doc: 'Subscription QoS of rules that do not set their own.',
  },
  mqttRules: {
    env: 'GATEWAY_MQTT_RULES',
    type: { kind: 'string' },
    doc: 'JSON array of {topic, site, room, event, qos?, name?}: topic filter to Frappe event; `{n}` in site, room and event is the n-th topic level.',
  },
  mqttRulesFile: {
    env: 'GATEWAY_MQTT_RULES_FILE',
    type: { kind: 'string' },
    doc: 'Path of a JSON file holding the rules instead of GATEWAY_MQTT_RULES.',
  },
  customRooms: {
    env: 'GATEWAY_CUSTOM_ROOMS',
    type: { kind: 'string' },
    doc: 'JSON array of {pattern, doctype, name?, latest?, conflate?}: rooms clients join with `subscribe_room`, each gated by read permission on doctype/name (docs/mqtt.md).',
  },
  latestTtlMs: {
    env: 'GATEWAY_LATEST_TTL_MS',
    type: ms(1000, 30 * 24 * 3_600_000),
    default: String(24 * 3_600_000),
    doc: 'How long the last event of a `latest` custom room is kept for clients that join.',
  },
  conflateBacklog: {
    env: 'GATEWAY_CONFLATE_BACKLOG',
    type: { kind: 'int', min: 1, max: 1_000_000 },
    default: '16',
    doc: 'Packets queued for a client (or 64 KiB unsent on its WebSocket) from which events of `conflate` rooms are conflated: only the newest per room waits.',
  },
} as const satisfies Record<string, OptionSpec>;

export type OptionName = keyof typeof OPTIONS;
