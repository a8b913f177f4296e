import type { Keys } from '../redis/keys';
import type { RedisClient } from '../redis/connect';
import type { Logger } from '../shared/logger';
import { createConnectionCounter } from './connection-counter';

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

export function createUserConnections(
  max: number,
  log: Logger,
  redis?: { client: RedisClient; keys: Keys; refreshMs?: number; onRefreshSkipped?: () => void },
): UserConnections {
  const key = (site: string, user: string): string => (redis ? redis.keys.userConnections(site, user) : `${site}\0${user}`);
  const counter = createConnectionCounter({
    max,
    what: 'user',
    log,
    ...(redis
      ? {
          redis: {
            client: redis.client,
            key: (k: string) => k,
            ...(redis.refreshMs ? { refreshMs: redis.refreshMs } : {}),
            ...(redis.onRefreshSkipped ? { onRefreshSkipped: redis.onRefreshSkipped } : {}),
          },
        }
      : {}),
  });
  return {
    tryOpen: (site, user) => (user === 'Guest' ? Promise.resolve(true) : counter.tryOpen(key(site, user))),
    close: (site, user) => {
      if (user !== 'Guest') counter.close(key(site, user));
    },
    stop: () => counter.stop(),
  };
}
