import { every } from '../shared/clock';
import { Cluster, Redis, type ChainableCommander, type ClusterOptions, type Command, type RedisOptions } from 'ioredis';
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
  /**
   * Fail commands at once while disconnected or stalled (see STALL_MS)
   * instead of queueing them (health checks, lookups that have a fallback).
   */
  readonly failFast?: boolean;
  /** The connection's role in logs and metrics (default: the last `:` part of `name`). */
  readonly role?: string;
  /** Called on every transition between ready (true) and not ready (false). */
  readonly onState?: (up: boolean) => void;
  /** Called once per command Redis or the client rejected. */
  readonly onCommandError?: (role: string) => void;
  /** Called every STALL_CHECK_MS with the commands sent on this connection and not answered yet. */
  readonly onUnanswered?: (role: string, count: number) => void;
}

/**
 * A connection with commands in flight and no reply for this long is
 * stalled: the TCP connection looks open but nothing comes back (a network
 * partition, a frozen Redis). It counts as down (gateway_redis_up, readiness)
 * until a reply arrives; ioredis keeps it and the commands, which Redis runs
 * if the link comes back before TCP gives up.
 */
export const STALL_MS = 3000;
const STALL_CHECK_MS = 1000;

/** What a fail-fast connection answers to a command while it is stalled. */
export const STALLED_REFUSAL = 'redis connection stalled (no reply for 3 s): command not sent';

/**
 * The errors a command is refused with when it was never written to the
 * socket: ioredis' `Redis.sendCommand` and `Cluster` without an offline queue
 * (fail-fast connections) reject at once, synchronously, when the stream is not
 * writable or the cluster not ready, and STALLED_REFUSAL is ours. Every other
 * failure of a command (no reply in time, the connection lost with the command
 * in flight: MaxRetriesPerRequestError, AbortError, `Connection is closed.`
 * from a flush) may come after Redis ran it. ioredis has no flag for "written":
 * a command is written in the same call that queues it as sent.
 */
const NOT_SENT_MESSAGES: ReadonlySet<string> = new Set([
  "Stream isn't writeable and enableOfflineQueue options is false",
  "Cluster isn't ready and enableOfflineQueue options is false",
  STALLED_REFUSAL,
]);

/** The command failed before it was written: Redis never saw it (see NOT_SENT_MESSAGES). */
export function commandNotSent(err: unknown): boolean {
  return NOT_SENT_MESSAGES.has(errorMessage(err));
}

/** Redis answered the command with an error (it ran it and refused, or refused to run it). */
export function isReplyError(err: unknown): boolean {
  return err instanceof Error && err.name === 'ReplyError';
}

/** While a connection stays down, one reminder line per this period (not one per retry). */
export const STILL_DOWN_LOG_MS = 60_000;

/**
 * ioredis' error messages, in words an operator can act on. Connection-level
 * failures all mean the same to them: the connection is down.
 */
export function plainRedisError(err: unknown): string {
  const e = err as { code?: string; message?: string } | undefined;
  const msg = errorMessage(err);
  const code = e?.code ?? /\b(E[A-Z]+)\b/.exec(msg)?.[1];
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused (is redis running and listening there?)';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not found';
    case 'ECONNRESET':
    case 'EPIPE':
      return 'connection reset by redis';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return 'host unreachable';
  }
  if (/enableOfflineQueue|Connection is closed|max retries per request|MaxRetriesPerRequest|Stream isn't writeable/i.test(msg)) {
    return 'redis connection is down';
  }
  if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(msg)) return 'authentication failed (check the credentials)';
  if (/All sentinels are unreachable/i.test(msg)) return 'no sentinel reachable';
  if (/Failed to refresh slots cache|None of startup nodes is available/i.test(msg)) return 'no cluster node reachable';
  return msg;
}

/** Where a connection goes, for log lines. */
export function redisAddress(cfg: RedisConfig): string {
  if (cfg.mode === 'cluster') return cfg.clusterNodes.map((n) => `${n.host}:${n.port}`).join(',');
  if (cfg.mode === 'sentinel') return `sentinel ${cfg.sentinelName}@${cfg.sentinels.map((n) => `${n.host}:${n.port}`).join(',')}`;
  const u = new URL(cfg.url);
  return `${u.hostname}:${u.port || '6379'}`;
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
      ...(cfg.sentinelUsername !== null ? { sentinelUsername: cfg.sentinelUsername } : {}),
      ...(cfg.sentinelPassword !== null ? { sentinelPassword: cfg.sentinelPassword } : {}),
      sentinelRetryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
      // A replica promoted by Sentinel: reconnect to the new master.
      reconnectOnError: (err) => err.message.startsWith('READONLY'),
    });
  } else {
    const url = new URL(cfg.url);
    client = new Redis({ ...base, host: url.hostname, port: Number(url.port || 6379) });
  }
  watchConnection(client, cfg, opts, log);
  return client;
}

/**
 * One log line per state change of a connection (with its address, role
 * and a plain reason) and a reminder while it stays down: a Redis outage
 * retries every couple of seconds, and each retry used to be a line.
 */
function watchConnection(client: RedisClient, cfg: RedisConfig, opts: ClientOptions, log: Logger): void {
  const role = opts.role ?? opts.name.split(':').pop() ?? opts.name;
  const clog = log.child({ sub: 'redis', connection: role, address: redisAddress(cfg) });
  let state: 'new' | 'up' | 'down' = 'new';
  let lastReason = 'connection closed';
  let downSince = 0;
  let reminder: NodeJS.Timeout | undefined;
  const stopReminder = (): void => {
    clearInterval(reminder);
    reminder = undefined;
  };
  const down = (): void => {
    if (state === 'down') return;
    const wasUp = state === 'up';
    state = 'down';
    downSince = Date.now();
    opts.onState?.(false);
    clog.warn({ reason: lastReason }, wasUp ? `redis connection lost: ${lastReason}` : `redis not reachable: ${lastReason}`);
    stopReminder();
    reminder = setInterval(() => {
      clog.warn({ reason: lastReason, downForS: Math.round((Date.now() - downSince) / 1000) }, `redis still down: ${lastReason}, retrying`);
    }, STILL_DOWN_LOG_MS);
    reminder.unref();
  };
  client.on('error', (err: Error) => {
    lastReason = plainRedisError(err);
    clog.debug({ err: errorMessage(err) }, 'redis client error');
    if (state === 'new') down();
  });
  client.on('ready', () => {
    stopReminder();
    if (state === 'down' && downSince > 0) {
      clog.info({ downForMs: Date.now() - downSince }, 'redis connection restored');
    } else {
      clog.debug('redis connected');
    }
    state = 'up';
    opts.onState?.(true);
  });
  client.on('close', () => {
    if (state === 'up') down();
  });
  client.on('end', () => {
    stopReminder();
    if (state === 'up') opts.onState?.(false);
    state = 'new';
  });
  const c = client as unknown as { sendCommand: (cmd: Command, ...rest: unknown[]) => unknown };
  const send = c.sendCommand.bind(client);
  // Commands in flight, and when the last one settled (or the first was sent after none was in flight).
  const health: Flow = { unanswered: 0, stalled: false, resumed: new Set() };
  flow.set(client, health);
  let progressAt = Date.now();
  const settled = (): void => {
    health.unanswered--;
    progressAt = Date.now();
    if (health.stalled) {
      health.stalled = false;
      clog.warn('redis connection answers again');
      if (state === 'up') opts.onState?.(true);
      if (client.status === 'ready') resumed(health);
    }
  };
  const onError = opts.onCommandError;
  c.sendCommand = (cmd: Command, ...rest: unknown[]) => {
    // Refused before it is counted: only a reply to a command already sent can end the stall.
    if (opts.failFast && health.stalled && client.status === 'ready') {
      onError?.(role);
      cmd.reject(new Error(STALLED_REFUSAL));
      return cmd.promise;
    }
    if (health.unanswered === 0) progressAt = Date.now();
    health.unanswered++;
    // ioredis' own CLIENT SETINFO on connect fails on Redis < 7.2 and is ignored by ioredis: not an error of ours.
    if (!onError || (cmd.name === 'client' && String(cmd.args[0]).toUpperCase() === 'SETINFO')) {
      cmd.promise.then(settled, settled);
      return send(cmd, ...rest);
    }
    // One reaction per command (the leader's batches and renewals pass here): settled, then counted when it failed.
    cmd.promise.then(settled, (err: unknown) => {
      settled();
      onError(role);
      clog.debug({ command: cmd.name, err: errorMessage(err) }, 'redis command failed');
    });
    return send(cmd, ...rest);
  };
  // On the process' clock (shared/clock): every connection's check in one wake-up with the other periodic work.
  const check = every(
    STALL_CHECK_MS,
    () => {
      opts.onUnanswered?.(role, health.unanswered);
      // Only a connection that claims to be up can be stalled (while it reconnects, commands wait in the offline queue).
      if (health.stalled || health.unanswered === 0 || client.status !== 'ready' || Date.now() - progressAt < STALL_MS) return;
      health.stalled = true;
      clog.warn(
        { unanswered: health.unanswered, silentMs: Date.now() - progressAt },
        `redis connection stalled: ${health.unanswered} command(s) without a reply`,
      );
      if (state === 'up') opts.onState?.(false);
    },
    { ref: false },
  );
  client.on('ready', () => {
    // A fresh connection: what it re-sent is measured from now.
    progressAt = Date.now();
    health.stalled = false;
    resumed(health);
  });
  client.once('end', () => check.stop());
}

/** What `watchConnection` knows of each client's commands, and who waits for them to flow again. */
interface Flow {
  unanswered: number;
  stalled: boolean;
  readonly resumed: Set<() => void>;
}
const flow = new WeakMap<RedisClient, Flow>();

/** Runs the `onFlowing` listeners after the current tick (a listener may send commands). */
function resumed(health: Flow): void {
  if (health.resumed.size === 0) return;
  setImmediate(() => {
    for (const fn of health.resumed) fn();
  });
}

/**
 * Calls `fn` each time commands flow on `client` again after it was down or
 * stalled (see `commandsFlowing`): writes recorded while they could not be
 * sent are applied then. Returns the function that stops it.
 */
export function onFlowing(client: RedisClient, fn: () => void): () => void {
  const health = flow.get(client);
  if (!health) {
    // A client made elsewhere (tests): only its reconnects are known.
    client.on('ready', fn);
    return () => client.off('ready', fn);
  }
  health.resumed.add(fn);
  return () => health.resumed.delete(fn);
}

/**
 * Whether a command sent now is expected to be answered soon: the
 * connection is ready and not stalled (see STALL_MS). A command sent
 * otherwise waits in ioredis' queues for as long as the outage lasts.
 */
export function commandsFlowing(client: RedisClient): boolean {
  return client.status === 'ready' && flow.get(client)?.stalled !== true;
}

/**
 * A periodic Redis task that cannot pile up commands during an outage or a
 * partition: a run is skipped (and `onSkip` called) while `client` is down or
 * stalled (or `client()` says so), or while the previous run has not
 * settled. Whatever the outage's length, the task holds at most one run's
 * commands.
 */
export function periodic(client: RedisClient | (() => boolean), run: () => Promise<unknown>, onSkip?: () => void): () => void {
  const flowing = typeof client === 'function' ? client : () => commandsFlowing(client);
  let inFlight = false;
  const done = (): void => {
    inFlight = false;
  };
  return () => {
    if (inFlight || !flowing()) {
      onSkip?.();
      return;
    }
    inFlight = true;
    run().then(done, done);
  };
}

/**
 * At most one call of `fn` in flight: callers meanwhile share its promise
 * (a probe polled during a partition sends one command, not one per poll).
 */
export function singleFlight<T>(fn: () => Promise<T>): () => Promise<T> {
  let current: Promise<T> | null = null;
  return () => {
    current ??= fn().finally(() => {
      current = null;
    });
    return current;
  };
}

/** `p`, or a rejection with `message` once `ms` have passed (what waits for Redis answers in time). */
export async function withDeadline<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_r, rej) => {
    timer = setTimeout(() => rej(new Error(message)), ms);
  });
  try {
    return await Promise.race([p, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Connects a lazily created client, tolerating that Redis is down right now. */
export function connectInBackground(client: RedisClient, log: Logger, name: string): void {
  // The connection's own watcher logs the failure (once), with a plain reason.
  client.connect().catch((err: unknown) => log.debug({ client: name, err: errorMessage(err) }, 'redis not reachable yet, retrying'));
}

/**
 * QUIT when the connection is up (so Redis sees a clean goodbye), at once
 * otherwise: waiting for a QUIT to reach a Redis that is down would hold
 * shutdown for its whole grace period.
 */
export async function quitClient(client: RedisClient, timeoutMs = 1000): Promise<void> {
  if (client.status !== 'ready') {
    client.disconnect();
    return;
  }
  try {
    await Promise.race([client.quit(), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  } catch {
    // already closed
  }
  client.disconnect();
}

interface Batched {
  readonly add: (p: ChainableCommander) => unknown;
  readonly resolve: (v: unknown) => void;
  readonly reject: (err: unknown) => void;
}

/**
 * Commands issued during one turn of the event loop, written to Redis as one
 * pipeline at its end (`setImmediate`), each answered as its own. A connect
 * storm or a reconnect herd runs the same few commands for every handshake
 * that progressed in the same turn (auth cache, session take, history
 * check): one socket write per command was the largest Redis cost of a
 * worker's handshake by profile (BENCHMARKS.md, "Handshake throughput").
 * Unlike ioredis' auto-pipelining, a batch does not wait for the previous
 * one's replies, and a fail-fast connection still refuses each command at
 * once while stalled. On Redis Cluster a pipeline must stay within a slot:
 * each command is then its own pipeline, sent at once.
 */
export class TickPipeline {
  private batch: Batched[] = [];

  constructor(private readonly client: RedisClient) {}

  /** Adds one command to the turn's pipeline (`add` calls one command on it); resolves its reply. */
  run<T>(add: (p: ChainableCommander) => unknown): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const entry: Batched = { add, resolve: resolve as (v: unknown) => void, reject };
      if (!(this.client instanceof Redis)) {
        this.exec([entry]);
        return;
      }
      this.batch.push(entry);
      if (this.batch.length === 1) setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    const batch = this.batch;
    this.batch = [];
    this.exec(batch);
  }

  private exec(batch: readonly Batched[]): void {
    const p = this.client.pipeline();
    for (const e of batch) e.add(p);
    p.exec().then(
      (results) => {
        batch.forEach((e, i) => {
          const r = results?.[i];
          if (!r) e.reject(new Error('no reply in the pipeline'));
          else if (r[0]) e.reject(r[0]);
          else e.resolve(r[1]);
        });
      },
      (err: unknown) => {
        for (const e of batch) e.reject(err);
      },
    );
  }
}
