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
import { createMetrics, type Metrics } from '../../src/metrics/metrics';
import { createKeys } from '../../src/redis/keys';
import { createRedisClient, type RedisClient } from '../../src/redis/connect';
import { RateLimitedLog } from '../../src/shared/logger';
import { pollUntil, startRedis, uniqueKeyPrefix, withScope, type Scope } from '../harness';
import { promoteGarbage } from '../harness/promote';
import { startTcpProxy } from '../harness/tcp-proxy';

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

/**
 * `cmdCfg`: the command connection's own configuration (e.g. through a proxy); the subscriber uses `cfg`.
 * `faults`: what the consumer gets as its command connection instead of the connection itself.
 */
function consumer(scope: Scope, cfg: GatewayConfig, name: string, cmdCfg: GatewayConfig = cfg, faults?: (cmd: RedisClient) => RedisClient) {
  const redisCfg = cfg.redis;
  assert.ok(redisCfg && cmdCfg.redis);
  const sub = createRedisClient(redisCfg, { name: `${name}:sub` }, log);
  const conn = createRedisClient(cmdCfg.redis, { name: `${name}:cmd` }, log);
  const cmd = faults ? faults(conn) : conn;
  scope.add(() => sub.disconnect());
  scope.add(() => conn.disconnect());
  const metrics = createMetrics(new Registry(), { defaults: false });
  const intake = new Intake(metrics, new RateLimitedLog(log, 1000), cfg.maxMessageBytes);
  const c = new LeaderConsumer({ config: cfg, keys: createKeys(cfg.keyPrefix), sub, cmd, nodeId: name, intake, metrics, log });
  scope.add(() => c.stop());
  return { c, sub, cmd, metrics };
}

/** Counts every broadcast the leader makes on the room shard channels, by sequence number (and appends each to `order`). */
async function watchRoom(scope: Scope, redis: Redis, channel: string, order: number[] = []): Promise<Map<number, number>> {
  const seen = new Map<number, number>();
  scope.add(() => redis.disconnect());
  redis.on('smessage', (_ch: string, msg: string) => {
    // Pre-encoded Socket.IO packet: "!2/<site>,[event, message]".
    const seq = (JSON.parse(msg.slice(msg.indexOf(',') + 1)) as [string, { seq: number }])[1].seq;
    seen.set(seq, (seen.get(seq) ?? 0) + 1);
    order.push(seq);
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

for (const windowMs of [0, 2])
  test(`graceful hand-over between two consumers broadcasts every event exactly once (coalescing window ${windowMs} ms)`, async (t) => {
    const scope = withScope(t);
    const redis = await startRedis({ scope });
    const cfg = { ...config(redis.url, uniqueKeyPrefix()), leaderCoalesceMs: windowMs };
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

/** A redis-server, consumer A leading, and what is broadcast to user:a (by sequence number). */
async function leaderSetup(t: Parameters<typeof withScope>[0]) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const cfg = config(redis.url, uniqueKeyPrefix());
  const keys = createKeys(cfg.keyPrefix);
  const seen = await watchRoom(scope, redis.client(), `${keys.adapterPrefix}#/site1.local#user:a#`);
  const a = consumer(scope, cfg, 'node-a');
  await a.c.start();
  await until(() => a.c.isLeader, 'a leads', 5000);
  return { scope, redis, cfg, keys, seen, a };
}

test('a consumer whose lease was taken over is fenced and steps down without broadcasting', async (t) => {
  const { redis, keys, seen, a } = await leaderSetup(t);
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

/** gateway_leader_batch_events: batches sent and the events they carried. */
async function batches(metrics: Metrics): Promise<{ count: number; events: number }> {
  const values = (await metrics.leaderBatchEvents.get()).values;
  const of = (name: string): number => values.find((v) => v.metricName === `gateway_leader_batch_events_${name}`)?.value ?? 0;
  return { count: of('count'), events: of('sum') };
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/** A leader with its coalescing window set to `windowMs`, and what it broadcasts to user:a, in arrival order. */
async function coalescingLeader(t: Parameters<typeof withScope>[0], windowMs: number) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const cfg = { ...config(redis.url, uniqueKeyPrefix()), leaderCoalesceMs: windowMs };
  const order: number[] = [];
  await watchRoom(scope, redis.client(), `${createKeys(cfg.keyPrefix).adapterPrefix}#/site1.local#user:a#`, order);
  const a = consumer(scope, cfg, 'node-a');
  await a.c.start();
  await until(() => a.c.isLeader, 'a leads', 5000);
  return { a, order, publisher: redis.client() };
}

test('events published one by one within the coalescing window go out in one batch, in order', async (t) => {
  const { a, order, publisher } = await coalescingLeader(t, 3000);
  await publisher.publish('events', event(0));
  await until(() => a.c.state().lag === 1, 'the first event received and held');
  // Each its own publish, i.e. its own message on the subscriber connection.
  for (let seq = 1; seq < 10; seq++) await publisher.publish('events', event(seq));
  assert.deepEqual(order, [], 'nothing broadcast while the window is open');
  // Published and answered, so at the leader's socket by now, but not taken in until the window ends.
  await new Promise((r) => setImmediate(r));
  assert.equal(a.c.state().lag, 1, 'events published during the window reach the consumer only when it ends');
  await until(() => order.length === 10, 'all ten broadcast');
  assert.deepEqual(order, range(0, 10));
  assert.deepEqual(await batches(a.metrics), { count: 1, events: 10 }, 'one fenced batch carried all ten');
});

test('a lone event goes out when the window ends; a burst after it keeps its order over several batches', async (t) => {
  const { a, order, publisher } = await coalescingLeader(t, 300);
  await publisher.publish('events', event(0));
  await until(() => order.length === 1, 'the lone event broadcast without any later event');
  assert.deepEqual(await batches(a.metrics), { count: 1, events: 1 });
  const held = (await a.metrics.publishToEmit.get()).values.find(
    (v) => v.metricName === 'gateway_consume_to_publish_seconds_bucket' && v.labels.le === 0.25,
  );
  assert.equal(held?.value, 0, 'it was held for the window (over 250 ms of 300), not sent at once');
  const burst = range(1, 1201);
  const pipeline = publisher.pipeline();
  for (const seq of burst) pipeline.publish('events', event(seq));
  await pipeline.exec();
  await until(() => order.length === 1201, 'the burst broadcast');
  assert.deepEqual(order, [0, ...burst]);
  const after = await batches(a.metrics);
  assert.equal(after.events, 1201);
  assert.ok(after.count >= 4, `at most 512 events per batch (${after.count} batches)`);
});

test('stopping during an open window broadcasts the held events and releases the lease', async (t) => {
  const { a, order, publisher } = await coalescingLeader(t, 50_000);
  for (let seq = 0; seq < 3; seq++) await publisher.publish('events', event(seq));
  await until(() => a.c.state().lag >= 1, 'held');
  await a.c.stop();
  await until(() => order.length === 3, 'held events broadcast by the graceful stop');
  assert.deepEqual(order, [0, 1, 2]);
  assert.equal(a.c.state().leader, false);
});

/** A leader A, a watcher of its room broadcasts and a publisher of numbered events (`publish(n)`: the next n). */
async function crashSetup(t: Parameters<typeof withScope>[0]) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const cfg = config(redis.url, uniqueKeyPrefix());
  const seen = await watchRoom(scope, redis.client(), `${createKeys(cfg.keyPrefix).adapterPrefix}#/site1.local#user:a#`);
  const publisher = redis.client();
  let next = 0;
  const publish = async (n: number): Promise<void> => {
    for (const end = next + n; next < end; next++) await publisher.publish('events', event(next));
  };
  const a = consumer(scope, cfg, 'node-a');
  await a.c.start();
  await until(() => a.c.isLeader, 'a leads', 5000);
  return { scope, redis, cfg, seen, a, publish, published: () => next };
}

/** SIGKILL of a consumer's process: its connections close, nothing is released. */
function crash(x: ReturnType<typeof consumer>): void {
  x.cmd.disconnect();
  x.sub.disconnect();
}

test('a SIGKILLed leader is replaced by the standby that holds its progress, not by a process started after it died', async (t) => {
  // Issue 9: host A (leader) is SIGKILLed and restarted at once; its new
  // process C subscribes after A's last broadcast, while B, subscribed all
  // along, is busy (here: its command connection stalls) and C wins the lease.
  // C's buffer lacks what was published between A's death and its own
  // subscription: it must leave the lease to B rather than broadcast from its
  // buffer's start and silently drop those events.
  const { scope, redis, cfg, seen, a, publish, published } = await crashSetup(t);
  const proxy = await startTcpProxy({ targetPort: redis.port, scope });
  const viaProxy = config(proxy.url, cfg.keyPrefix);
  const b = consumer(scope, cfg, 'node-b', viaProxy);
  await b.c.start();
  await publish(500);
  await until(() => seen.size === 500, `A broadcast the first 500 (have ${seen.size})`);

  proxy.blackhole();
  crash(a);
  await publish(300);
  const c = consumer(scope, cfg, 'node-c');
  await c.c.start();
  await publish(400);
  await until(() => c.c.state().leader, 'the late process acquired the lease', 5000);
  proxy.heal();
  await publish(300);
  const total = published();
  await until(() => seen.has(total - 1) && (b.c.isLeader || c.c.isLeader), 'a leader broadcast the last event', 10000);
  const leader = b.c.isLeader ? b : c;
  await until(() => leader.c.state().lag === 0, 'the leader caught up', 5000);
  const missing = [...Array(total).keys()].filter((s) => !seen.has(s));
  assert.deepEqual(missing, [], 'no event lost across the hand-over');
  const dup = [...seen.entries()].filter(([, n]) => n !== 1);
  assert.deepEqual(dup, [], 'no event broadcast twice');
  assert.equal(b.c.isLeader, true, 'the standby that held the progress leads');
  assert.equal((await c.metrics.leaderDeferred.get()).values[0]?.value, 1, 'the late process deferred once');
  assert.equal((await b.metrics.replayUnaligned.get()).values[0]?.value ?? 0, 0, 'B found the progress');
});

test('a late process alone defers once, then leads unaligned and tells the pages they may have missed updates', async (t) => {
  const { scope, redis, cfg, seen, a, publish } = await crashSetup(t);
  const notices: string[] = [];
  const allSites = redis.client();
  scope.add(() => allSites.disconnect());
  allSites.on('smessage', (_ch: string, msg: string) => notices.push(msg));
  await allSites.ssubscribe(createKeys(cfg.keyPrefix).allSitesChannel);
  await publish(100);
  await until(() => seen.size === 100, 'A broadcast the first 100');
  crash(a);
  // Published while no process holds them: lost for good.
  await publish(50);
  const c = consumer(scope, cfg, 'node-c');
  await c.c.start();
  await publish(50);
  await until(() => c.c.isLeader && seen.has(199), 'the late process leads after its deferral', 10000);
  assert.equal((await c.metrics.leaderDeferred.get()).values[0]?.value, 1, 'deferred once, then led');
  assert.equal((await c.metrics.replayUnaligned.get()).values[0]?.value, 1, 'the unaligned take-over is counted');
  for (let seq = 150; seq < 200; seq++) assert.equal(seen.get(seq), 1, `event ${seq} (in its buffer) broadcast once`);
  await until(() => notices.length > 0, 'the notice reached the all-sites channel');
  assert.equal(notices.length, 1, 'one notice');
  const args = JSON.parse(notices[0]?.slice(notices[0].indexOf('[')) ?? '') as unknown[];
  assert.equal(args[0], 'rtg_missed_updates', 'the documented event (recovery/replay.ts MISSED_EVENT)');
  assert.deepEqual(args[1], { reason: 'leader_gap' });
});

/**
 * The command connection with some of its commands answered by the test instead of Redis
 * (`override(target, ...args)`: call `target` to pass one through); every other command passes.
 */
type Overrides = Record<string, (target: RedisClient, ...args: string[]) => Promise<unknown>>;
function overriding(overrides: Overrides) {
  return (cmd: RedisClient): RedisClient =>
    new Proxy(cmd, {
      get(target, prop) {
        const o = typeof prop === 'string' ? overrides[prop] : undefined;
        if (o) return (...args: string[]) => o(target, ...args);
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
}

/** `target[name](...args)`: a command (e.g. a script defined with defineCommand) passed through to the connection. */
function passThrough(target: RedisClient, name: string, args: unknown[]): Promise<unknown> {
  const commands = target as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  return commands[name]?.(...args) ?? Promise.reject(new Error(`no command ${name}`));
}

/** gateway_leader_takeovers_failed_total by reason. */
async function takeoverFailures(metrics: Metrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const v of (await metrics.leaderTakeoverFailed.get()).values) out[String(v.labels.reason)] = v.value;
  return out;
}

for (const fault of ['hangs', 'fails'] as const)
  test(`a take-over whose progress read ${fault} releases the lease to a standby that leads, counted`, async (t) => {
    // B wins the lease after A's crash but cannot read A's progress: it must not keep
    // renewing the lease without leading (nothing would be broadcast). C, subscribed all
    // along, takes over instead and broadcasts exactly what A did not.
    const { scope, cfg, seen, a, publish, published } = await crashSetup(t);
    const keys = createKeys(cfg.keyPrefix);
    let reads = 0;
    const b = consumer(
      scope,
      cfg,
      'node-b',
      cfg,
      overriding({
        get: (target, key) => {
          if (key !== keys.leaderProgress) return target.get(key ?? '');
          reads++;
          return fault === 'hangs' ? new Promise<never>(() => undefined) : Promise.reject(new Error('injected: progress read refused'));
        },
      }),
    );
    // C competes for the lease only once B has taken it (no lease for C until then).
    const c = consumer(
      scope,
      cfg,
      'node-c',
      cfg,
      overriding({ gwAcquire: (target, ...args) => (reads > 0 ? passThrough(target, 'gwAcquire', args) : Promise.resolve(null)) }),
    );
    await b.c.start();
    await c.c.start();
    await publish(200);
    await until(() => seen.size === 200, `A broadcast the first 200 (have ${seen.size})`);
    crash(a);
    await publish(100);
    await until(() => reads > 0, 'B acquired the lease and read the progress', 5000);
    await publish(100);
    const total = published();
    await until(() => c.c.isLeader && seen.size === total, `C leads and broadcast everything (have ${seen.size} of ${total})`, 10_000);
    assert.equal(b.c.state().leader, false, 'B holds no lease');
    const failures = await takeoverFailures(b.metrics);
    if (fault === 'hangs') assert.deepEqual(failures, { progress_unreadable: 0, timeout: 1, error: 0 }, 'one timed-out take-over');
    else
      assert.ok(
        (failures['progress_unreadable'] ?? 0) >= 1 && failures['timeout'] === 0,
        `unreadable progress counted (${JSON.stringify(failures)})`,
      );
    const dup = [...seen.entries()].filter(([, n]) => n !== 1);
    assert.deepEqual(dup, [], 'no event broadcast twice');
    assert.equal((await c.metrics.replayUnaligned.get()).values[0]?.value ?? 0, 0, "C found A's progress");
  });

test('an unaligned take-over after a lost subscription broadcasts again nothing the history already holds', async (t) => {
  // B's subscription is cut while A broadcasts 100 events and crashes: A's progress lies in
  // B's gap, so B cannot align. B's buffer still holds the 200 events from before the gap,
  // broadcast by A: replaying the buffer from its start would send them again, with new
  // offsets that the workers cannot recognise.
  const { scope, redis, cfg, seen, a, publish, published } = await crashSetup(t);
  const proxy = await startTcpProxy({ targetPort: redis.port, scope });
  // B's subscriber goes through the proxy, its command connection does not.
  const b = consumer(scope, config(proxy.url, cfg.keyPrefix), 'node-b', cfg);
  await b.c.start();
  await publish(200);
  await until(() => seen.size === 200 && b.c.state().buffered === 200, `A broadcast 200, B holds them (${b.c.state().buffered})`);
  proxy.blackhole();
  await publish(100);
  await until(() => seen.size === 300, 'A broadcast the next 100 (B did not receive them)');
  crash(a);
  proxy.reset();
  proxy.heal();
  const admin = redis.client();
  scope.add(() => admin.disconnect());
  // ioredis re-subscribes on its own and announces nothing: poll the channel's subscriber count.
  await pollUntil(async () => (Number(((await admin.pubsub('NUMSUB', 'events')) as [string, number])[1]) === 1 ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 10,
    description: 'B subscribed again',
  });
  await publish(100);
  const total = published();
  await until(() => b.c.isLeader && seen.has(total - 1), 'B leads (unaligned, after its deferral)', 10_000);
  await until(() => b.c.state().lag === 0, 'B caught up');
  const dup = [...seen.entries()].filter(([, n]) => n !== 1);
  assert.deepEqual(dup, [], 'nothing broadcast twice');
  for (let seq = 300; seq < total; seq++) assert.equal(seen.get(seq), 1, `event ${seq} (after the gap) broadcast once`);
  assert.equal((await b.metrics.replayUnaligned.get()).values[0]?.value, 1, 'the take-over was unaligned');
  assert.equal((await b.metrics.replaySkipped.get()).values[0]?.value, 200, 'the 200 the history held were skipped');
});

/** Bounded poll: the leader trims its buffer on its next event or renewal tick, which announces nothing. */
const buffered = (c: LeaderConsumer): number => c.state().buffered;

test('a leader keeps only what is not confirmed and its last batch digests; its standby keeps everything; the hand-over is exact', async (t) => {
  const { scope, redis, cfg, seen, a } = await leaderSetup(t);
  const b = consumer(scope, cfg, 'node-b');
  await b.c.start();
  const publisher = redis.client();
  const first = 2000;
  const pipe = publisher.pipeline();
  for (let seq = 0; seq < first; seq++) pipe.publish('events', event(seq));
  await pipe.exec();
  await until(() => seen.size === first, `all ${first} broadcast (have ${seen.size})`, 10000);
  // What A broadcast for certain is not kept, but for the digests of its last progress record (8).
  await until(() => buffered(a.c) === 8, `A holds its last 8 events (holds ${buffered(a.c)})`, 5000);
  assert.equal(buffered(b.c), first, 'the standby holds every event');
  // Hand-over: B aligns on A's record and broadcasts from there.
  await a.c.stop();
  for (let seq = first; seq < first + 500; seq++) await publisher.publish('events', event(seq));
  await until(() => b.c.isLeader && seen.size === first + 500, `all ${first + 500} broadcast (have ${seen.size})`, 10000);
  const dup = [...seen.entries()].filter(([, n]) => n !== 1);
  assert.deepEqual(dup, [], 'no event broadcast twice');
  assert.equal((await b.metrics.replayUnaligned.get()).values[0]?.value ?? 0, 0, 'B found the progress');
});

test('a leader that stepped down re-aligns on its own record from what it kept, and broadcasts each event once', async (t) => {
  const { redis, keys, seen, a } = await leaderSetup(t);
  const publisher = redis.client();
  for (let seq = 0; seq < 300; seq++) await publisher.publish('events', event(seq));
  await until(() => seen.size === 300, 'the first 300 broadcast');
  await until(() => buffered(a.c) === 8, `A holds its last 8 events (holds ${buffered(a.c)})`, 5000);
  // The lease taken behind A's back: A steps down; what is published meanwhile waits in its buffer.
  const admin = redis.client();
  await admin.set(keys.leaderLease, 'intruder|999');
  await until(() => !a.c.isLeader, 'a stepped down', 5000);
  for (let seq = 300; seq < 400; seq++) await publisher.publish('events', event(seq));
  await admin.del(keys.leaderLease);
  await until(() => a.c.isLeader && seen.size === 400, `all 400 broadcast (have ${seen.size})`, 10000);
  const dup = [...seen.entries()].filter(([, n]) => n !== 1);
  assert.deepEqual(dup, [], 'no event broadcast twice');
  assert.equal((await a.metrics.replayUnaligned.get()).values[0]?.value ?? 0, 0, 'aligned on its own record');
});

/*
 * promoteGarbage(75_000): ~6 MB in the old space, under V8's own limit for
 * its next full GC (16 MB were collected by V8 before the batch ran), over
 * the 4 MiB bound.
 */
for (const bound of [4 * 1024 * 1024, 0])
  test(`garbage bound: the leader collects old-space growth past GATEWAY_LEADER_GARBAGE_BYTES at its next batch (${bound === 0 ? 'off' : '4 MiB'})`, async (t) => {
    const scope = withScope(t);
    const redis = await startRedis({ scope });
    const cfg = { ...config(redis.url, uniqueKeyPrefix()), leaderGarbageBytes: bound };
    const keys = createKeys(cfg.keyPrefix);
    const seen = await watchRoom(scope, redis.client(), `${keys.adapterPrefix}#/site1.local#user:a#`);
    const a = consumer(scope, cfg, 'node-a');
    await a.c.start();
    await until(() => a.c.isLeader, 'a leads', 5000);
    const collections = async (): Promise<number> =>
      (await a.metrics.leaderGarbageCollections.get()).values.find(
        (v) => v.metricName === 'gateway_leader_garbage_collection_seconds_count',
      )?.value ?? 0;
    assert.equal(await collections(), 0, 'nothing to collect before');
    assert.equal(promoteGarbage(75_000), 75_000);
    const publisher = redis.client();
    await publisher.publish('events', event(1));
    await until(() => seen.get(1) === 1, 'the event broadcast', 5000);
    assert.equal(await collections(), bound === 0 ? 0 : 1, 'one collection with the bound, none without');
  });
