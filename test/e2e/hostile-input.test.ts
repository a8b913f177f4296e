/**
 * Hostile input on the events channel (docs/protocol.md section 2): 10,000 junk
 * messages (malformed JSON, oversized, wrong field types, valid-looking events
 * for namespaces and rooms nobody is in) against a 2-worker cluster host.
 * Afterwards a valid event is still delivered, every drop is counted by
 * reason, the processes' memory is back to where it was, and Redis holds no
 * state for the junk namespaces.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test, type TestContext } from 'node:test';
import type { Redis } from 'ioredis';
import {
  connectClient,
  EventRecorder,
  pollUntil,
  publishRedis,
  startFakeFrappe,
  startGateway,
  startRedis,
  sumMetric,
  waitConnect,
  withScope,
  type GatewayHandle,
  type Scope,
} from '../harness';
import { collectEverywhere, rssMb, startInspectedGateway, type MemoryMb } from './hardening-support';
import { JUNK, makeJunk, MAX_MESSAGE_BYTES, SITE, type Junk, type Reason } from './junk-support';

const WARMUP_ROUNDS = 4;
/** RSS may differ by this much per process after the second round (allocator and GC noise). */
const RSS_TOLERANCE_KB = 6 * 1024;

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m?.[1]) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

async function gatewayPids(gw: GatewayHandle): Promise<number[]> {
  const info = (await gw.cluster()) as { workers: { pid: number }[] };
  return [gw.pid, ...info.workers.map((w) => w.pid)];
}

async function counters(gw: GatewayHandle): Promise<{ received: number; dropped: Record<string, number>; routed: number }> {
  const text = await gw.metrics();
  const dropped: Record<string, number> = {};
  for (const reason of ['malformed_json', 'oversized', 'not_object', 'bad_event', 'bad_room', 'bad_namespace', 'no_namespace']) {
    dropped[reason] = sumMetric(text, 'gateway_events_dropped_total', { reason }) ?? 0;
  }
  return {
    received: sumMetric(text, 'gateway_events_received_total', { source: 'redis' }) ?? 0,
    dropped,
    routed: sumMetric(text, 'gateway_events_routed_total') ?? 0,
  };
}

async function redisState(
  admin: Redis,
  prefix: string,
): Promise<{ keys: string[]; shardChannels: number; channels: number; patterns: number }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await admin.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const shardChannels = ((await admin.call('PUBSUB', 'SHARDCHANNELS')) as string[]).length;
  const channels = ((await admin.call('PUBSUB', 'CHANNELS')) as string[]).length;
  const patterns = Number(await admin.call('PUBSUB', 'NUMPAT'));
  return { keys: keys.filter((k) => k.includes(prefix)).sort(), shardChannels, channels, patterns };
}

test('hostile input: 10,000 junk messages on the events channel are dropped or routed to nobody; then delivery works, drops are counted by reason, memory and Redis state return to where they were', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const frappe = await startFakeFrappe({ scope });
  frappe.addSession('sid-watcher', { user: 'watcher@example.com', user_type: 'System User' });
  const gw = await startGateway({
    scope,
    redisUrl: redis.url,
    workers: 2,
    backendUrl: frappe.url,
    defaultSite: SITE,
    env: {
      GATEWAY_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
      // The standby replay buffer is bounded by design (count and age); keep
      // it small here so what remains after the round is lasting state only.
      GATEWAY_STANDBY_BUFFER_EVENTS: '100',
      // One line per drop reason for the whole test.
      GATEWAY_DROP_LOG_INTERVAL_MS: '600000',
    },
  });
  await pollUntil(
    async () => {
      const info = (await gw.cluster()) as { workers: { nodeId: string | null }[]; leader: unknown };
      return info.workers.length === 2 && info.workers.every((w) => w.nodeId !== null) && info.leader ? true : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50, description: '2 workers and a leader' },
  );
  try {
    await junkRounds(t, gw, redis.client(), redis.client(), scope);
  } catch (err) {
    // What the gateway said is the first thing to look at.
    t.diagnostic(`gateway exit: ${String(gw.proc.exitCode ?? gw.proc.signalCode)}; last log lines:\n${gw.logs.slice(-40).join('\n')}`);
    throw err;
  }
});

async function junkRounds(t: TestContext, gw: GatewayHandle, pub: Redis, admin: Redis, scope: Scope): Promise<void> {
  const socket = connectClient(gw.url, SITE, { scope, cookie: 'sid-watcher' });
  const rec = new EventRecorder(socket);
  await waitConnect(socket, 10_000);
  const room = 'user:watcher@example.com';
  const channel = `${gw.keyPrefix}:sio#/${SITE}#${room}#`;
  await pollUntil(
    async () => (Number(((await admin.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number])[1]) >= 1 ? true : undefined),
    {
      timeoutMs: 10_000,
      intervalMs: 25,
      description: 'the watcher room subscription',
    },
  );

  /** Publishes a round of junk, then a valid event; resolves once all of it is consumed and the event delivered. */
  const round = async (
    n: number,
  ): Promise<{ junk: Junk; before: Awaited<ReturnType<typeof counters>>; after: Awaited<ReturnType<typeof counters>> }> => {
    const junk = makeJunk(SITE, n);
    const before = await counters(gw);
    const pipe = pub.pipeline();
    for (const p of junk.payloads) pipe.publish('events', p);
    const results = await pipe.exec();
    assert.ok(results?.every(([err]) => err === null));
    const after = await pollUntil(
      async () => {
        const c = await counters(gw);
        return c.received >= before.received + JUNK ? c : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 100, description: `round ${n}: ${JUNK} junk messages consumed` },
    );
    await publishRedis(pub, 'events', { event: 'still_alive', message: { round: n }, namespace: SITE, room });
    assert.deepEqual(await rec.waitFor('still_alive', (p) => (p as { round?: number }).round === n, 10_000), { round: n });
    return { junk, before, after };
  };

  // Warm-up: the same workload, until heaps and allocator pools reach their
  // working size (V8 grows the primary's heap over the first few rounds,
  // then it stays flat: measured over 12 rounds).
  for (let n = 1; n <= WARMUP_ROUNDS; n++) await round(n);
  const pids = await gatewayPids(gw);
  const rssBefore = pids.map(rssKb);
  const stateBefore = await redisState(admin, gw.keyPrefix);

  const { junk, before, after } = await round(WARMUP_ROUNDS + 1);
  assert.equal(after.received - before.received, JUNK, 'every junk message was consumed exactly once');
  for (const reason of Object.keys(after.dropped)) {
    assert.equal(
      (after.dropped[reason] ?? 0) - (before.dropped[reason] ?? 0),
      junk.expected[reason as Reason],
      `drops counted as ${reason}`,
    );
  }
  assert.equal(after.routed - before.routed, junk.expected.routed, 'valid-looking junk is routed (to nobody)');

  const rssAfter = pids.map(rssKb);
  const stateAfter = await redisState(admin, gw.keyPrefix);
  t.diagnostic(`RSS kB before/after (primary, workers): ${pids.map((p, i) => `${p}: ${rssBefore[i]} -> ${rssAfter[i]}`).join(', ')}`);
  pids.forEach((pid, i) => {
    const delta = (rssAfter[i] ?? 0) - (rssBefore[i] ?? 0);
    assert.ok(delta <= RSS_TOLERANCE_KB, `pid ${pid} (${i === 0 ? 'primary' : 'worker'}) grew by ${delta} kB`);
  });

  // No lasting Redis state for the junk: same keys under the prefix (the
  // auth cache entry may expire meanwhile), same subscriptions, and no key
  // or namespace mentions a junk site.
  const transient = (k: string): boolean => k.includes(':auth:');
  assert.deepEqual(
    stateAfter.keys.filter((k) => !transient(k)),
    stateBefore.keys.filter((k) => !transient(k)),
  );
  assert.equal(stateAfter.shardChannels, stateBefore.shardChannels, 'PUBSUB SHARDCHANNELS');
  assert.equal(stateAfter.channels, stateBefore.channels, 'PUBSUB CHANNELS');
  assert.equal(stateAfter.patterns, stateBefore.patterns, 'PUBSUB NUMPAT');
  const junkKeys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await admin.scan(cursor, 'MATCH', '*junk-r*', 'COUNT', 1000);
    cursor = next;
    junkKeys.push(...batch);
  } while (cursor !== '0');
  assert.deepEqual(junkKeys, []);
  const cluster = (await gw.cluster()) as { nodes: { namespaces?: Record<string, number> }[] };
  const namespaces = cluster.nodes.flatMap((n) => Object.keys(n.namespaces ?? {}));
  assert.deepEqual(
    namespaces.filter((n) => junk.namespaces.has(n) || n.startsWith('junk-')),
    [],
  );

  assert.equal((await gw.readyz()).status, 200);
  assert.equal(rec.count('still_alive'), WARMUP_ROUNDS + 1);
  assert.deepEqual(
    // rtg_session: the gateway's own session-recovery offset, sent once per connection.
    rec.events.filter((e) => e.event !== 'still_alive' && e.event !== 'rtg_session').map((e) => e.event),
    [],
    'the watcher received none of the junk',
  );
  assert.ok(socket.connected);
}

test('hostile input: reserved event names (with and without a room) and 10,000-level nesting are dropped and counted; no worker respawns, no client drops, the next valid event is delivered', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const frappe = await startFakeFrappe({ scope });
  const gw = await startGateway({ scope, redisUrl: redis.url, workers: 2, backendUrl: frappe.url, defaultSite: SITE });
  const info = await pollUntil(
    async () => {
      const c = (await gw.cluster()) as { workers: { pid: number; nodeId: string | null }[]; leader: unknown };
      return c.workers.length === 2 && c.workers.every((w) => w.nodeId !== null) && c.leader ? c : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50, description: '2 workers and a leader' },
  );
  const pidsBefore = info.workers.map((w) => w.pid).sort();
  // Four clients: the least-connection balancer spreads them over both workers.
  const clients = await Promise.all(
    [0, 1, 2, 3].map(async (i) => {
      const user = `hostile-${i}@example.com`;
      frappe.addSession(`sid-hostile-${i}`, { user, user_type: 'System User' });
      const socket = connectClient(gw.url, SITE, { scope, cookie: `sid-hostile-${i}` });
      const rec = new EventRecorder(socket);
      let disconnects = 0;
      socket.on('disconnect', () => disconnects++);
      await waitConnect(socket, 10_000);
      return { socket, rec, room: `user:${user}`, disconnects: () => disconnects };
    }),
  );
  const ids = clients.map((c) => c.socket.id);
  const pub = redis.client();
  const reserved = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];
  const dropped = async (reason: string): Promise<number> => sumMetric(await gw.metrics(), 'gateway_events_dropped_total', { reason }) ?? 0;
  assert.equal(await dropped('reserved_event'), 0);
  assert.equal(await dropped('too_deep'), 0);

  for (const event of reserved) {
    await publishRedis(pub, 'events', { event, message: { x: 1 } });
    for (const c of clients) await publishRedis(pub, 'events', { event, message: { x: 1 }, namespace: SITE, room: c.room });
  }
  const deep = `{"event":"list_update","namespace":"${SITE}","room":"${clients[0]?.room ?? ''}","message":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
  assert.ok(Buffer.byteLength(deep) > 20_000);
  await pub.publish('events', deep);
  await pub.publish('events', `{"event":"build_event","message":${'['.repeat(10_000)}${']'.repeat(10_000)}}`);

  await pollUntil(async () => ((await dropped('too_deep')) >= 2 ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 50,
    description: 'the deep events dropped',
  });
  assert.equal(await dropped('reserved_event'), reserved.length * (1 + clients.length));
  assert.equal(await dropped('too_deep'), 2);

  // The next valid events, room-less and to each room, reach every client on its first connection.
  await publishRedis(pub, 'events', { event: 'broadcast_ok', message: { n: 1 } });
  for (const c of clients)
    await publishRedis(pub, 'events', { event: 'still_alive', message: { room: c.room }, namespace: SITE, room: c.room });
  for (const c of clients) {
    assert.deepEqual(await c.rec.waitFor('still_alive', undefined, 10_000), { room: c.room });
    assert.deepEqual(await c.rec.waitFor('broadcast_ok', undefined, 10_000), { n: 1 });
  }
  assert.deepEqual(
    clients.map((c) => c.socket.id),
    ids,
  );
  assert.deepEqual(
    clients.map((c) => c.disconnects()),
    [0, 0, 0, 0],
  );
  assert.deepEqual(
    clients.flatMap((c) => c.rec.events.map((e) => e.event)).filter((e) => !['still_alive', 'broadcast_ok', 'rtg_session'].includes(e)),
    [],
  );
  const after = (await gw.cluster()) as { workers: { pid: number }[] };
  assert.deepEqual(after.workers.map((w) => w.pid).sort(), pidsBefore, 'no worker respawned');
  assert.equal((await gw.readyz()).status, 200);
});

const FLOOD_ROUNDS = 10;
/** The issue's bound: what 100,000 junk messages may leave held in a process (live memory after a GC). */
const FLOOD_HELD_MB = 30;
/** GATEWAY_STANDBY_BUFFER_BYTES' default. */
const STANDBY_BYTES_DEFAULT = 16 * 1024 * 1024;
/** Standby buffer age bound for the flood test, so "comes back" is observed within the test's time. */
const FLOOD_STANDBY_MS = 10_000;
/** Live memory of a process: JS heap plus Buffers. */
const live = (m: MemoryMb | undefined): number => (m ? m.heapUsed + m.external : NaN);

test('hostile input: 100,000 junk messages (random namespaces and rooms among them): the standby buffer stays within its byte bound, valid events keep flowing, and live memory comes back once the buffer aged out', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const frappe = await startFakeFrappe({ scope });
  frappe.addSession('sid-watcher', { user: 'watcher@example.com', user_type: 'System User' });
  const { gw } = await startInspectedGateway({
    scope,
    redisUrl: redis.url,
    workers: 2,
    backendUrl: frappe.url,
    defaultSite: SITE,
    // Default count and byte bounds of the standby buffer; a shorter age bound (default 30 s) so it empties within the test.
    env: {
      GATEWAY_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
      GATEWAY_DROP_LOG_INTERVAL_MS: '600000',
      GATEWAY_STANDBY_BUFFER_MS: String(FLOOD_STANDBY_MS),
    },
  });
  await pollUntil(
    async () => {
      const info = (await gw.cluster()) as { workers: { nodeId: string | null }[]; leader: unknown };
      return info.workers.length === 2 && info.workers.every((w) => w.nodeId !== null) && info.leader ? true : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50, description: '2 workers and a leader' },
  );
  const pub = redis.client();
  const socket = connectClient(gw.url, SITE, { scope, cookie: 'sid-watcher' });
  const rec = new EventRecorder(socket);
  await waitConnect(socket, 10_000);
  const room = 'user:watcher@example.com';
  const flood = async (first: number, rounds: number): Promise<void> => {
    const before = (await counters(gw)).received;
    const pipe = pub.pipeline();
    for (let r = first; r < first + rounds; r++) for (const p of makeJunk(SITE, r).payloads) pipe.publish('events', p);
    await pipe.exec();
    let lost: number | undefined;
    await pollUntil(
      async () => {
        lost = await gw.metricValue('gateway_events_subscription_lost_total');
        // Received, and broadcast by the leader (what it has not broadcast yet it must keep).
        if ((await counters(gw)).received < before + rounds * JUNK) return undefined;
        return (await gw.metricValue('gateway_consumer_lag_events')) === 0 ? true : undefined;
      },
      {
        timeoutMs: 60_000,
        intervalMs: 100,
        description: () => `${rounds * JUNK} junk messages consumed and broadcast (subscription losses so far: ${lost})`,
      },
    );
  };
  // Warm-up at the small size, so pools and code caches exist before the baseline.
  await flood(1000, 1);
  const pids = await gatewayPids(gw);
  const baseMem = await collectEverywhere(gw);
  const baseline = pids.map(rssMb);
  const peak = [...baseline];
  const sampler = setInterval(() => pids.forEach((p, i) => (peak[i] = Math.max(peak[i] ?? 0, rssMb(p)))), 50);
  const started = Date.now();
  try {
    // 10,000 at a time: one 100,000-message pipeline exceeds Redis's default
    // pubsub output buffer limit (32 MB) for any subscriber and Redis cuts
    // the events subscription (counted; see hardening-subscription.test.ts).
    for (let r = 0; r < FLOOD_ROUNDS; r++) await flood(2000 + r, 1);
  } finally {
    clearInterval(sampler);
  }
  const floodMs = Date.now() - started;
  const atEnd = pids.map(rssMb);
  // The leader holds what it has not broadcast yet (its cursor): measure once it caught up.
  await pollUntil(async () => ((await gw.metricValue('gateway_consumer_lag_events')) === 0 ? true : undefined), {
    timeoutMs: 20_000,
    intervalMs: 100,
    description: 'the leader to catch up with the flood',
  });
  const atEndMem = await collectEverywhere(gw);
  const atEndGc = pids.map(rssMb);
  t.diagnostic(
    `after the flood (forced GC), MB heap / external: ${atEndMem.map((m) => `${m.heapUsed.toFixed(1)} / ${m.external.toFixed(1)}`).join(', ')}`,
  );
  await publishRedis(pub, 'events', { event: 'still_alive', message: { flood: true }, namespace: SITE, room });
  assert.deepEqual(await rec.waitFor('still_alive', undefined, 10_000), { flood: true });

  t.diagnostic(
    `${FLOOD_ROUNDS * JUNK} junk messages in ${floodMs} ms; RSS MB baseline / peak / at the end / after GC (primary, workers): ${pids
      .map((_, i) => `${baseline[i]?.toFixed(1)} / ${peak[i]?.toFixed(1)} / ${atEnd[i]?.toFixed(1)} / ${atEndGc[i]?.toFixed(1)}`)
      .join(
        ', ',
      )}; standby buffer ${((await gw.metricValue('gateway_standby_buffer_bytes')) ?? 0) / 1e6} MB in ${await gw.metricValue('gateway_standby_buffer_events')} events`,
  );
  // What the flood leaves held right after it, live after a GC (JS heap plus
  // Buffers), within the issue's 30 MB: a standby's buffer holds up to its
  // byte bound (16 MiB by default, the memory it actually holds; measured
  // 14.3 MB over 3 runs, 1-host, load 13-17); this host's primary leads and
  // keeps only what it has not broadcast (0.7-0.9 MB in the junk-memory
  // bench), and nothing else stays. The GC
  // runs from the process' event loop (see hardening-support), so the
  // figure does not depend on what the flood was doing at the time. RSS is
  // reported, not asserted: it is the allocator's (BENCHMARKS.md "Memory
  // under junk and Redis restarts": the V8 young generation grows to 32 MB
  // under the flood and is given back slowly).
  atEndMem.forEach((m, i) => {
    const pid = m.pid;
    const growth = live(m) - live(baseMem.find((b) => b.pid === pid));
    t.diagnostic(`pid ${pid} (${i === 0 ? 'primary' : 'worker'}) holds ${growth.toFixed(1)} MB more right after the flood`);
    assert.ok(growth <= FLOOD_HELD_MB, `pid ${pid} holds ${growth.toFixed(1)} MB more right after the flood (bound ${FLOOD_HELD_MB} MB)`);
  });
  const bufferBytes = (await gw.metricValue('gateway_standby_buffer_bytes')) ?? 0;
  assert.ok(bufferBytes <= STANDBY_BYTES_DEFAULT, `standby buffer ${bufferBytes} B within its bound ${STANDBY_BYTES_DEFAULT} B`);
  // Back once the standby buffer has aged out (GATEWAY_STANDBY_BUFFER_MS),
  // even with no further event: live memory to within the tolerance.
  let afterMem = atEndMem;
  await pollUntil(
    async () => {
      afterMem = await collectEverywhere(gw);
      return afterMem.every((m, i) => live(m) <= live(baseMem[i]) + RSS_TOLERANCE_KB / 1024) ? true : undefined;
    },
    {
      timeoutMs: FLOOD_STANDBY_MS + 10_000,
      intervalMs: 500,
      description: () =>
        `live memory back within ${RSS_TOLERANCE_KB / 1024} MB: ${afterMem.map((m, i) => `${live(baseMem[i]).toFixed(1)} -> ${live(m).toFixed(1)}`).join(', ')}`,
    },
  );
  const after = pids.map(rssMb);
  t.diagnostic(
    `after the standby buffer aged out (forced GC): RSS ${after.map((m) => m.toFixed(1)).join(', ')} MB; live ${afterMem.map((m) => live(m).toFixed(1)).join(', ')} MB (baseline ${baseMem.map((m) => live(m).toFixed(1)).join(', ')})`,
  );
  assert.ok(socket.connected);
  assert.equal((await gw.metricValue('gateway_events_subscription_lost_total')) ?? 0, 0, 'no events subscription lost');
});
