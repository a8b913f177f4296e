import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisConfig } from '../config';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

export type RedisClient = Redis | Cluster;

export interface ClientOptions {
  /** Used in logs and CLIENT SETNAME. */
  readonly name: string;
  /** Subscriber connections for sharded pub/sub in Cluster mode need ioredis' sharded subscribers. Implies `pubsub`. */
  readonly subscriber?: boolean;
  /** A connection that (P|S)SUBSCRIBEs: no ready check (see `baseOptions`). */
  readonly pubsub?: boolean;
  /** Fail commands at once while disconnected instead of queueing them (health checks). */
  readonly failFast?: boolean;
}

function baseOptions(cfg: RedisConfig, opts: ClientOptions): RedisOptions {
  const url = new URL(cfg.url);
  const o: RedisOptions = {
    connectionName: opts.name.replace(/[^A-Za-z0-9_.:-]/g, '_'),
    // Reconnect forever with a capped backoff; the gateway keeps serving
    // connected clients while Redis is away.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 6), 2000),
    maxRetriesPerRequest: opts.failFast ? 0 : null,
    enableOfflineQueue: !opts.failFast,
    // ioredis writes (P|S)SUBSCRIBE at once while a connection is still in its
    // handshake (Redis accepts them while loading), so a subscription made
    // then (a namespace or room created while the subscriber (re)connects)
    // puts the connection in subscriber mode before the ready check's INFO,
    // which ioredis then refuses: the connection is dropped and an unhandled
    // rejection logged. Pub/sub needs no ready check.
    enableReadyCheck: !(opts.pubsub === true || opts.subscriber === true),
    lazyConnect: true,
  };
  if (url.username) o.username = decodeURIComponent(url.username);
  if (url.password) o.password = decodeURIComponent(url.password);
  if (url.protocol === 'rediss:') o.tls = {};
  const db = url.pathname.replace(/^\//, '');
  if (cfg.mode !== 'cluster' && db !== '' && /^\d+$/.test(db)) o.db = Number(db);
  return o;
}

/** A new, not yet connected client for the configured topology. */
export function createRedisClient(cfg: RedisConfig, opts: ClientOptions, log: Logger): RedisClient {
  const base = baseOptions(cfg, opts);
  let client: RedisClient;
  if (cfg.mode === 'cluster') {
    const copts: ClusterOptions = {
      redisOptions: base,
      lazyConnect: true,
      enableOfflineQueue: !opts.failFast,
      clusterRetryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      shardedSubscribers: opts.subscriber === true,
    };
    client = new Cluster(
      cfg.clusterNodes.map((n) => ({ host: n.host, port: n.port })),
      copts,
    );
  } else if (cfg.mode === 'sentinel') {
    client = new Redis({
      ...base,
      sentinels: cfg.sentinels.map((s) => ({ host: s.host, port: s.port })),
      name: cfg.sentinelName,
      sentinelRetryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      // A replica promoted by Sentinel: reconnect to the new master.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
    });
  } else {
    const url = new URL(cfg.url);
    client = new Redis({ ...base, host: url.hostname, port: Number(url.port || 6379) });
  }
  let wasReady = false;
  client.on('error', (err: Error) => log.debug({ client: opts.name, err: errorMessage(err) }, 'redis client error'));
  client.on('ready', () => {
    if (wasReady) log.info({ client: opts.name }, 'redis reconnected');
    wasReady = true;
  });
  client.on('close', () => {
    if (wasReady) log.warn({ client: opts.name }, 'redis connection closed, reconnecting');
  });
  return client;
}

/** Connects a lazily created client, tolerating that Redis is down right now. */
export function connectInBackground(client: RedisClient, log: Logger, name: string): void {
  client.connect().catch((err: unknown) => log.warn({ client: name, err: errorMessage(err) }, 'redis not reachable yet, retrying'));
}

export async function quitClient(client: RedisClient): Promise<void> {
  try {
    await Promise.race([client.quit(), new Promise((r) => setTimeout(r, 1000).unref())]);
  } catch {
    // already closed
  }
  client.disconnect();
}
