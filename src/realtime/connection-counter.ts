import { periodic, type RedisClient } from '../redis/connect';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

/**
 * Connections per key (a user of a site, a client address), cluster-wide
 * when Redis is given, refused beyond `max`. This process's own count is the
 * fast path: a key over the limit here is over it everywhere, without a
 * round trip. Used by GATEWAY_MAX_CONNECTIONS_PER_USER and
 * GATEWAY_MAX_CONNECTIONS_PER_IP.
 */
export interface ConnectionCounter {
  /** Counts one connection; resolves false (nothing counted) when the key is at the limit. */
  tryOpen(key: string): Promise<boolean>;
  /** Releases a connection counted by `tryOpen`. */
  close(key: string): void;
  stop(): void;
}

// INCR, refuse (and undo) beyond the limit; the expiry bounds what a crashed
// process leaves counted: every process refreshes the keys it holds, so a key
// only expires once no live process holds a connection for it. A refused
// attempt leaves the expiry alone: retries must not keep a crashed process's
// counts alive.
const OPEN = `
local n = redis.call('INCR', KEYS[1])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n`;
const CLOSE = `
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n`;

/** How long a counter lives without a refresh from a process holding one of its connections. */
export const COUNTER_TTL_MS = 10 * 60_000;

export interface CounterRedis {
  readonly client: RedisClient;
  /** The Redis key of a counter key. */
  readonly key: (key: string) => string;
  readonly ttlMs?: number;
  /** How often held keys get their expiry refreshed (default: a quarter of the TTL). */
  readonly refreshMs?: number;
  /** A refresh skipped: the connection is down or stalled, or the previous refresh had no reply yet. */
  readonly onRefreshSkipped?: () => void;
}

export function createConnectionCounter(opts: {
  max: number;
  /** What is counted, for log lines ("user", "address"). */
  what: string;
  log: Logger;
  redis?: CounterRedis;
}): ConnectionCounter {
  const { max, log, redis, what } = opts;
  const ttlMs = redis?.ttlMs ?? COUNTER_TTL_MS;
  const local = new Map<string, number>();
  const add = (k: string, d: number): void => {
    const n = (local.get(k) ?? 0) + d;
    if (n <= 0) local.delete(k);
    else local.set(k, n);
  };
  let timer: NodeJS.Timeout | null = null;
  if (redis && max > 0) {
    const refresh = periodic(
      redis.client,
      () => Promise.all([...local.keys()].map((k) => redis.client.pexpire(redis.key(k), ttlMs).catch(() => undefined))),
      redis.onRefreshSkipped,
    );
    timer = setInterval(refresh, redis.refreshMs ?? ttlMs / 4);
    timer.unref();
  }
  return {
    async tryOpen(k) {
      if (max <= 0) return true;
      if ((local.get(k) ?? 0) >= max) return false;
      add(k, 1);
      if (!redis) return true;
      try {
        const n = (await redis.client.eval(OPEN, 1, redis.key(k), max, ttlMs)) as number;
        if (n === 0) {
          add(k, -1);
          return false;
        }
      } catch (err) {
        // Redis unreachable: the local bound still holds; do not lock clients out.
        log.debug({ err: errorMessage(err) }, `${what} connection counter unavailable`);
      }
      return true;
    },
    close(k) {
      if (max <= 0) return;
      add(k, -1);
      if (!redis) return;
      redis.client
        .eval(CLOSE, 1, redis.key(k))
        .catch((err: unknown) => log.debug({ err: errorMessage(err) }, `${what} connection counter release failed`));
    },
    stop() {
      if (timer) clearInterval(timer);
    },
  };
}
