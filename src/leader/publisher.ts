import type { RedisClient } from '../redis/connect';
import { GatewayError } from '../shared/errors';
import type { Keys } from '../redis/keys';
import type { Publication } from '../events/encode';

// One batch = the broadcasts plus the leader's progress, applied atomically
// and only while the caller still holds the lease (fencing). A crash either
// before or after the script leaves progress consistent with what was sent,
// which is what makes takeover replay exactly-once. The progress write is a
// compare-and-set on the previous batch's progress: a batch that already ran
// (ioredis re-sends commands whose reply was lost in a reconnect) is skipped.
// ARGV: token, expected previous progress, new progress, n, then n triples
// (command, channel, payload). Returns -1 fenced, -2 already applied.
const PUBLISH_BATCH = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return -2 end
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local b = 5 + i * 3
  redis.call(ARGV[b], ARGV[b + 1], ARGV[b + 2])
end
redis.call('SET', KEYS[2], ARGV[3])
return n`;
// Redis Cluster: shard channels live in other slots than the lease, so the
// broadcasts cannot share the script; the fenced progress write follows them.
const FENCED_PROGRESS = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return -2 end
redis.call('SET', KEYS[2], ARGV[3])
return 1`;
const FENCE_CHECK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return 1`;

type Scripted = RedisClient & {
  gwPublishBatch(lease: string, progress: string, ...args: (string | Buffer | number)[]): Promise<number>;
  gwFencedProgress(lease: string, progress: string, token: string, expected: string, value: string): Promise<number>;
  gwFenceCheck(lease: string, token: string): Promise<number>;
};

export interface BatchItem extends Publication {
  /** 'SPUBLISH' for sharded adapter channels, 'PUBLISH' for classic and control channels. */
  readonly command: 'SPUBLISH' | 'PUBLISH';
}

/** The lease is no longer ours: the batch was refused (split-brain guard). */
export class FencedError extends GatewayError {
  constructor() {
    super('GW_ERR_FENCED', 'lease lost: broadcast refused (fenced)');
    this.name = 'FencedError';
  }
}

/**
 * Publishes the leader's broadcasts. Batches are sent without waiting for the
 * previous one (ioredis pipelines them on one connection, Redis runs them in
 * order), so throughput is bounded by Redis, not by round trips.
 */
export class BatchPublisher {
  private readonly c: Scripted;
  /** Cluster mode: the last progress write, so the next one follows it (see `publish`). */
  private progressChain: Promise<unknown> = Promise.resolve();

  constructor(
    client: RedisClient,
    private readonly keys: Keys,
    private readonly clusterMode: boolean,
  ) {
    this.c = client as Scripted;
    client.defineCommand('gwPublishBatch', { numberOfKeys: 2, lua: PUBLISH_BATCH });
    client.defineCommand('gwFencedProgress', { numberOfKeys: 2, lua: FENCED_PROGRESS });
    client.defineCommand('gwFenceCheck', { numberOfKeys: 1, lua: FENCE_CHECK });
  }

  /**
   * Applies one batch; `expected` is the progress value the previous batch
   * wrote (or the one read at takeover). Resolves 'applied' or
   * 'already-applied'; rejects with FencedError when the lease is lost.
   */
  async publish(token: string, items: readonly BatchItem[], expected: string, progress: string): Promise<'applied' | 'already-applied'> {
    if (!this.clusterMode) {
      const args: (string | Buffer | number)[] = [token, expected, progress, items.length];
      for (const it of items) args.push(it.command, it.channel, it.payload);
      const r = await this.c.gwPublishBatch(this.keys.leaderLease, this.keys.leaderProgress, ...args);
      if (r === -1) throw new FencedError();
      return r === -2 ? 'already-applied' : 'applied';
    }
    const sent = (async () => {
      if ((await this.c.gwFenceCheck(this.keys.leaderLease, token)) === -1) throw new FencedError();
      await Promise.all(
        items.map((it) => (it.command === 'SPUBLISH' ? this.c.spublish(it.channel, it.payload) : this.c.publish(it.channel, it.payload))),
      );
    })();
    // Batches in flight run concurrently here, but each progress write is a
    // compare-and-set on the previous batch's: one that ran before its
    // predecessor's failed, and so did every later one, freezing the record
    // for the rest of the term (a takeover then broadcast everything since
    // again). Progress writes follow each other in batch order.
    const previous = this.progressChain;
    const written = (async () => {
      await sent;
      await previous;
      return this.c.gwFencedProgress(this.keys.leaderLease, this.keys.leaderProgress, token, expected, progress);
    })();
    this.progressChain = written.catch(() => undefined);
    const r = await written;
    if (r === -1) throw new FencedError();
    return r === -2 ? 'already-applied' : 'applied';
  }

  /** The raw progress value ('' when none) and its parsed form. */
  async readProgress(): Promise<{ raw: string; progress: Progress | null }> {
    const v = (await this.c.get(this.keys.leaderProgress)) ?? '';
    return { raw: v, progress: v ? parseProgress(v) : null };
  }
}

export interface Progress {
  readonly epoch: number;
  readonly digests: readonly string[];
}

export function formatProgress(p: Progress): string {
  return `${p.epoch} ${p.digests.join(',')}`;
}

export function parseProgress(v: string): Progress | null {
  const sp = v.indexOf(' ');
  if (sp === -1) return null;
  const epoch = Number(v.slice(0, sp));
  const digests = v
    .slice(sp + 1)
    .split(',')
    .filter((d) => d !== '');
  return Number.isFinite(epoch) ? { epoch, digests } : null;
}
