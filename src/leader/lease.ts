import { performance } from 'node:perf_hooks';
import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';

// Acquire: only when free; every acquisition increments the fencing epoch.
const ACQUIRE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local epoch = redis.call('INCR', KEYS[2])
local token = ARGV[1] .. '|' .. epoch
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return token`;
// Renew and release are compare-and-act on the token, so a leader that lost
// the lease can never extend or delete its successor's.
const RENEW = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`;
const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`;

export interface Held {
  readonly token: string;
  readonly epoch: number;
  /** performance.now() before which the lease is certainly still ours. */
  validUntil: number;
}

type Scripted = RedisClient & {
  gwAcquire(lease: string, epoch: string, node: string, ttl: number): Promise<string | null>;
  gwRenew(lease: string, token: string, ttl: number): Promise<number>;
  gwRelease(lease: string, token: string): Promise<number>;
};

export function defineLeaseScripts(client: RedisClient): void {
  client.defineCommand('gwAcquire', { numberOfKeys: 2, lua: ACQUIRE });
  client.defineCommand('gwRenew', { numberOfKeys: 1, lua: RENEW });
  client.defineCommand('gwRelease', { numberOfKeys: 1, lua: RELEASE });
}

/**
 * The leader lease: SET NX PX with a fencing epoch. Validity is tracked on the
 * monotonic clock from the moment each request was *sent*, minus a safety
 * margin for clock drift, so a leader stops before Redis can expire the key.
 */
export class Lease {
  private readonly c: Scripted;

  constructor(
    client: RedisClient,
    private readonly keys: Keys,
    private readonly nodeId: string,
    readonly ttlMs: number,
  ) {
    defineLeaseScripts(client);
    this.c = client as Scripted;
  }

  private margin(): number {
    return Math.max(50, this.ttlMs * 0.1);
  }

  async tryAcquire(): Promise<Held | null> {
    const sent = performance.now();
    const token = await this.c.gwAcquire(this.keys.leaderLease, this.keys.leaderEpoch, this.nodeId, this.ttlMs);
    if (!token) return null;
    const epoch = Number(token.slice(token.lastIndexOf('|') + 1));
    return { token, epoch, validUntil: sent + this.ttlMs - this.margin() };
  }

  /** True when renewed; false when the lease is no longer ours. */
  async renew(held: Held): Promise<boolean> {
    const sent = performance.now();
    const ok = (await this.c.gwRenew(this.keys.leaderLease, held.token, this.ttlMs)) === 1;
    if (ok) held.validUntil = sent + this.ttlMs - this.margin();
    return ok;
  }

  async release(held: Held): Promise<void> {
    await this.c.gwRelease(this.keys.leaderLease, held.token);
  }

  async current(): Promise<{ nodeId: string; epoch: number } | null> {
    const v = await this.c.get(this.keys.leaderLease);
    if (!v) return null;
    const i = v.lastIndexOf('|');
    return { nodeId: v.slice(0, i), epoch: Number(v.slice(i + 1)) };
  }
}
