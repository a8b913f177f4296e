/**
 * Faults under steady load, with missed-event replay: a host SIGKILLed, a
 * worker's adapter subscriber connection killed, Redis restarted without
 * persistence.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertNotReceived, barrierPublish, pollUntil, publishRedis, startRedis, withScope } from '../harness';
import {
  DOCNAME,
  DOCTYPE,
  newKeyPrefix,
  roomMembersPerWorker,
  sidOf,
  SITE,
  startBackend,
  startHost,
  USERS,
  userRoom,
  waitSpread,
} from './cluster-support';
import { ack, assertInOrder, frontProxy, recoveringClient, RoomSequence } from './recovery-support';

const DOC_ROOM = `doc:${DOCTYPE}/${DOCNAME}`;

test('a host SIGKILLed under steady load: its clients come back on the survivor, 0 lost, 0 duplicated, in order', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const [a, b] = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url })));
  if (!a || !b) throw new Error('hosts did not start');
  let aUp = true;
  const front = await frontProxy(scope, () => (aUp ? [a.port] : [b.port]));
  const url = `http://127.0.0.1:${front}`;
  const clients = [];
  for (const user of USERS) {
    const c = await recoveringClient(scope, url, sidOf(user));
    assert.equal(await ack(c.socket, 'doc_subscribe', DOCTYPE, DOCNAME), true);
    clients.push({ user, ...c });
  }
  // Every event goes to the doc room, which every client is in.
  const seq = scope.add(new RoomSequence(redis.client(), [DOC_ROOM], 2));
  await seq.start();
  await Promise.all(clients.map((c) => c.rec.waitForCount('replay_seq', 20, undefined, 10_000)));
  const back = clients.map((c) => new Promise<void>((r) => c.socket.once('disconnect', () => c.socket.once('connect', () => r()))));
  aUp = false;
  await a.kill();
  await Promise.all(back);
  await seq.waitPublished(100);
  const last = await seq.stop();
  for (const c of clients) {
    assert.equal(c.socket.recovered, true, `${c.user} recovered`);
    await assertInOrder(c.rec, last, c.user);
    assert.equal(c.rec.count('rtg_missed_updates'), 0, `${c.user} was not told it missed updates`);
  }
  // On the survivor, with the room they joined on the dead host (no re-subscribe: the client code above never sends one).
  const inDoc = new Set((await roomMembersPerWorker(b, DOC_ROOM)).flat().map((m) => m.id));
  assert.deepEqual(
    clients.filter((c) => !inDoc.has(c.socket.id as string)).map((c) => c.user),
    [],
    `every client is in ${DOC_ROOM} on the survivor`,
  );
});

test("a worker's subscriber connection killed: the gap is read from history and its connected clients lose nothing", async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url });
  const clients = [];
  for (const user of [USERS[0], USERS[1]]) clients.push({ user, ...(await recoveringClient(scope, host.url, sidOf(user))) });
  const tracked = clients.map((c) => ({ host, socket: c.socket, spec: { user: c.user, docRoom: false } }));
  await waitSpread(host, tracked as unknown as Parameters<typeof waitSpread>[1], 2);
  const disconnects: string[] = [];
  for (const c of clients) c.socket.on('disconnect', (r) => disconnects.push(r));
  const seq = scope.add(new RoomSequence(redis.client(), ['website'], 2));
  await seq.start();
  await Promise.all(clients.map((c) => c.rec.waitForCount('replay_seq', 20, undefined, 10_000)));

  const admin = redis.client();
  const list = String(await admin.call('CLIENT', 'LIST'));
  const subs = [...list.matchAll(/^id=(\d+) .*name=(\S+-w\d+-[0-9a-f]{6}:sub) /gm)];
  assert.equal(subs.length, 2, `one subscriber per worker in CLIENT LIST:\n${list}`);
  for (const m of subs) await admin.call('CLIENT', 'KILL', 'ID', m[1] as string);
  // The gap held events (the kill was not a no-op) and they were read from history.
  await pollUntil(async () => (((await host.metricValue('gateway_history_gap_events_total')) ?? 0) > 0 ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 50,
    description: 'the workers to fill their subscriber gap from history',
  });
  await seq.waitPublished(100);
  const last = await seq.stop();
  for (const c of clients) await assertInOrder(c.rec, last, c.user);
  assert.deepEqual(disconnects, [], 'the clients never disconnected');
});

test('Redis restarted without persistence: connected clients are told, a reconnecting one is new with automatic rooms only', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url });
  let open = true;
  const front = await frontProxy(scope, () => (open ? [host.port] : []));
  const stays = await recoveringClient(scope, host.url, sidOf(USERS[1]));
  const leaves = await recoveringClient(scope, `http://127.0.0.1:${front}`, sidOf(USERS[0]));
  for (const c of [stays, leaves]) assert.equal(await ack(c.socket, 'doc_subscribe', DOCTYPE, DOCNAME), true);
  const pub = redis.client();
  await publishRedis(pub, 'events', { event: 'doc_update', message: { n: 1 }, namespace: SITE, room: DOC_ROOM });
  await Promise.all([stays, leaves].map((c) => c.rec.waitFor('doc_update', undefined, 5000)));

  const away = new Promise<void>((r) => leaves.socket.once('disconnect', () => r()));
  const leftId = leaves.socket.id;
  open = false;
  (leaves.socket.io.engine as unknown as { close(): void }).close();
  await away;
  // The worker has seen the disconnect (and sent the session save it makes then): a save still to come
  // would land in the new, empty Redis and outlive the history ('history_lost' instead of 'expired').
  await pollUntil(async () => ((await roomMembersPerWorker(host, 'website')).flat().some((m) => m.id === leftId) ? undefined : true), {
    timeoutMs: 5000,
    intervalMs: 20,
    description: 'the worker to see the disconnect',
  });
  await redis.restart();
  assert.deepEqual(await stays.rec.waitFor('rtg_missed_updates', undefined, 15_000), { reason: 'history_lost' });

  const back = new Promise<void>((r) => leaves.socket.once('connect', () => r()));
  open = true;
  await back;
  assert.equal(leaves.socket.recovered, false);
  assert.deepEqual(await leaves.rec.waitFor('rtg_missed_updates', undefined, 5000), { reason: 'expired' });
  // Nothing stale: the doc room did not come back; the client that stayed is still in it.
  await publishRedis(pub, 'events', { event: 'doc_update', message: { n: 2 }, namespace: SITE, room: DOC_ROOM });
  await stays.rec.waitFor('doc_update', (m) => (m as { n?: number }).n === 2, 10_000);
  await assertNotReceived(leaves.rec, 'doc_update', (m) => (m as { n?: number }).n === 2, {
    sendMarker: (marker) => publishRedis(pub, 'events', barrierPublish(SITE, userRoom(USERS[0]), marker)),
  });
});
