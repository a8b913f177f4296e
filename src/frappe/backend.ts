import { createHash } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import type { ChainableCommander, Redis, Cluster } from 'ioredis';
import type { GatewayConfig } from '../config';
import type { Metrics } from '../metrics/metrics';
import type { Keys } from '../redis/keys';
import { TickPipeline } from '../redis/connect';
import { GatewayError, errorMessage } from '../shared/errors';
import { Semaphore } from '../shared/semaphore';
import { randomBase64url } from '../shared/random-pool';
import type { Logger } from '../shared/logger';
import { CIRCUIT_STATE, CircuitBreaker } from './circuit';
import { CallFailure, get, json, type Answer } from './backend-http';

/** The one credential forwarded to Frappe: the Authorization header wins over the sid cookie. */
export type Credential = { readonly kind: 'authorization'; readonly value: string } | { readonly kind: 'sid'; readonly value: string };

export interface RequestContext {
  readonly site: string;
  readonly credential: Credential;
  /** The handshake Origin, used as backend when none is configured (Frappe's behaviour). */
  readonly origin: string | undefined;
}

export interface UserInfo {
  readonly user: string;
  readonly user_type: string;
  readonly installed_apps: readonly string[];
}

export type PermissionFlavour = 'v15' | 'v16';

const API = '/api/method/frappe.realtime.';
const LOCAL_CACHE_MAX = 10_000;
/** How often a process waiting for another's backend answer looks at the shared cache. */
const LOCK_POLL_MS = 20;
/** A lock outlives the backend timeout by this much (queueing before the request). */
const LOCK_SLACK_MS = 1000;
const RELEASE_LOCK = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;
/**
 * The shared cache's read and the lock in one round trip (KEYS: cache, lock;
 * ARGV: token, lock ms): {1, value, pttl} on a hit, {2} when this caller took
 * the lock, {0} when another holds it. Atomic, so a miss with the lock taken
 * cannot hide an answer written in between (the earlier GET, SET NX, GET
 * needed a second read for that): one command per handshake instead of five.
 */
const READ_OR_LOCK = `local v = redis.call('GET', KEYS[1])
if v then return {1, v, redis.call('PTTL', KEYS[1])} end
if redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2], 'NX') then return {2} end
return {0}`;
/** The answer written and our own lock released, in that order (KEYS: cache, lock; ARGV: value, ttl ms, token). */
const WRITE_AND_RELEASE = `redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1`;

/** A pipeline of the auth cache's client, with the scripts defined on it. */
type AuthCachePipeline = ChainableCommander & {
  gwAuthReadOrLock(cache: string, lock: string, token: string, lockMs: number): ChainableCommander;
  gwAuthWriteRelease(cache: string, lock: string, value: string, ttlMs: number, token: string): ChainableCommander;
};
/** Backends are per Origin when none is configured: bound the breakers kept. */
const BREAKERS_MAX = 256;

const OUTAGE_CODES = new Set([
  'GW_ERR_BACKEND_TIMEOUT',
  'GW_ERR_BACKEND_UNREACHABLE',
  'GW_ERR_BACKEND_QUEUE_FULL',
  'GW_ERR_BACKEND_CIRCUIT_OPEN',
]);

/**
 * True when a backend call failed because the backend (or the gateway's
 * queue to it) is unavailable, rather than because it refused: a client
 * should retry later, not give up (docs/protocol.md section 6).
 */
export function isBackendOutage(err: unknown): boolean {
  return err instanceof GatewayError && (err.retryable || OUTAGE_CODES.has(err.code));
}

export interface BackendOptions {
  readonly backendUrl: string | null;
  readonly timeoutMs: number;
  /** Calls in flight at once, per queue (handshakes, permission checks); the others wait. */
  readonly concurrency: number;
  /** Calls that may wait per queue; beyond it a call fails at once with GW_ERR_BACKEND_QUEUE_FULL. */
  readonly maxQueued?: number;
  /** Consecutive failures (timeout, unreachable, HTTP 5xx) that open the circuit; 0 = no breaker. */
  readonly circuitFailures?: number;
  /** How long an open circuit fails calls fast before one probe is let through. */
  readonly circuitOpenMs?: number;
  readonly flavour: PermissionFlavour;
  readonly cacheTtlMs: number;
  readonly socketSecret: () => string | null;
  readonly metrics: Metrics;
  readonly log: Logger;
  /** Optional shared cache so a reconnect storm does not become a storm on the backend. */
  readonly redis?: { client: Redis | Cluster; keys: Keys } | undefined;
}

/**
 * Calls to the Frappe web server. Answers are cached for `cacheTtlMs` per
 * (site, credential, question), in process and in Redis, and concurrent
 * identical questions share one request: in the process (`inflight`) and,
 * with Redis, across the cluster (a lock per question, `sharedFlight`), so
 * a reconnect storm asks the backend once per credential per TTL.
 */
/** The backend client as the configuration describes it (both process roles use this). */
export function backendFromConfig(
  config: Pick<
    GatewayConfig,
    | 'backendUrl'
    | 'backendTimeoutMs'
    | 'backendConcurrency'
    | 'backendQueue'
    | 'backendCircuitFailures'
    | 'backendCircuitOpenMs'
    | 'permissionFlavour'
    | 'authCacheTtlMs'
  >,
  deps: { metrics: Metrics; log: Logger; socketSecret: () => string | null; redis?: BackendOptions['redis'] },
): FrappeBackend {
  return new FrappeBackend({
    backendUrl: config.backendUrl,
    timeoutMs: config.backendTimeoutMs,
    concurrency: config.backendConcurrency,
    maxQueued: config.backendQueue,
    circuitFailures: config.backendCircuitFailures,
    circuitOpenMs: config.backendCircuitOpenMs,
    flavour: config.permissionFlavour,
    cacheTtlMs: config.authCacheTtlMs,
    socketSecret: deps.socketSecret,
    metrics: deps.metrics,
    log: deps.log.child({ sub: 'backend' }),
    redis: deps.redis,
  });
}

export class FrappeBackend {
  private readonly local = new Map<string, { at: number; value: string }>();
  private readonly inflight = new Map<string, Promise<string>>();
  // Separate queues: established sockets' permission checks must not wait
  // behind a reconnect storm's handshakes (nor the other way round).
  private readonly slots: Record<'handshake' | 'permission', Semaphore>;
  private readonly breakers = new Map<string, CircuitBreaker>();

  /** The shared cache's scripts of every handshake in one event-loop turn, as one pipeline. */
  private readonly batch: TickPipeline | undefined;

  constructor(private readonly opts: BackendOptions) {
    opts.redis?.client.defineCommand('gwAuthReadOrLock', { numberOfKeys: 2, lua: READ_OR_LOCK });
    opts.redis?.client.defineCommand('gwAuthWriteRelease', { numberOfKeys: 2, lua: WRITE_AND_RELEASE });
    this.batch = opts.redis ? new TickPipeline(opts.redis.client) : undefined;
    this.slots = {
      handshake: new Semaphore(opts.concurrency, opts.maxQueued),
      permission: new Semaphore(opts.concurrency, opts.maxQueued),
    };
  }

  /** True when a handshake's backend call would be refused right now (its queue is full). */
  get handshakeQueueFull(): boolean {
    return this.slots.handshake.full;
  }

  /**
   * True while the circuit of the backend serving `origin` is open: a
   * handshake would fail at once, so it can be refused before any work.
   */
  unavailable(origin: string | undefined): boolean {
    const base = this.opts.backendUrl ?? origin;
    if (!base) return false;
    return this.breakers.get(base.replace(/\/+$/, ''))?.rejecting ?? false;
  }

  private breaker(base: string): CircuitBreaker {
    let b = this.breakers.get(base);
    if (!b) {
      if (this.breakers.size >= BREAKERS_MAX) {
        for (const [k, v] of this.breakers) {
          if (v.current === 'closed') {
            this.breakers.delete(k);
            break;
          }
        }
      }
      b = new CircuitBreaker(this.opts.circuitFailures ?? 0, this.opts.circuitOpenMs ?? 5000, (state) => {
        this.opts.log.warn({ backend: base, state }, 'backend circuit changed state');
        let worst = 0;
        for (const x of this.breakers.values()) worst = Math.max(worst, CIRCUIT_STATE[x.current]);
        this.opts.metrics.backendCircuitState.set(worst);
      });
      this.breakers.set(base, b);
    }
    return b;
  }

  baseUrl(ctx: Pick<RequestContext, 'origin'>): string {
    const base = this.opts.backendUrl ?? ctx.origin;
    if (!base) throw new GatewayError('GW_ERR_BACKEND_UNREACHABLE', 'no backend URL configured and no Origin header');
    return base.replace(/\/+$/, '');
  }

  headers(ctx: RequestContext): Record<string, string> {
    const h: Record<string, string> = { 'X-Frappe-Site-Name': ctx.site, Accept: 'application/json' };
    if (ctx.credential.kind === 'authorization') h.Authorization = ctx.credential.value;
    else h.Cookie = `sid=${ctx.credential.value}`;
    const secret = this.opts.socketSecret();
    if (secret) h['X-Frappe-Socket-Secret'] = secret;
    return h;
  }

  /** The backend URL of `path` with `args` as its query (strings as they are, anything else as JSON). */
  private url(ctx: Pick<RequestContext, 'origin'>, path: string, args: Record<string, unknown>): URL {
    const url = new URL(this.baseUrl(ctx) + (path.startsWith('/') ? path : `/${path}`));
    for (const [k, v] of Object.entries(args)) {
      if (v !== undefined && v !== null) url.searchParams.set(k, typeof v === 'string' ? v : JSON.stringify(v));
    }
    return url;
  }

  /** A raw request with the socket's credential, as Frappe's `frappe_request`. */
  async request(
    ctx: RequestContext,
    path: string,
    args: Record<string, unknown> = {},
    init: { method?: string; headers?: Record<string, string>; body?: string } = {},
    /** The caller's deadline; without one, the configured timeout (app handlers read the body later). */
    signal?: AbortSignal,
  ): Promise<Response> {
    return fetch(this.url(ctx, path, args), {
      method: init.method ?? 'GET',
      headers: { ...this.headers(ctx), ...init.headers },
      body: init.body,
      signal: signal ?? AbortSignal.timeout(this.opts.timeoutMs),
      redirect: 'manual',
    });
  }

  async getUserInfo(ctx: RequestContext): Promise<{ info: UserInfo; cached: boolean }> {
    const { value, cached } = await this.cached(ctx, 'user', async () => {
      const body = await this.call('handshake', ctx, 'get_user_info', {}, (res) => {
        if (res.status < 200 || res.status > 299) {
          throw new GatewayError('GW_ERR_BACKEND_STATUS', `backend answered HTTP ${res.status}`, { retryable: res.status >= 500 });
        }
        try {
          return json(res);
        } catch {
          throw new GatewayError('GW_ERR_BACKEND_BODY', 'backend answered with a body that is not JSON');
        }
      });
      const m = (body as { message?: unknown } | null)?.message as Record<string, unknown> | undefined;
      if (!m || typeof m !== 'object' || typeof m.user !== 'string' || m.user === '') {
        throw new GatewayError('GW_ERR_BACKEND_BODY', 'backend answer has no message.user');
      }
      const apps = Array.isArray(m.installed_apps) ? m.installed_apps.filter((a): a is string => typeof a === 'string') : [];
      const info: UserInfo = {
        user: m.user,
        user_type: typeof m.user_type === 'string' ? m.user_type : 'Website User',
        installed_apps: apps,
      };
      return JSON.stringify(info);
    });
    return { info: JSON.parse(value) as UserInfo, cached };
  }

  /** Permission to join `doctype:<doctype>` (name omitted) or `doc:`/`open_doc:` rooms. */
  async canSubscribe(ctx: RequestContext, doctype: string, name?: string): Promise<boolean> {
    const q = name === undefined ? `perm\0${doctype}` : `perm\0${doctype}\0${name}`;
    const { value } = await this.cached(ctx, q, async () => {
      if (this.opts.flavour === 'v16') {
        return this.call('permission', ctx, 'has_permission', { doctype, name: name ?? '' }, (res) => {
          unavailableOn5xx(res);
          if (res.status < 200 || res.status > 299) return 'false';
          try {
            const body = json(res) as { message?: unknown } | null;
            return body?.message ? 'true' : 'false';
          } catch {
            return 'false';
          }
        });
      }
      const [method, query] =
        name === undefined ? ['can_subscribe_doctype', { doctype }] : ['can_subscribe_doc', { doctype, docname: name }];
      return this.call('permission', ctx, method, query, (res) => {
        unavailableOn5xx(res);
        return res.status === 200 ? 'true' : 'false';
      });
    });
    return value === 'true';
  }

  /** One auth/permission call, within the concurrency bound; the body is read inside it. */
  private call<T>(
    queue: 'handshake' | 'permission',
    ctx: RequestContext,
    method: string,
    query: Record<string, string>,
    read: (res: Answer) => T,
  ): Promise<T> {
    const p = this.slots[queue].run(() => this.callNow(ctx, method, query, read));
    p.catch((err: unknown) => {
      if (err instanceof GatewayError && err.code === 'GW_ERR_BACKEND_QUEUE_FULL')
        this.opts.metrics.limitExceeded.inc({ limit: 'backend_queue' });
    });
    return p;
  }

  private async callNow<T>(ctx: RequestContext, method: string, query: Record<string, string>, read: (res: Answer) => T): Promise<T> {
    const breaker = this.breaker(this.baseUrl(ctx));
    if (!breaker.tryAcquire()) {
      throw new GatewayError('GW_ERR_BACKEND_CIRCUIT_OPEN', 'backend unavailable (circuit open after consecutive failures), retry later');
    }
    const end = this.opts.metrics.backendDuration.startTimer({ endpoint: method });
    try {
      // The timeout covers the whole answer: a body that stalls after the headers is the backend hanging.
      const res = await get(this.url(ctx, `${API}${method}`, query), this.headers(ctx), this.opts.timeoutMs);
      // Any answer below 500 means the backend is up, whatever it answered.
      if (res.status >= 500) breaker.failure();
      else breaker.success();
      return read(res);
    } catch (err) {
      if (err instanceof GatewayError) throw err;
      if (err instanceof CallFailure && err.kind === 'timeout') {
        breaker.failure();
        throw new GatewayError('GW_ERR_BACKEND_TIMEOUT', `backend did not answer within ${this.opts.timeoutMs} ms`, { cause: err });
      }
      if (err instanceof CallFailure && err.kind === 'body') {
        breaker.success();
        throw new GatewayError('GW_ERR_BACKEND_BODY', `backend ${err.message}`, { cause: err });
      }
      breaker.failure();
      throw new GatewayError('GW_ERR_BACKEND_UNREACHABLE', `backend unreachable: ${errorMessage(err)}`, { cause: err });
    } finally {
      end();
    }
  }

  private cacheKey(ctx: RequestContext, question: string): string {
    return createHash('sha256').update(`${ctx.site}\0${ctx.credential.kind}\0${ctx.credential.value}\0${question}`).digest('base64url');
  }

  private async cached(ctx: RequestContext, question: string, load: () => Promise<string>): Promise<{ value: string; cached: boolean }> {
    const ttl = this.opts.cacheTtlMs;
    const key = this.cacheKey(ctx, question);
    if (ttl > 0) {
      const hit = this.local.get(key);
      if (hit && Date.now() - hit.at < ttl) return { value: hit.value, cached: true };
    }
    const pending = this.inflight.get(key);
    if (pending) return { value: await pending, cached: true };
    const redis = ttl > 0 ? this.opts.redis : undefined;
    const p: Promise<{ value: string; cached: boolean; leftMs?: number }> = redis
      ? this.sharedFlight(redis, key, load)
      : load().then((value) => ({ value, cached: false }));
    const shared = p.then((r) => r.value);
    this.inflight.set(key, shared);
    shared.catch(() => undefined);
    try {
      const r = await p;
      if (ttl > 0 && r.leftMs !== 0) this.remember(key, r.value, r.leftMs === undefined ? 0 : ttl - r.leftMs);
      return { value: r.value, cached: r.cached };
    } finally {
      this.inflight.delete(key);
    }
  }

  /**
   * The shared cache with a cluster-wide single flight: on a miss, the
   * process that takes the key's lock asks the backend and writes the
   * answer; the others poll the cache until it is there (or the lock is
   * released without one: then the next one takes it), for at most the
   * backend timeout, after which they ask themselves. A Redis error skips
   * the shared cache (each process then asks once, through `inflight`).
   */
  private async sharedFlight(
    redis: NonNullable<BackendOptions['redis']>,
    key: string,
    load: () => Promise<string>,
  ): Promise<{ value: string; cached: boolean; leftMs?: number }> {
    const ttl = this.opts.cacheTtlMs;
    const cacheKey = redis.keys.authCache(key);
    const lockKey = redis.keys.authLock(key);
    const token = randomBase64url(9);
    const deadline = Date.now() + this.opts.timeoutMs;
    // Scripts defined on this client in the constructor; `batch` exists whenever `redis` does.
    const batch = this.batch as TickPipeline;
    let locked = false;
    try {
      for (;;) {
        const [state, v, left] = await batch.run<[number, string?, number?]>((p) =>
          (p as AuthCachePipeline).gwAuthReadOrLock(cacheKey, lockKey, token, this.opts.timeoutMs + LOCK_SLACK_MS),
        );
        // Kept here only for what is left of the shared entry's TTL: never
        // longer than the TTL after the backend answered.
        if (state === 1 && typeof v === 'string') return { value: v, cached: true, leftMs: (left ?? 0) > 0 ? Math.min(left ?? 0, ttl) : 0 };
        if (state === 2) {
          locked = true;
          break;
        }
        if (Date.now() >= deadline) break;
        await delay(LOCK_POLL_MS);
      }
    } catch (err) {
      this.opts.log.debug({ err: errorMessage(err) }, 'auth cache read failed');
    }
    let value: string;
    try {
      value = await load();
    } catch (err) {
      // Only our own lock (it may have expired and been taken).
      if (locked) redis.client.eval(RELEASE_LOCK, 1, lockKey, token).catch(() => undefined);
      throw err;
    }
    const written = locked
      ? batch.run((p) => (p as AuthCachePipeline).gwAuthWriteRelease(cacheKey, lockKey, value, ttl, token))
      : redis.client.set(cacheKey, value, 'PX', ttl);
    written.catch((err: unknown) => {
      this.opts.log.debug({ err: errorMessage(err) }, 'auth cache write failed');
    });
    return { value, cached: false };
  }

  /** `agedMs`: how old the answer already is (read from the shared cache). */
  private remember(key: string, value: string, agedMs = 0): void {
    if (this.local.size >= LOCAL_CACHE_MAX) {
      // Map iteration is insertion order: drop the oldest entry.
      const oldest = this.local.keys().next().value;
      if (oldest !== undefined) this.local.delete(oldest);
    }
    this.local.set(key, { at: Date.now() - agedMs, value });
  }
}

/**
 * A 5xx answer to a permission question is the backend failing, not a
 * denial: thrown (so it is neither cached nor counted as denied) instead of
 * being remembered as "no" for the whole TTL.
 */
function unavailableOn5xx(res: Answer): void {
  if (res.status >= 500) {
    throw new GatewayError('GW_ERR_BACKEND_STATUS', `backend answered HTTP ${res.status}`, { retryable: true });
  }
}
