/**
 * One of a host's two workers frozen (SIGSTOP) while its process stays
 * alive: longer than the Engine.IO ping timeout (its clients give up on it
 * and reconnect), shorter (an event-loop stall: clients stay), and longer
 * than GATEWAY_WORKER_KILL_MS (the primary kills and replaces it).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withTimeout, withScope, type GatewayHandle, type RedisServer, type Scope } from '../harness';
import {
  assertExactlyOnce,
  clusterInfo,
  connectTracked,
  defaultSpecs,
  DOCTYPE,
  logDiagnostic,
  roomMembersPerWorker,
  newKeyPrefix,
  processAlive,
  SEQ_EVENT,
  SeqPublisher,
  SITE,
  startBackend,
  startHost,
  summarise,
  waitDelivered,
  waitSpread,
  warmUp,
  websiteBarrier,
  workerIndexOf,
  type TrackedClient,
} from './cluster-support';

const PRESENCE_DOC = 'PRESENCE-1';
/** The opening counter's field in a presence hash (src/presence/redis-presence.ts). */
const SEQ_FIELD = '__seq';

/** Clients that reconnect on their own (like the browser's), each with a recoverable session, every one viewing PRESENCE_DOC. */
async function connectRecovering(scope: Scope, host: GatewayHandle): Promise<TrackedClient[]> {
  const clients = await connectTracked(scope, host, defaultSpecs(), {
    client: { reconnection: true, ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 300 } },
    waitSession: true,
  });
  for (const c of clients) assert.equal(await c.socket.timeout(5000).emitWithAck('doc_open', DOCTYPE, PRESENCE_DOC), true);
  return clients;
}

/** Presence entries (one per viewing socket, with the worker that wrote it) of PRESENCE_DOC in Redis. */
async function presenceSockets(redis: { client(): { hkeys(key: string): Promise<string[]> } }, prefix: string): Promise<string[]> {
  // Every field but the hash's opening counter is a socket id.
  return (await redis.client().hkeys(`${prefix}:presence:${SITE}:${DOCTYPE}/${PRESENCE_DOC}`)).filter((f) => f !== SEQ_FIELD).sort();
}

/** Publishes 200 more events, stops the publisher and waits until every client has everything: the last sequence number. */
async function settle(
  publisher: SeqPublisher,
  pub: Parameters<typeof websiteBarrier>[0],
  clients: readonly TrackedClient[],
): Promise<number> {
  await waitDelivered(clients, publisher.published + 200, 15_000);
  const last = await publisher.stop();
  await waitDelivered(clients, last, 15_000);
  await websiteBarrier(pub, clients);
  return last;
}

/**
 * Presence of PRESENCE_DOC once it settled: exactly one entry per connected
 * socket, or (after 10 s) what is there instead.
 */
async function settledPresence(
  redis: Parameters<typeof presenceSockets>[0],
  prefix: string,
  clients: readonly TrackedClient[],
): Promise<{ expected: string[]; now: string[] }> {
  const expected = clients.map((c) => c.socket.id ?? '').sort();
  let now: string[] = [];
  await pollUntil(
    async () => {
      now = await presenceSockets(redis, prefix);
      return JSON.stringify(now) === JSON.stringify(expected) ? true : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: () => `presence of ${PRESENCE_DOC} = the connected sockets ${expected.join(',')}` },
  ).catch(() => undefined);
  return { expected, now };
}

/** Resolves for each client with Date.now() of its next connect after a disconnect. */
function reconnects(clients: readonly TrackedClient[]): Promise<number>[] {
  return clients.map((c) => new Promise<number>((r) => c.socket.once('disconnect', () => c.socket.once('connect', () => r(Date.now())))));
}

/** GET /metrics, timed. */
async function timedMetrics(host: GatewayHandle): Promise<{ ms: number; missing: number | undefined; text: string }> {
  const t0 = Date.now();
  const text = await host.metrics();
  const m = /^gateway_metrics_workers_missing (\S+)$/m.exec(text);
  return { ms: Date.now() - t0, missing: m ? Number(m[1]) : undefined, text };
}

/**
 * One host with two workers, recovering clients on both (all viewing
 * PRESENCE_DOC), warmed up; worker 0 is the victim. The sequenced publisher
 * is started once `beforePublishing` ran, and every client has had 5 events.
 */
async function stopScenario(
  t: Parameters<typeof withScope>[0],
  env: Record<string, string>,
  beforePublishing: (s: {
    host: GatewayHandle;
    redis: RedisServer;
    keyPrefix: string;
    clients: TrackedClient[];
  }) => Promise<void> = async () => undefined,
) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const host = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env });
  const clients = await connectRecovering(scope, host);
  await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);
  const info = await clusterInfo(host);
  const index = await workerIndexOf(host, clients);
  const victimPid = info.workers[0]?.pid;
  const survivorPid = info.workers[1]?.pid;
  assert.ok(victimPid !== undefined && survivorPid !== undefined);
  const onVictim = clients.filter((c) => index.get(c) === 0);
  const others = clients.filter((c) => index.get(c) === 1);
  assert.ok(onVictim.length > 0 && others.length > 0, 'clients on both workers');
  await beforePublishing({ host, redis, keyPrefix, clients });
  const publisher = scope.add(new SeqPublisher(pub, 200));
  publisher.start();
  await Promise.all(clients.filter((c) => c.rooms.size > 0).map((c) => c.recorder.waitForCount(SEQ_EVENT, 5, undefined, 10_000)));
  return { scope, redis, keyPrefix, host, clients, pub, victimPid, survivorPid, onVictim, others, publisher };
}

/** A worker's metrics scrape answer wait (REPLY_TIMEOUT_MS in src/cluster/supervisor.ts) plus slack on a shared machine. */
const METRICS_BOUND_MS = 2000 + 1500;

test('SIGSTOP of one worker past the ping timeout: its clients reconnect to the other worker and recover every missed event; /metrics answers in time and names the missing worker; after SIGCONT nothing is delivered twice and presence is exact', async (t) => {
  // Clients give up on a silent worker 2-4 s after it stopped: later than the
  // primary marks it unresponsive (WORKER_UNRESPONSIVE_MS, 1.5 s, checked every 0.5 s).
  // Never killed here (0): this test is about the worker that resumes.
  let presenceBefore: string[] = [];
  const { scope, redis, keyPrefix, host, clients, pub, victimPid, onVictim, others, publisher } = await stopScenario(
    t,
    { GATEWAY_PING_INTERVAL_MS: '2000', GATEWAY_PING_TIMEOUT_MS: '2000', GATEWAY_WORKER_KILL_MS: '0' },
    async (s) => {
      presenceBefore = await presenceSockets(s.redis, s.keyPrefix);
      assert.equal(presenceBefore.length, s.clients.length);
    },
  );

  const reconnected = reconnects(onVictim);
  const stopAt = Date.now();
  process.kill(victimPid, 'SIGSTOP');
  let continued = false;
  scope.add(() => {
    if (!continued) process.kill(victimPid, 'SIGCONT');
  });

  // While it is stopped: /metrics answers within its bound and reports the worker missing; /readyz stays 200 (the other worker serves).
  const scrape = await withTimeout(timedMetrics(host), 10_000, '/metrics while a worker is stopped');
  t.diagnostic(`scrape while stopped: ${scrape.ms} ms, missing ${String(scrape.missing)}`);
  const readyWhileStopped = await withTimeout(host.readyz(), 10_000, '/readyz while a worker is stopped');
  // Its clients notice (no ping), reconnect, and are routed to the live worker.
  const backAt = await withTimeout(
    Promise.all(reconnected),
    30_000,
    () =>
      `clients of the stopped worker to reconnect: ${onVictim.map((c) => `${c.spec.user} connected=${String(c.socket.connected)} disconnects=${c.disconnects.join('/')}`).join('; ')}`,
  );
  const recoveredMs = Math.max(...backAt) - stopAt;
  // Only the live worker answers the rooms API now: the moved clients must be among its members.
  const answering = await roomMembersPerWorker(host, 'website');
  const onLiveWorker = onVictim.map((c) => answering.length === 1 && (answering[0] ?? []).some((m) => m.id === c.socket.id));
  const scrapeAfterMove = await timedMetrics(host);
  const idsBefore = presenceBefore;
  const presenceWhileStopped = await redis.client().hgetall(`${keyPrefix}:presence:${SITE}:${DOCTYPE}/${PRESENCE_DOC}`);
  const seqWhileStopped = publisher.published;
  await waitDelivered(
    clients.filter((c) => c.rooms.size > 0),
    seqWhileStopped,
    15_000,
  );

  process.kill(victimPid, 'SIGCONT');
  continued = true;
  const contAt = Date.now();
  // The resumed worker answers scrapes again.
  const resumed = await pollUntil(
    async () => {
      const s = await timedMetrics(host);
      return s.missing === 0 ? s : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: 'the resumed worker to answer the metrics scrape' },
  );
  const last = await settle(publisher, pub, clients);
  // Presence: once the resumed worker noticed its clients are gone, exactly one entry per connected socket.
  const presence = await settledPresence(redis, keyPrefix, clients);
  const recoveries = await host.metricValue('gateway_session_recoveries_total', { result: 'restored' });
  logDiagnostic(t, 'worker SIGSTOP', {
    victimPid,
    onVictim: onVictim.length,
    recoveredMs,
    stoppedForMs: contAt - stopAt,
    scrapeWhileStopped: { ms: scrape.ms, missing: scrape.missing },
    scrapeAfterMove: { ms: scrapeAfterMove.ms, missing: scrapeAfterMove.missing },
    scrapeAfterCont: { ms: resumed.ms, missing: resumed.missing },
    readyWhileStopped: readyWhileStopped.status,
    onLiveWorker,
    idsBefore,
    presenceWhileStopped,
    recovered: onVictim.map((c) => c.socket.recovered),
    disconnects: onVictim.map((c) => c.disconnects),
    recoveries,
    deliveries: summarise(clients, 1, last),
    presence,
  });

  assert.ok(scrape.ms <= METRICS_BOUND_MS, `/metrics answered in ${scrape.ms} ms while a worker was stopped (bound ${METRICS_BOUND_MS})`);
  assert.equal(scrape.missing, 1, 'gateway_metrics_workers_missing names the stopped worker');
  assert.equal(readyWhileStopped.status, 200, 'the host stays ready: its other worker serves');
  for (const c of onVictim) {
    assert.equal(c.socket.connected, true, `${c.spec.user} reconnected`);
    assert.equal(c.socket.recovered, true, `${c.spec.user} recovered its session`);
    assert.equal(onLiveWorker[onVictim.indexOf(c)], true, `${c.spec.user} landed on the live worker, not the stopped one`);
  }
  for (const c of others) assert.deepEqual(c.disconnects, [], `${c.spec.user} on the live worker was not disconnected`);
  assert.ok(processAlive(victimPid), 'the stopped worker was not killed (GATEWAY_WORKER_KILL_MS=0)');
  assert.deepEqual(presence.now, presence.expected, 'presence: one entry per connected viewer');
  assertExactlyOnce(clients, 1, last, 'across a worker SIGSTOP/SIGCONT');
});

test('event-loop stall of one worker shorter than the ping timeout: its clients stay connected, events are delayed, none lost or duplicated', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({
    scope,
    backend,
    keyPrefix: newKeyPrefix(),
    redisUrl: redis.url,
    env: { GATEWAY_PING_INTERVAL_MS: '1000', GATEWAY_PING_TIMEOUT_MS: '3000' },
  });
  const clients = await connectRecovering(scope, host);
  await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);
  const info = await clusterInfo(host);
  const index = await workerIndexOf(host, clients);
  const victimPid = info.workers[0]?.pid;
  assert.ok(victimPid !== undefined);
  const onVictim = clients.filter((c) => index.get(c) === 0 && c.rooms.size > 0);
  assert.ok(onVictim.length > 0);

  const publisher = scope.add(new SeqPublisher(pub, 200));
  publisher.start();
  await Promise.all(onVictim.map((c) => c.recorder.waitForCount(SEQ_EVENT, 5, undefined, 10_000)));
  const STALL_MS = 1500;
  process.kill(victimPid, 'SIGSTOP');
  const stallAt = Date.now();
  let continued = false;
  scope.add(() => {
    if (!continued) process.kill(victimPid, 'SIGCONT');
  });
  await new Promise((r) => setTimeout(r, STALL_MS)); // the fault's duration, not a wait for an event
  process.kill(victimPid, 'SIGCONT');
  continued = true;
  const last = await publisher.stop();
  await waitDelivered(clients, last, 15_000);
  await websiteBarrier(pub, clients);

  const delayed = onVictim.flatMap((c) => c.recorder.records(SEQ_EVENT).map((r) => r.at - (r.args[0] as { t: number }).t));
  logDiagnostic(t, 'worker stall', {
    stalledForMs: Date.now() - stallAt,
    worstDelayOnStalledWorkerMs: Math.max(...delayed),
    deliveries: summarise(clients, 1, last),
  });
  for (const c of clients) assert.deepEqual(c.disconnects, [], `${c.spec.user} stayed connected through the stall`);
  assert.ok(Math.max(...delayed) >= STALL_MS / 2, 'events to the stalled worker were delayed by the stall (it really stopped)');
  assertExactlyOnce(clients, 1, last, 'across a worker stall');
});

/** GATEWAY_WORKER_KILL_MS of the next test: far below the clients' own ping timeout, so the kill is what moves them. */
const KILL_MS = 3000;

test('SIGSTOP of one worker past GATEWAY_WORKER_KILL_MS: the primary kills and replaces it, counts it, and its clients reconnect and recover every missed event; presence stays exact', async (t) => {
  // The clients would wait 45 s (ping interval + timeout) before giving up on the frozen worker by themselves.
  let restartsBefore: number | undefined;
  const { scope, redis, keyPrefix, host, clients, pub, victimPid, survivorPid, onVictim, others, publisher } = await stopScenario(
    t,
    { GATEWAY_PING_INTERVAL_MS: '25000', GATEWAY_PING_TIMEOUT_MS: '20000', GATEWAY_WORKER_KILL_MS: String(KILL_MS) },
    async (s) => {
      restartsBefore = await s.host.metricValue('gateway_worker_restarts_total', { reason: 'unresponsive' });
    },
  );

  const reconnected = reconnects(onVictim);
  const stopAt = Date.now();
  process.kill(victimPid, 'SIGSTOP');
  scope.add(() => {
    if (processAlive(victimPid)) process.kill(victimPid, 'SIGCONT');
  });

  // The primary kills it and forks a replacement: two registered workers again, the victim's pid gone.
  const replaced = await pollUntil(
    async () => {
      const now = await clusterInfo(host);
      return now.workers.length === 2 && now.workers.every((w) => w.nodeId !== null && w.pid !== victimPid) ? now : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 100, description: `the stopped worker ${victimPid} to be killed and replaced` },
  );
  const replacedMs = Date.now() - stopAt;
  const backAt = await withTimeout(
    Promise.all(reconnected),
    20_000,
    () =>
      `clients of the killed worker to reconnect: ${onVictim.map((c) => `${c.spec.user} connected=${String(c.socket.connected)} disconnects=${c.disconnects.join('/')}`).join('; ')}`,
  );
  const reconnectedMs = Math.max(...backAt) - stopAt;
  const last = await settle(publisher, pub, clients);
  // Presence: the killed worker's entries swept, the recovered sockets' entries re-opened by their new worker.
  const presence = await settledPresence(redis, keyPrefix, clients);
  const restartsAfter = await host.metricValue('gateway_worker_restarts_total', { reason: 'unresponsive' });
  const exits = await host.metricValue('gateway_worker_restarts_total', { reason: 'exit' });
  const killLog = host.jsonLogs().find((l) => String(l['msg']).startsWith('worker unresponsive for longer than GATEWAY_WORKER_KILL_MS'));
  logDiagnostic(t, 'worker SIGSTOP past the kill threshold', {
    victimPid,
    onVictim: onVictim.length,
    replacedMs,
    reconnectedMs,
    workersAfter: replaced.workers.map((w) => w.pid),
    restarts: { before: restartsBefore, after: restartsAfter, exits },
    killLog,
    recovered: onVictim.map((c) => c.socket.recovered),
    disconnects: onVictim.map((c) => c.disconnects),
    deliveries: summarise(clients, 1, last),
    presence,
  });

  assert.ok(!processAlive(victimPid), 'the stopped worker was killed');
  assert.ok(replacedMs >= KILL_MS, `killed after ${replacedMs} ms, not before GATEWAY_WORKER_KILL_MS (${KILL_MS} ms)`);
  assert.ok(
    replaced.workers.some((w) => w.pid === survivorPid),
    'the other worker was left alone',
  );
  assert.equal(restartsBefore, 0);
  assert.equal(restartsAfter, 1, 'gateway_worker_restarts_total{reason="unresponsive"} counts the kill');
  assert.equal(exits, 0, 'and not as a crash');
  assert.ok(killLog !== undefined, 'the kill is logged');
  assert.equal(killLog['pid'], victimPid);
  for (const c of onVictim) {
    assert.equal(c.socket.connected, true, `${c.spec.user} reconnected`);
    assert.equal(c.socket.recovered, true, `${c.spec.user} recovered its session`);
    assert.equal(c.disconnects.length, 1, `${c.spec.user} was disconnected once`);
    assert.notEqual(c.disconnects[0], 'ping timeout', `${c.spec.user} was cut by the kill, not by its own ping timeout`);
  }
  for (const c of others) assert.deepEqual(c.disconnects, [], `${c.spec.user} on the other worker was not disconnected`);
  assert.deepEqual(presence.now, presence.expected, 'presence: one entry per connected viewer');
  assertExactlyOnce(clients, 1, last, 'across a worker killed for being unresponsive');
});
