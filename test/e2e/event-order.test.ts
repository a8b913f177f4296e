/**
 * Frappe keeps publish order, so the gateway must too: a client in a room
 * receives room events and room-less (every site) events in exactly the
 * order they were published, whichever worker it is on.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { frappeJson, startRedis, withScope } from '../harness';
import { connectTracked, newKeyPrefix, SITE, startBackend, startHost, USERS, userRoom, waitSpread, warmUp } from './cluster-support';

const ORDER_EVENT = 'order_probe';

test('interleaved room and room-less events published in one pipeline arrive in publish order', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url });
  const clients = await connectTracked(scope, host, [
    { user: USERS[0], transports: ['websocket'], docRoom: false },
    { user: USERS[1], transports: ['websocket'], docRoom: false },
  ]);
  await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);

  const rounds = 200;
  const pipeline = pub.pipeline();
  for (let i = 0; i < rounds; i++) {
    // Alternating: one to each client's own room, then one to every site.
    for (const user of [USERS[0], USERS[1]]) {
      pipeline.publish('events', frappeJson({ event: ORDER_EVENT, message: { i, to: user }, namespace: SITE, room: userRoom(user) }));
    }
    pipeline.publish('events', frappeJson({ event: ORDER_EVENT, message: { i, to: 'all' }, namespace: SITE, room: null }));
  }
  await pipeline.exec();

  for (const c of clients) {
    const expected: string[] = [];
    for (let i = 0; i < rounds; i++) expected.push(`${i}:${c.spec.user}`, `${i}:all`);
    await c.recorder.waitForCount(ORDER_EVENT, expected.length, undefined, 15_000);
    const got = c.recorder.payloads(ORDER_EVENT).map((p) => {
      const m = p as { i: number; to: string };
      return `${m.i}:${m.to}`;
    });
    assert.deepEqual(got, expected, `${c.spec.user}: events out of publish order`);
  }
});
