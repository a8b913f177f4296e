/**
 * Poison events: a valid-shaped event whose message is nested 10,000 levels
 * deep parses (JSON.parse does not recurse) but overflows the stack of every
 * recursive encoder. The leader, and after it each standby replaying the same
 * event, must drop and count it instead of dying on it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, EventRecorder, startGateway, startRedis, waitConnect, withScope } from '../harness';
import {
  clusterInfo,
  connectTracked,
  findLeader,
  newKeyPrefix,
  processAlive,
  SITE,
  startBackend,
  startHost,
  sidOf,
  USERS,
  userRoom,
} from './cluster-support';

const DEPTH = 10_000;
const deep = (): string => '['.repeat(DEPTH) + ']'.repeat(DEPTH);
/** Built as text: the test's own JSON.stringify would overflow on it too. */
const poison = (room: string | null): string =>
  `{"event":"poison","namespace":"${SITE}","room":${room === null ? 'null' : JSON.stringify(room)},"message":${deep()}}`;

test('a poison event on the events channel is dropped and counted; both primaries stay up, clients stay connected, the next event is delivered', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, workers: 1 })));
  const pids = hosts.map((h) => h.pid);
  const clients = [
    ...(await connectTracked(scope, hosts[0]!, [{ user: USERS[0], transports: ['websocket'], docRoom: false }])),
    ...(await connectTracked(scope, hosts[1]!, [{ user: USERS[1], docRoom: false }])),
  ];
  await findLeader(hosts);
  const pub = redis.client();
  // A room event (encoded by the leader for the room's shard channel) and a
  // room-less one (encoded for every worker), then an ordinary event.
  await pub.publish('events', poison(userRoom(USERS[0])));
  await pub.publish('events', poison(null));
  await pub.publish('events', JSON.stringify({ event: 'after_poison', message: { ok: 1 }, namespace: SITE, room: null }));
  await pub.publish('events', JSON.stringify({ event: 'after_room', message: 2, namespace: SITE, room: userRoom(USERS[0]) }));

  await Promise.all(clients.map((c) => c.recorder.waitFor('after_poison', undefined, 10_000)));
  assert.equal(await clients[0]!.recorder.waitFor('after_room', undefined, 10_000), 2);
  assert.equal(clients[0]!.recorder.count('poison') + clients[1]!.recorder.count('poison'), 0);

  let dropped = 0;
  // Refused where it enters (too_deep, docs/protocol.md section 2); the leader's encode guard is the second line.
  for (const h of hosts) {
    for (const reason of ['too_deep', 'unencodable']) dropped += (await h.metricValue('gateway_events_dropped_total', { reason })) ?? 0;
  }
  assert.equal(dropped, 2, 'each poison event is dropped once, by the one leader');
  for (const [i, h] of hosts.entries()) {
    assert.ok(processAlive(h.pid), `host ${i} primary is alive`);
    assert.equal((await clusterInfo(h)).node.pid, pids[i], `host ${i} primary is the same process`);
  }
  for (const c of clients) {
    assert.deepEqual(c.disconnects, [], 'no client lost its connection');
    assert.ok(c.socket.connected);
  }
});

test('standalone: the publish API refuses a too deeply nested event with 400 naming the field and keeps delivering', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE });
  const socket = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  const rec = new EventRecorder(socket);
  await waitConnect(socket);
  const res = await gw.opsRequest('/api/v1/publish', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: poison(null),
  });
  assert.equal(res.status, 400, res.body);
  const err = JSON.parse(res.body) as { error: string; field?: string };
  assert.equal(err.error, 'GW_ERR_BAD_EVENT');
  assert.equal(err.field, 'message');
  assert.equal(await gw.metricValue('gateway_events_dropped_total', { reason: 'too_deep' }), 1);
  const ok = await gw.publish({ event: 'after_poison', message: 'fine', namespace: SITE, room: null });
  assert.equal(ok.status, 202);
  assert.equal(await rec.waitFor('after_poison'), 'fine');
  assert.ok(socket.connected);
});
