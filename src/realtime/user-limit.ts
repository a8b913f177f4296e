import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

/**
 * Counts connections per (site, user), cluster-wide when Redis is given, and
 * refuses beyond `max` (GATEWAY_MAX_CONNECTIONS_PER_USER). Guest is never
 * limited: every anonymous visitor of a site is Guest.
 */
export interface UserConnections {
  /** Counts one connection; resolves false (nothing counted) when the user is at the limit. */
  tryOpen(site: string, user: string): Promise<boolean>;
  /** Releases a connection counted by `tryOpen`. */
  close(site: string, user: string): void;
  stop(): void;
}

// INCR, refuse (and undo) beyond the limit; the expiry bounds what a crashed
// process leaves counted: every process refreshes the keys of the users it
// holds, so a key only expires once no live process holds that user.
const OPEN = `
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return n`;
const CLOSE = `
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n`;

/** How long a user's counter lives without a refresh from a process holding that user. */
export const USER_COUNTER_TTL_MS = 10 * 60_000;

export function createUserConnections(
  max: number,
  log: Logger,
  redis?: { client: RedisClient; keys: Keys; refreshMs?: number },
): UserConnections {
  // This process's connections per user: the fast path (a user over the
  // limit here is over it everywhere) and what the refresh keeps alive.
  const local = new Map<string, number>();
  const key = (site: string, user: string): string => `${site}\0${user}`;
  const exempt = (user: string): boolean => max <= 0 || user === 'Guest';
  const add = (k: string, d: number): void => {
    const n = (local.get(k) ?? 0) + d;
    if (n <= 0) local.delete(k);
    else local.set(k, n);
  };
  let timer: NodeJS.Timeout | null = null;
  if (redis && max > 0) {
    timer = setInterval(
      () => {
        for (const k of local.keys()) {
          const [site = '', user = ''] = k.split('\0');
          redis.client.pexpire(redis.keys.userConnections(site, user), USER_COUNTER_TTL_MS).catch(() => undefined);
        }
      },
      redis.refreshMs ?? USER_COUNTER_TTL_MS / 4,
    );
    timer.unref();
  }
  return {
    async tryOpen(site, user) {
      if (exempt(user)) return true;
      const k = key(site, user);
      if ((local.get(k) ?? 0) >= max) return false;
      add(k, 1);
      if (!redis) return true;
      try {
        const n = (await redis.client.eval(OPEN, 1, redis.keys.userConnections(site, user), max, USER_COUNTER_TTL_MS)) as number;
        if (n === 0) {
          add(k, -1);
          return false;
        }
      } catch (err) {
        // Redis unreachable: the local bound still holds; do not lock users out.
        log.debug({ err: errorMessage(err) }, 'user connection counter unavailable');
      }
      return true;
    },
    close(site, user) {
      if (exempt(user)) return;
      add(key(site, user), -1);
      if (!redis) return;
      redis.client
        .eval(CLOSE, 1, redis.keys.userConnections(site, user))
        .catch((err: unknown) => log.debug({ err: errorMessage(err) }, 'user connection counter release failed'));
    },
    stop() {
      if (timer) clearInterval(timer);
    },
  };
}
