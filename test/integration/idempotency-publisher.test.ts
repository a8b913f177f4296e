/**
 * Idempotency keys in the leader's fenced broadcast scripts (src/leader/publisher.ts),
 * against real redis-servers: an event whose key was recorded within the
 * window is skipped, within a batch, across batches and across a change of
 * leader (the key lives in Redis); events without a key are untouched. Single
 * Redis (one script) and Redis Cluster (history first, or fence-and-keys first).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Cluster, Redis } from 'ioredis';
import { Lease } from '../../src/leader/lease';
import { BatchPublisher, type BatchItem } from '../../src/leader/publisher';
import { createKeys, type Keys } from '../../src/redis/keys';
import { pollUntil, startRedis, startRedisCluster, uniqueKeyPrefix, withScope } from '../harness';

const WINDOW_MS = 60_000;

/** Collects what arrives on `channel` (a shard channel). */
async function watch(sub: Redis | Cluster, channel: string): Promise<string[]> {
  const got: string[] = [];
  sub.on('smessage', (ch: string, m: string) => {
    if (ch === channel) got.push(m);
  });
  await sub.ssubscribe(channel);
  return got;
}

function plain(keys: Keys, channel: string, payload: string, key?: string): BatchItem {
  return { command: 'SPUBLISH', channel, payload, ...(key === undefined ? {} : { dedupKey: keys.idempotency('s', key) }) };
}

function hist(keys: Keys, channel: string, n: string, key?: string): BatchItem {
  return {
    command: 'SPUBLISH',
    channel,
    payload: '!2/s,',
    history: { namespace: 's', room: 'r', args: `["ev","${n}"` },
    ...(key === undefined ? {} : { dedupKey: keys.idempotency('s', key) }),
  };
}

/** The order-preserving end marker: everything published before it has arrived once it has. */
async function until(got: string[], last: string): Promise<void> {
  await pollUntil(() => (got.some((m) => m.includes(last)) ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 10,
    description: `${last} to arrive (received: ${got.join(' | ')})`,
  });
}

/** A publisher on `client` with the test's window; `dupes()` is what it reported as duplicates so far. */
async function setUp(client: Redis | Cluster, sub: Redis | Cluster, clusterMode: boolean) {
  const keys = createKeys(uniqueKeyPrefix());
  let dupes = 0;
  const publisher = new BatchPublisher(
    client,
    keys,
    clusterMode,
    { maxEvents: 1000, maxAgeMs: 60_000 },
    {
      windowMs: WINDOW_MS,
      onDuplicates: (n) => (dupes += n),
    },
  );
  const channel = `${keys.adapterPrefix}#/s#r#`;
  const got = await watch(sub, channel);
  return { keys, publisher, channel, got, dupes: () => dupes };
}

test('single Redis: a keyed event is broadcast once per window, within a batch, across batches and after a change of leader', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();
  const { keys, publisher, channel, got, dupes } = await setUp(client, redis.client(), false);

  const a = await new Lease(client, keys, 'node-a', 5000).tryAcquire();
  assert.ok(a);
  const first = [plain(keys, channel, 'one', 'k1'), plain(keys, channel, 'one-again', 'k1'), plain(keys, channel, 'free')];
  assert.equal(await publisher.publish(a.token, first, '', '1 a'), 'applied');
  assert.equal(dupes(), 1, 'the same key twice in one batch: the second is skipped');
  const ttl = await client.pttl(keys.idempotency('s', 'k1'));
  assert.ok(ttl > WINDOW_MS - 5000 && ttl <= WINDOW_MS, `the key is kept for the window (PTTL ${ttl})`);
  // A re-sent batch (lost reply) stops at the progress check: nothing counted twice.
  assert.equal(await publisher.publish(a.token, [plain(keys, channel, 'one', 'k1')], '', '1 a'), 'already-applied');
  assert.equal(dupes(), 1);

  // Another process takes over: the keys recorded by its predecessor hold.
  await new Lease(client, keys, 'node-a', 5000).release(a);
  const b = await new Lease(client, keys, 'node-b', 5000).tryAcquire();
  assert.ok(b);
  const items = [
    plain(keys, channel, 'one-retry', 'k1'),
    hist(keys, channel, 'h1', 'k2'),
    hist(keys, channel, 'h1-again', 'k2'),
    plain(keys, channel, 'free'),
  ];
  const tally = { total: 0, allSites: 0 };
  assert.equal(await publisher.publish(b.token, items, '1 a', '2 b', tally), 'applied');
  assert.equal(dupes(), 3);
  assert.deepEqual(tally, { total: 2, allSites: 0 }, 'both skipped events were for a room');
  await until(got, 'h1');
  assert.equal(await publisher.publish(b.token, [plain(keys, channel, 'end')], '2 b', '2 c'), 'applied');
  await until(got, 'end');
  const entries = (await client.xrange(keys.history, '-', '+')) as [string, string[]][];
  assert.equal(entries.length, 1, 'a duplicate adds nothing to the history');
  assert.deepEqual(got, ['one', 'free', `!2/s,["ev","h1","${entries[0]?.[0]}"]`, 'free', 'end']);
  assert.equal(await client.get(keys.historyGenesis), entries[0]?.[0]);
});

test('Redis Cluster: keys are checked with the fence (no history) or with the history write, in the lease slot', async (t) => {
  const scope = withScope(t);
  const cluster = await startRedisCluster({ scope });
  const client = cluster.client();
  const { keys, publisher, channel, got, dupes } = await setUp(client, cluster.client({ shardedSubscribers: true }), true);
  const held = await new Lease(client, keys, 'node-a', 5000).tryAcquire();
  assert.ok(held);

  const first = [
    plain(keys, channel, 'p1', 'k1'),
    plain(keys, channel, 'p1-again', 'k1'),
    plain(keys, channel, 'free'),
    plain(keys, keys.allSitesChannel, 'all', 'k3'),
    plain(keys, keys.allSitesChannel, 'all-again', 'k3'),
  ];
  // The caller's tally says which targets the skipped ones had (gateway_events_routed_total counts the rest).
  const tally = { total: 0, allSites: 0 };
  assert.equal(await publisher.publish(held.token, first, '', '1 a', tally), 'applied');
  assert.deepEqual(tally, { total: 2, allSites: 1 });
  const retryTally = { total: 0, allSites: 0 };
  assert.equal(await publisher.publish(held.token, [plain(keys, channel, 'p1-retry', 'k1')], '1 a', '1 b', retryTally), 'applied');
  assert.deepEqual(retryTally, { total: 1, allSites: 0 });
  assert.equal(dupes(), 3);
  const histTally = { total: 0, allSites: 0 };
  assert.equal(
    await publisher.publish(
      held.token,
      [hist(keys, channel, 'h1', 'k2'), hist(keys, channel, 'h1-again', 'k2'), hist(keys, channel, 'h2')],
      '1 b',
      '1 c',
    ),
    'applied',
  );
  assert.equal(
    await publisher.publish(held.token, [hist(keys, channel, 'h1-retry', 'k2'), hist(keys, channel, 'end')], '1 c', '1 d', histTally),
    'applied',
  );
  assert.deepEqual(histTally, { total: 1, allSites: 0 });
  assert.equal(dupes(), 5);
  await until(got, 'end');
  const ids = ((await client.xrange(keys.history, '-', '+')) as [string, string[]][]).map(([id]) => id);
  assert.equal(ids.length, 3, 'h1, h2, end: duplicates add nothing to the history');
  assert.deepEqual(got, ['p1', 'free', `!2/s,["ev","h1","${ids[0]}"]`, `!2/s,["ev","h2","${ids[1]}"]`, `!2/s,["ev","end","${ids[2]}"]`]);
  assert.equal(await client.get(keys.historyGenesis), ids[0], 'genesis is the first event written, not a skipped one');
});
