import { performance } from 'node:perf_hooks';
import type { RedisClient } from '../redis/connect';
import { GatewayError } from '../shared/errors';
import type { Keys } from '../redis/keys';

// One batch = the broadcasts, their history entries and the leader's
// progress, applied atomically and only while the caller still holds the
// lease (fencing). A crash either before or after the script leaves progress
// and history consistent with what was sent, which is what makes takeover
// replay exactly-once and missed-event replay exact. The progress write is a
// compare-and-set on the previous batch's progress: a batch that already ran
// (ioredis re-sends commands whose reply was lost in a reconnect) is skipped.
//
// KEYS: lease, progress, history stream, history genesis, then the
// idempotency keys of the batch's keyed events (none for events without one).
// ARGV: token, expected previous progress, new progress, history max events,
// history max age (ms; '' = do not trim by age in this batch), n, then n
// items, each its kind then its arguments:
//  - SPUBLISH / PUBLISH, channel, payload: the payload as is;
//  - HISTORY, channel, prefix, namespace, room, args: XADD the event (its id
//    is the offset), then SPUBLISH prefix .. args .. ',"<offset>"]' so the
//    client's last string argument, which socket.io-client keeps as its
//    offset, is that id;
//  - KEY, index in KEYS, window ms: SET NX PX of that idempotency key; when it
//    exists already, the next item is skipped (a duplicate). In the same
//    script as the broadcast, so a key is recorded exactly when its event
//    went out, and a new leader after a failover finds it.
// A stream created here records its first id as genesis: an offset below it
// comes from a stream Redis lost (restart without persistence).
// Returns -1 fenced, -2 already applied, else the count of duplicates skipped.
const HISTORY_LIB = `
local function add(n, r, a, maxlen)
  return redis.call('XADD', KEYS[3], 'MAXLEN', '~', maxlen, '*', 'n', n, 'r', r, 'a', a)
end
local function trim(maxage)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', KEYS[3], 'MINID', '~', tostring(now - tonumber(maxage)))
end`;
/** Arguments of an item after its kind (`PUBLISH_BATCH`). */
const PLAIN_ARGS = 2;
const HISTORY_ARGS = 5;
const KEY_ARGS = 2;
/** The fixed KEYS of the batch scripts; the idempotency keys follow. */
const FIXED_KEYS = 4;
const PUBLISH_BATCH = `${HISTORY_LIB}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return -2 end
local n = tonumber(ARGV[6])
local created = nil
local skip = false
local dupes = 0
local b = 7
for i = 1, n do
  local kind = ARGV[b]
  if kind == 'KEY' then
    skip = not redis.call('SET', KEYS[tonumber(ARGV[b + 1])], '1', 'NX', 'PX', ARGV[b + 2])
    if skip then dupes = dupes + 1 end
    b = b + 1 + ${KEY_ARGS}
  elseif kind == 'HISTORY' then
    if not skip then
      if created == nil then created = redis.call('EXISTS', KEYS[3]) == 0 end
      local id = add(ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[4])
      if created then
        redis.call('SET', KEYS[4], id)
        created = false
      end
      redis.call('SPUBLISH', ARGV[b + 1], ARGV[b + 2] .. ARGV[b + 5] .. ',"' .. id .. '"]')
    end
    skip = false
    b = b + 1 + ${HISTORY_ARGS}
  else
    if not skip then redis.call(kind, ARGV[b + 1], ARGV[b + 2]) end
    skip = false
    b = b + 1 + ${PLAIN_ARGS}
  end
end
if created ~= nil and ARGV[5] ~= '' then trim(ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[3])
return dupes`;
// Redis Cluster: shard channels live in other slots than the lease, so the
// broadcasts cannot share the script. History and progress (one slot) are
// written fenced first and return the offsets; the broadcasts follow.
// ARGV: token, expected, progress, max events, max age, n, then n triples
// (namespace, room, args); a triple ('/KEY', index in KEYS, window ms) is the
// idempotency key of the next one ('/' never starts a namespace), which is
// skipped (id 0) when the key exists. KEYS as PUBLISH_BATCH's. Returns the
// ids of the events (0 for the duplicates), or {-1} fenced, {-2} already applied.
const FENCED_HISTORY = `${HISTORY_LIB}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return {-2} end
local n = tonumber(ARGV[6])
local ids = {}
local first = nil
local skip = false
local created = n > 0 and redis.call('EXISTS', KEYS[3]) == 0
for i = 0, n - 1 do
  local b = 7 + i * 3
  if ARGV[b] == '/KEY' then
    skip = not redis.call('SET', KEYS[tonumber(ARGV[b + 1])], '1', 'NX', 'PX', ARGV[b + 2])
  elseif skip then
    ids[#ids + 1] = 0
    skip = false
  else
    local id = add(ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[4])
    first = first or id
    ids[#ids + 1] = id
  end
end
if created and first then redis.call('SET', KEYS[4], first) end
if first and ARGV[5] ~= '' then trim(ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[3])
return ids`;
const FENCED_PROGRESS = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[2] then return -2 end
redis.call('SET', KEYS[2], ARGV[3])
return 1`;
const FENCE_CHECK = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
return 1`;
// Redis Cluster without history, a batch with keyed events: the fence check,
// then SET NX PX (window ARGV[2]) of each idempotency key KEYS[2..]. Returns
// {-1} fenced, else 1 per key recorded now, 0 per duplicate. The broadcasts
// follow (other slots): a leader dying in between loses those events (a
// retry with the same key is then dropped as a duplicate: at most once).
const FENCED_KEYS = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local r = {}
for i = 2, #KEYS do
  r[#r + 1] = redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[2]) and 1 or 0
end
return r`;

type Arg = string | Buffer | number;
/** The history's age bound is applied at most this often (see `BatchPublisher.ageTrim`). */
const AGE_TRIM_EVERY_MS = 1000;
type Scripted = RedisClient & {
  gwPublishBatch(...args: Arg[]): Promise<number>;
  gwFencedHistory(...args: Arg[]): Promise<(string | number)[]>;
  gwFencedProgress(lease: string, progress: string, token: string, expected: string, value: string): Promise<number>;
  gwFenceCheck(lease: string, token: string): Promise<number>;
  gwFencedKeys(...args: Arg[]): Promise<number[]>;
};

/**
 * One broadcast of a batch. `history` set: the event goes into the history
 * stream and `payload` is the prefix its offset-carrying argument list is
 * appended to (always SPUBLISH); unset: `payload` is published as is.
 */
export interface BatchItem {
  readonly command: 'SPUBLISH' | 'PUBLISH';
  readonly channel: string;
  readonly payload: string | Buffer;
  readonly history?: { readonly namespace: string; readonly room: string; readonly args: string };
  /** The event's idempotency key in Redis (`Keys.idempotency`), only for an event that has one. */
  readonly dedupKey?: string;
}

export interface HistoryLimits {
  readonly maxEvents: number;
  readonly maxAgeMs: number;
}

export interface DedupOptions {
  /** How long an idempotency key is kept (GATEWAY_IDEMPOTENCY_WINDOW_MS). */
  readonly windowMs: number;
  /** Called with the count of events of a batch skipped as duplicates (when there are any). */
  readonly onDuplicates: (n: number) => void;
}

/**
 * What `publish` skipped of one batch as duplicates (idempotency keys), so the
 * caller counts as routed only what was broadcast. `allSites` is the part of
 * `total` sent to the all-sites channel. On a single Redis the script returns
 * only the total: when a batch's keyed events go to both rooms and all sites
 * and only some are duplicates, they are counted against the rooms first.
 */
export interface DuplicateTally {
  total: number;
  allSites: number;
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
  /** Cluster mode: the last fenced write, so the next one follows it (see `publish`). */
  private progressChain: Promise<unknown> = Promise.resolve();
  /** performance.now() of the last batch that trimmed the history by age. */
  private lastAgeTrim = -Infinity;

  constructor(
    client: RedisClient,
    private readonly keys: Keys,
    private readonly clusterMode: boolean,
    private readonly limits: HistoryLimits,
    private readonly dedup: DedupOptions = { windowMs: 300_000, onDuplicates: () => undefined },
  ) {
    this.c = client as Scripted;
    // No numberOfKeys: the first argument is the count (4 plus the batch's idempotency keys).
    client.defineCommand('gwPublishBatch', { lua: PUBLISH_BATCH });
    client.defineCommand('gwFencedHistory', { lua: FENCED_HISTORY });
    client.defineCommand('gwFencedProgress', { numberOfKeys: 2, lua: FENCED_PROGRESS });
    client.defineCommand('gwFenceCheck', { numberOfKeys: 1, lua: FENCE_CHECK });
    client.defineCommand('gwFencedKeys', { lua: FENCED_KEYS });
  }

  /**
   * The age bound as the script's argument, or '' when the history was
   * trimmed by age less than `AGE_TRIM_EVERY` ago: the stream's count bound
   * is applied with every XADD, the age bound (TIME + XTRIM, two of the
   * script's calls) at most this often, i.e. late by at most that much.
   */
  private ageTrim(): number | '' {
    const now = performance.now();
    if (now - this.lastAgeTrim < Math.min(AGE_TRIM_EVERY_MS, this.limits.maxAgeMs / 10)) return '';
    this.lastAgeTrim = now;
    return this.limits.maxAgeMs;
  }

  /** KEYS (their count first) and the fixed ARGV of a batch script; `dedupKeys` are the batch's idempotency keys. */
  private head(token: string, expected: string, progress: string, n: number, dedupKeys: readonly string[]): Arg[] {
    const k = this.keys;
    return [
      FIXED_KEYS + dedupKeys.length,
      k.leaderLease,
      k.leaderProgress,
      k.history,
      k.historyGenesis,
      ...dedupKeys,
      token,
      expected,
      progress,
      this.limits.maxEvents,
      this.ageTrim(),
      n,
    ];
  }

  /** The batch's idempotency keys, in item order (empty for a batch without keyed events: no cost). */
  private static dedupKeys(items: readonly BatchItem[]): string[] {
    const keys: string[] = [];
    for (const it of items) if (it.dedupKey !== undefined) keys.push(it.dedupKey);
    return keys;
  }

  /**
   * Applies one batch; `expected` is the progress value the previous batch
   * wrote (or the one read at takeover). Resolves 'applied' or
   * 'already-applied'; rejects with FencedError when the lease is lost.
   * `tally`, when given, receives what was skipped as duplicates.
   */
  async publish(
    token: string,
    items: readonly BatchItem[],
    expected: string,
    progress: string,
    tally?: DuplicateTally,
  ): Promise<'applied' | 'already-applied'> {
    if (!this.clusterMode) {
      const dedupKeys = BatchPublisher.dedupKeys(items);
      const args = this.head(token, expected, progress, items.length + dedupKeys.length, dedupKeys);
      let k = FIXED_KEYS;
      for (const it of items) {
        if (it.dedupKey !== undefined) args.push('KEY', ++k, this.dedup.windowMs);
        const h = it.history;
        if (h) args.push('HISTORY', it.channel, it.payload, h.namespace, h.room, h.args);
        else args.push(it.command, it.channel, it.payload);
      }
      const r = await this.c.gwPublishBatch(...args);
      if (r === -1) throw new FencedError();
      if (r === -2) return 'already-applied';
      if (r > 0) {
        this.dedup.onDuplicates(r);
        if (tally) this.tallyTotal(tally, items, r);
      }
      return 'applied';
    }
    return items.some((it) => it.history)
      ? this.publishClusterHistory(token, items, expected, progress, tally)
      : this.publishCluster(token, items, expected, progress, tally);
  }

  private isAllSites(it: BatchItem): boolean {
    return it.channel === this.keys.allSitesChannel;
  }

  /** `n` of the batch's keyed events were skipped, which ones unknown (see DuplicateTally). */
  private tallyTotal(tally: DuplicateTally, items: readonly BatchItem[], n: number): void {
    let keyedRooms = 0;
    for (const it of items) if (it.dedupKey !== undefined && !this.isAllSites(it)) keyedRooms++;
    tally.total += n;
    tally.allSites += Math.max(0, n - keyedRooms);
  }

  private tallyItem(tally: DuplicateTally | undefined, it: BatchItem): void {
    if (!tally) return;
    tally.total++;
    if (this.isAllSites(it)) tally.allSites++;
  }

  private async publishCluster(
    token: string,
    items: readonly BatchItem[],
    expected: string,
    progress: string,
    tally: DuplicateTally | undefined,
  ): Promise<'applied' | 'already-applied'> {
    const dedupKeys = BatchPublisher.dedupKeys(items);
    const sent = (async () => {
      if (dedupKeys.length === 0) {
        if ((await this.c.gwFenceCheck(this.keys.leaderLease, token)) === -1) throw new FencedError();
        await Promise.all(items.map((it) => this.send(it.command, it.channel, it.payload)));
        return;
      }
      const fresh = await this.c.gwFencedKeys(1 + dedupKeys.length, this.keys.leaderLease, ...dedupKeys, token, this.dedup.windowMs);
      if (fresh[0] === -1) throw new FencedError();
      let k = 0;
      const out = items.filter((it) => {
        if (it.dedupKey === undefined || fresh[k++] === 1) return true;
        this.tallyItem(tally, it);
        return false;
      });
      if (out.length < items.length) this.dedup.onDuplicates(items.length - out.length);
      await Promise.all(out.map((it) => this.send(it.command, it.channel, it.payload)));
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

  /**
   * Redis Cluster with history: the offsets exist only once the history is
   * written, so history and progress go first (fenced, in batch order) and the
   * broadcasts follow. A leader that dies in between leaves events in history
   * that were not broadcast; its successor re-sends the history tail
   * (`republishTail`) and workers drop what they already delivered by offset.
   */
  private async publishClusterHistory(
    token: string,
    items: readonly BatchItem[],
    expected: string,
    progress: string,
    tally: DuplicateTally | undefined,
  ): Promise<'applied' | 'already-applied'> {
    const hist = items.filter((it) => it.history);
    const dedupKeys = BatchPublisher.dedupKeys(hist);
    const args = this.head(token, expected, progress, hist.length + dedupKeys.length, dedupKeys);
    let k = FIXED_KEYS;
    for (const it of hist) {
      if (it.dedupKey !== undefined) args.push('/KEY', ++k, this.dedup.windowMs);
      if (it.history) args.push(it.history.namespace, it.history.room, it.history.args);
    }
    const previous = this.progressChain;
    const written = (async () => {
      await previous;
      return this.c.gwFencedHistory(...args);
    })();
    this.progressChain = written.catch(() => undefined);
    const ids = await written;
    if (ids[0] === -1) throw new FencedError();
    if (ids[0] === -2) return 'already-applied';
    let i = 0;
    let dupes = 0;
    await Promise.all(
      items.map((it) => {
        if (!it.history) return this.send(it.command, it.channel, it.payload);
        const id = ids[i++];
        if (id === 0) {
          dupes++;
          this.tallyItem(tally, it);
          return undefined;
        }
        return this.send('SPUBLISH', it.channel, `${String(it.payload)}${it.history.args},"${String(id)}"]`);
      }),
    );
    if (dupes > 0) this.dedup.onDuplicates(dupes);
    return 'applied';
  }

  /**
   * Redis Cluster with history, at takeover: re-broadcasts the history
   * entries of the last `windowMs` (at most `max`), with their own offsets,
   * so a batch the predecessor recorded but did not broadcast reaches the
   * workers; they drop what they already delivered by offset. Resolves the
   * count re-sent.
   */
  async republishTail(
    windowMs: number,
    max: number,
    route: (namespace: string, room: string, args: string, id: string) => { channel: string; payload: string },
  ): Promise<number> {
    const tail = (await this.c.xrevrange(this.keys.history, '+', '-', 'COUNT', max)) as [string, string[]][];
    const since = Date.now() - windowMs;
    const recent = tail.filter(([id]) => Number(id.slice(0, id.indexOf('-'))) >= since).reverse();
    for (const [id, f] of recent) {
      const field = (k: string): string => {
        for (let i = 0; i + 1 < f.length; i += 2) if (f[i] === k) return f[i + 1] ?? '';
        return '';
      };
      if (field('a') === '') continue;
      const { channel, payload } = route(field('n'), field('r'), field('a'), id);
      await this.c.spublish(channel, payload);
    }
    return recent.length;
  }

  /** The newest `count` history entries, oldest first, as [namespace, room, args] (the fields the batch script wrote). */
  async historyTail(count: number): Promise<[string, string, string][]> {
    const tail = (await this.c.xrevrange(this.keys.history, '+', '-', 'COUNT', count)) as [string, string[]][];
    const out: [string, string, string][] = [];
    for (let i = tail.length - 1; i >= 0; i--) {
      const f = (tail[i] as [string, string[]])[1];
      const field = (k: string): string => {
        for (let j = 0; j + 1 < f.length; j += 2) if (f[j] === k) return f[j + 1] ?? '';
        return '';
      };
      out.push([field('n'), field('r'), field('a')]);
    }
    return out;
  }

  private send(command: 'SPUBLISH' | 'PUBLISH', channel: string, payload: string | Buffer): Promise<unknown> {
    return command === 'SPUBLISH' ? this.c.spublish(channel, payload) : this.c.publish(channel, payload);
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
