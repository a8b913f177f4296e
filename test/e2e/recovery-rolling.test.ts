/**
 * A rolling restart of every host under steady load: each host in turn is
 * SIGTERMed (readiness 503, leader hand-over, clients closed at the
 * transport level in jittered batches over GATEWAY_DRAIN_MS), comes back on
 * its address and is ready before the next one goes. The clients reach the
 * hosts through a round-robin TCP balancer that skips a host refusing
 * connections; they subscribe once, before the roll, and never again.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Socket } from 'socket.io-client';
import { pollUntil, startRedis, withScope, withTimeout, type EventRecorder, type GatewayHandle } from '../harness';
import { HAS_PERMISSION, METHOD_PREFIX } from '../harness/fake-frappe';
import { newKeyPrefix, roomMembersPerWorker, sidOf, startBackend, startHost, USERS, type HostOptions } from './cluster-support';
import {
  assertInOrder,
  frontProxy,
  recoveringClient,
  RoomSequence,
  roundRobin,
  stickyFrontProxy,
  subscribeAll,
  SUBSCRIBED_ROOMS,
} from './recovery-support';

const DRAIN_MS = 1500;
const CLIENTS = 8;

/**
 * `transports` 'websocket': one TCP connection per session, behind a plain
 * round-robin front. 'default': socket.io-client's own transports (long-
 * polling first, then the upgrade to WebSocket, again after every
 * reconnection), behind a front with per-client affinity, as long-polling
 * needs in production.
 */
async function rollingRestart(t: TestContext, transports: 'websocket' | 'default'): Promise<void> {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const base: HostOptions = {
    scope,
    backend,
    keyPrefix: newKeyPrefix(),
    redisUrl: redis.url,
    env: { GATEWAY_DRAIN_MS: String(DRAIN_MS), GATEWAY_SHUTDOWN_GRACE_MS: '10000' },
  };
  const hosts: GatewayHandle[] = await Promise.all([0, 1].map(() => startHost(base)));
  const order = roundRobin(() => hosts.map((h) => h.port));
  const front = transports === 'websocket' ? await frontProxy(scope, order) : await stickyFrontProxy(scope, order);
  const url = `http://127.0.0.1:${front}`;

  const clients: { user: string; reconnects: boolean[]; startedOn: string[]; socket: Socket; rec: EventRecorder }[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const user = USERS[i % USERS.length] as string;
    const c = await recoveringClient(scope, url, sidOf(user), { transports, client: `c${i}` });
    if (transports === 'default') await upgraded(c.socket);
    await subscribeAll(c.socket);
    // `socket.recovered` of each reconnection (the first connect is behind us).
    const reconnects: boolean[] = [];
    // The transport each new Engine.IO connection opened on (before any upgrade).
    const startedOn: string[] = [];
    c.socket.on('connect', () => reconnects.push(c.socket.recovered));
    c.socket.io.on('open', () => startedOn.push(c.socket.io.engine.transport.name));
    clients.push({ user, reconnects, startedOn, ...c });
  }
  const subscribeCalls = backend.requests.length;
  const seq = scope.add(new RoomSequence(redis.client(), SUBSCRIBED_ROOMS, 2));
  await seq.start();
  await Promise.all(clients.map((c) => c.rec.waitForCount('replay_seq', 20, undefined, 10_000)));

  for (const [i, host] of hosts.entries()) {
    const members = new Set((await roomMembersPerWorker(host, 'website')).flat().map((m) => m.id));
    const leaving = clients.filter((c) => members.has(c.socket.id as string));
    assert.ok(leaving.length > 0, `host ${i} holds clients before its restart`);
    const back = leaving.map((c) => new Promise<void>((r) => c.socket.once('disconnect', () => c.socket.once('connect', () => r()))));
    const sentAt = Date.now();
    host.signal('SIGTERM');
    await pollUntil(async () => ((await host.readyz()).status === 503 ? true : undefined), {
      timeoutMs: 5000,
      intervalMs: 20,
      description: `host ${i} readiness 503 while draining`,
    });
    await Promise.all(back);
    const exit = await host.exited;
    assert.equal(exit.code, 0, `host ${i} exited cleanly: ${JSON.stringify(exit)}`);
    t.diagnostic(`host ${i}: ${leaving.length} clients moved, exit after ${Date.now() - sentAt} ms`);
    hosts[i] = await startHost({ ...base, port: host.port, opsPort: host.opsPort });
    await hosts[i].ready();
    // Events keep flowing while the restarted host settles.
    await seq.waitPublished(50);
  }
  const last = await seq.stop();

  for (const c of clients) {
    assert.ok(c.reconnects.length >= 1, `${c.user} reconnected at least once`);
    assert.deepEqual(
      c.reconnects,
      c.reconnects.map(() => true),
      `${c.user}: recovered on every reconnection`,
    );
    assert.equal(c.socket.connected, true, `${c.user} is connected`);
    await assertInOrder(c.rec, last, c.user);
    assert.equal(c.rec.count('rtg_missed_updates'), 0, `${c.user} was never told it missed updates`);
  }
  // The rooms came back with the sessions: every client is in each, across the hosts, without a re-subscribe.
  const ids = new Set(clients.map((c) => c.socket.id));
  for (const room of SUBSCRIBED_ROOMS) {
    const inRoom = (await Promise.all(hosts.map((h) => roomMembersPerWorker(h, room)))).flat(2).filter((m) => ids.has(m.id));
    assert.equal(inRoom.length, CLIENTS, `${room} holds every client once`);
  }
  const permissionChecks = (from: number, to?: number) =>
    backend.requests
      .slice(from, to)
      .filter((r) => r.path === HAS_PERMISSION || r.path.startsWith(`${METHOD_PREFIX}frappe.realtime.can_subscribe`));
  assert.ok(permissionChecks(0, subscribeCalls).length > 0, 'the subscriptions before the roll asked the backend');
  assert.deepEqual(permissionChecks(subscribeCalls), [], 'nothing subscribed again');
  if (transports === 'default') {
    t.diagnostic(`opened on: ${clients.map((c) => c.startedOn.join('/')).join(' ')}`);
    for (const c of clients) {
      assert.ok(c.startedOn.length >= c.reconnects.length, `${c.user}: ${c.startedOn.length} connections opened`);
      assert.deepEqual(
        c.startedOn,
        c.startedOn.map(() => 'polling'),
        `${c.user}: every reconnection began on long-polling`,
      );
    }
    // Each came back through long-polling and upgraded again (a bounded poll: the upgrade is announced on the engine only).
    await pollUntil(async () => (clients.every((c) => c.socket.io.engine.transport.name === 'websocket') ? true : undefined), {
      timeoutMs: 10_000,
      intervalMs: 50,
      description: () => `every client upgraded: ${clients.map((c) => c.socket.io.engine.transport.name).join(',')}`,
    });
  }
}

/** Resolves once the socket's Engine.IO connection has upgraded from long-polling to WebSocket. */
function upgraded(socket: Socket): Promise<void> {
  const engine = socket.io.engine;
  if (engine.transport.name === 'websocket') return Promise.resolve();
  return withTimeout(new Promise<void>((r) => engine.once('upgrade', () => r())), 10_000, 'the client to upgrade to WebSocket');
}

test('rolling restart of every host under steady load: every client back, recovered, rooms intact, 0 lost, 0 duplicated, in order', async (t) => {
  await rollingRestart(t, 'websocket');
});

test("rolling restart with socket.io-client's default transports (long-polling, then the upgrade), behind a front with client affinity: every client back, recovered, rooms intact, 0 lost, 0 duplicated, in order", async (t) => {
  await rollingRestart(t, 'default');
});
