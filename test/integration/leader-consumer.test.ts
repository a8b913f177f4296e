/**
 * The events consumer core against a real redis-server: the fenced,
 * compare-and-set batch publish, and exactly-once hand-over between two
 * consumers that both subscribe to the channel (in-process, so the test can
 * observe every broadcast on the shard channels directly).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Redis } from 'ioredis';
import { Registry } from 'prom-client';
import pino from 'pino';
import { loadConfig, type GatewayConfig } from '../../src/config';
import { Intake } from '../../src/events/intake';
import { LeaderConsumer } from '../../src/leader/leader-consumer';
import { BatchPublisher, FencedError } from '../../src/leader/publisher';
import { Lease } from '../../src/leader/lease';
import { createMetrics } from '../../src/metrics/metrics';
import { createKeys } from '../../src/redis/keys';
import { createRedisClient } from '../../src/redis/connect';
import { RateLimitedLog } from '../../src/shared/logger';
import { pollUntil, startRedis, uniqueKeyPrefix, withScope, type Scope } from '../harness';

/** Waits for an observable condition (state of other connections; there is no event to await). */
function until(cond: () => boolean, description: string, timeoutMs = 5000): Promise<true> {
  return pollUntil(() => (cond() ? true : undefined), { timeoutMs, intervalMs: 10, description });
}

const log = pino({ level: 'silent' });

function config(redisUrl: string, prefix: string): GatewayConfig {
  const r = loadConfig({
    GATEWAY_REDIS_URL: redisUrl,
    GATEWAY_KEY_PREFIX: prefix,
    GATEWAY_LEADER_LEASE_MS: '900',
    GATEWAY_LEADER_RENEW_MS: '150',
  });
  assert.ok(r.ok);
  return r.config;
}

function consumer(scope: Scope, cfg: GatewayConfig, name: string) {
  const redisCfg = cfg.redis;
  assert.ok(redisCfg);
  const sub = createRedisClient(redisCfg, { name: `${name}:sub` }, log);
  const cmd = createRedisClient(redisCfg, { name: `${name}:cmd` }, log);
  scope.add(() => sub.disconnect());
  scope.add(() => cmd.disconnect());
  const metrics = createMetrics(new Registry(), { defaults: false });
  const intake = new Intake(metrics, new RateLimitedLog(log, 1000), cfg.maxMessageBytes);
  const c = new LeaderConsumer({ config: cfg, keys: createKeys(cfg.keyPrefix), sub, cmd, nodeId: name, intake, metrics, log });
  scope.add(() => c.stop());
  return { c, sub, cmd, metrics };
}

/** Counts every broadcast the leader makes on the room shard channels, by sequence number. */
async function watchRoom(scope: Scope, redis: Redis, channel: string): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  scope.add(() => redis.disconnect());
  redis.on('smessage', (_ch: string, msg: string) => {
    // Pre-encoded Socket.IO packet: "!2/<site>,[event, message]".
    const seq = (JSON.parse(msg.slice(msg.indexOf(',') + 1)) as [string, { seq: number }])[1].seq;
    seen.set(seq, (seen.get(seq) ?? 0) + 1);
  });
  await redis.ssubscribe(channel);
  return seen;
}

const event = (seq: number) => JSON.stringify({ event: 'tick', message: { seq }, namespace: 'site1.local', room: 'user:a' });

test('a batch re-sent after a lost reply is applied once; a wrong token is fenced', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const keys = createKeys(uniqueKeyPrefix());
  const client = redis.client();
  const lease = new Lease(client, keys, 'node-a', 5000);
  const held = await lease.tryAcquire();
  assert.ok(held, 'acquired a free lease');
  assert.equal(await lease.tryAcquire(), null, 'the lease is exclusive');
  const publisher = new BatchPublisher(client, keys, false, { maxEvents: 1000, maxAgeMs: 60_000 });
  const channel = `${keys.adapterPrefix}#/s#r#`;
  const watcher = redis.client();
  const got: string[] = [];
  watcher.on('smessage', (_c: string, m: string) => got.push(m));
  await watcher.ssubscribe(channel);

  const items = [{ command: 'SPUBLISH' as const, channel, payload: 'one' }];
  assert.equal(await publisher.publish(held.token, items, '', '1 d1'), 'applied');
  assert.equal(await publisher.publish(held.token, items, '', '1 d1'), 'already-applied', 'same expected progress: skipped');
  await assert.rejects(publisher.publish(`${held.token}x`, items, '1 d1', '1 d2'), FencedError);
  // A later batch proves ordering: everything before it has been delivered.
  assert.equal(await publisher.publish(held.token, [{ command: 'SPUBLISH', channel, payload: 'two' }], '1 d1', '1 d2'), 'applied');
  await until(() => got.includes('two'), 'second batch delivered', 5000);
  assert.deepEqual(got, ['one', 'two']);
  assert.deepEqual((await publisher.readProgress()).raw, '1 d2');

  await lease.release(held);
  const next = await lease.tryAcquire();
  assert.ok(next && next.epoch === held.epoch + 1, 'every acquisition increments the fencing epoch');
  await assert.rejects(publisher.publish(held.token, items, '1 d2', '1 d3'), FencedError, 'the old epoch is fenced');
});

test('a history batch appends each offset to its live packet and records it once, in the same script', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const keys = createKeys(uniqueKeyPrefix());
  const client = redis.client();
  const held = await new Lease(client, keys, 'node-a', 5000).tryAcquire();
  assert.ok(held);
  const publisher = new BatchPublisher(client, keys, false, { maxEvents: 1000, maxAgeMs: 60_000 });
  const channel = `${keys.adapterPrefix}#/s#r#`;
  const watcher = redis.client();
  const got: string[] = [];
  watcher.on('smessage', (_c: string, m: string) => got.push(m));
  await watcher.ssubscribe(channel);
  const item = (n: number) => ({
    command: 'SPUBLISH' as const,
    channel,
    payload: '!2/s,',
    history: { namespace: 's', room: 'r', args: `["ev",{"n":${n}}` },
  });
  assert.equal(await publisher.publish(held.token, [item(1), item(2)], '', '1 a'), 'applied');
  assert.equal(await publisher.publish(held.token, [item(1), item(2)], '', '1 a'), 'already-applied');
  await until(() => got.length >= 2, 'both broadcasts delivered');
  const entries = (await client.xrange(keys.history, '-', '+')) as [string, string[]][];
  assert.equal(entries.length, 2, 'the re-sent batch added nothing');
  assert.deepEqual(
    got,
    entries.map(([id], i) => `!2/s,["ev",{"n":${i + 1}},"${id}"]`),
  );
  assert.deepEqual(entries[0]?.[1], ['n', 's', 'r', 'r', 'a', '["ev",{"n":1}']);
  assert.equal(await client.get(keys.historyGenesis), entries[0]?.[0], 'the stream records where it started');
});

test('graceful hand-over between two consumers broadcasts every event exactly once', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const cfg = config(redis.url, uniqueKeyPrefix());
  const keys = createKeys(cfg.keyPrefix);
  const seen = await watchRoom(scope, redis.client(), `${keys.adapterPrefix}#/site1.local#user:a#`);
  const a = consumer(scope, cfg, 'node-a');
  await a.c.start();
  await until(() => a.c.isLeader, 'a leads', 5000);
  const b = consumer(scope, cfg, 'node-b');
  await b.c.start();

  const publisher = redis.client();
  const total = 3000;
  let handedOver = false;
  for (let seq = 0; seq < total; seq++) {
    await publisher.publish('events', event(seq));
    if (seq === 1000) {
      // Stop A mid-stream; B must continue exactly where A stopped.
      void a.c.stop().then(() => {
        handedOver = true;
      });
    }
  }
  await until(() => handedOver && b.c.isLeader && seen.size === total, `all ${total} events broadcast (have ${seen.size})`, 10000);
  const dup = [...seen.entries()].filter(([, n]) => n !== 1);
  assert.deepEqual(dup, [], 'no event broadcast twice');
  for (let seq = 0; seq < total; seq++) assert.equal(seen.get(seq), 1, `event ${seq} broadcast once`);
  assert.equal(b.c.state().leader, true);
  assert.equal(a.c.state().leader, false);
});

test('a consumer whose lease was taken over is fenced and steps down without broadcasting', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const cfg = config(redis.url, uniqueKeyPrefix());
  const keys = createKeys(cfg.keyPrefix);
  const seen = await watchRoom(scope, redis.client(), `${keys.adapterPrefix}#/site1.local#user:a#`);
  const a = consumer(scope, cfg, 'node-a');
  await a.c.start();
  await until(() => a.c.isLeader, 'a leads', 5000);
  // Someone else takes the lease behind A's back (as after a pause past its lease).
  const admin = redis.client();
  await admin.set(keys.leaderLease, 'intruder|999');
  await admin.publish('events', event(1));
  await until(() => !a.c.isLeader, 'a stepped down', 5000);
  assert.equal(seen.size, 0, 'nothing was broadcast under a foreign lease');
  // It learns either from the failed renewal or from the fenced batch, whichever comes first; either way once.
  const toStandby = (await a.metrics.leaderTransitions.get()).values.find((v) => v.labels.to === 'standby');
  assert.equal(toStandby?.value, 1, 'stepped down exactly once');
  // When the intruder's lease goes away, A takes over again and replays the event it held back.
  await admin.del(keys.leaderLease);
  await until(() => seen.get(1) === 1, 'held-back event broadcast after re-election', 5000);
});
