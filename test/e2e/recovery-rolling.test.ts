/**
 * A rolling restart of every host under steady load: each host in turn is
 * SIGTERMed (readiness 503, leader hand-over, clients closed at the
 * transport level in jittered batches over GATEWAY_DRAIN_MS), comes back on
 * its address and is ready before the next one goes. The clients reach the
 * hosts through a round-robin TCP balancer that skips a host refusing
 * connections; they subscribe once, before the roll, and never again.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope, type GatewayHandle } from '../harness';
import { HAS_PERMISSION, METHOD_PREFIX } from '../harness/fake-frappe';
import { newKeyPrefix, roomMembersPerWorker, sidOf, startBackend, startHost, USERS, type HostOptions } from './cluster-support';
import { assertInOrder, frontProxy, recoveringClient, RoomSequence, roundRobin, subscribeAll, SUBSCRIBED_ROOMS } from './recovery-support';

const DRAIN_MS = 1500;
const CLIENTS = 8;

test('rolling restart of every host under steady load: every client back, recovered, rooms intact, 0 lost, 0 duplicated, in order', async (t) => {
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
  const front = await frontProxy(
    scope,
    roundRobin(() => hosts.map((h) => h.port)),
  );
  const url = `http://127.0.0.1:${front}`;

  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const user = USERS[i % USERS.length] as string;
    const c = await recoveringClient(scope, url, sidOf(user));
    await subscribeAll(c.socket);
    // `socket.recovered` of each reconnection (the first connect is behind us).
    const reconnects: boolean[] = [];
    c.socket.on('connect', () => reconnects.push(c.socket.recovered));
    clients.push({ user, reconnects, ...c });
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
});
