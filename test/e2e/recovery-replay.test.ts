/**
 * Missed-event replay for the stock socket.io-client: a client whose
 * transport is cut while events flow to its rooms comes back (on another
 * host) with its rooms and gets every event it missed, in order, before the
 * new ones and nothing twice.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startRedis, withScope } from '../harness';
import { newKeyPrefix, sidOf, startBackend, startHost, USERS, userRoom } from './cluster-support';
import {
  assertInOrder,
  busyWorkerPid,
  frontProxy,
  reconnected,
  recoveringClient,
  RoomSequence,
  subscribeAll,
  SUBSCRIBED_ROOMS,
} from './recovery-support';

const USER = USERS[0];
const ROOMS = [...SUBSCRIBED_ROOMS, userRoom(USER)];

async function twoHosts(t: import('node:test').TestContext) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const [a, b] = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url })));
  if (!a || !b) throw new Error('hosts did not start');
  let aUp = true;
  const front = await frontProxy(scope, () => (aUp ? [a.port, b.port] : [b.port]));
  return { scope, redis, a, b, url: `http://127.0.0.1:${front}`, downA: () => (aUp = false) };
}

for (const cut of ['worker SIGKILL', 'client engine close'] as const) {
  test(`${cut} while events flow: the client comes back on the other host with every missed event, in order, once`, async (t) => {
    const { scope, redis, a, b, url, downA } = await twoHosts(t);
    const { socket, rec } = await recoveringClient(scope, url, sidOf(USER));
    await subscribeAll(socket);
    const seq = scope.add(new RoomSequence(redis.client(), ROOMS, 2));
    await seq.start();
    await rec.waitForCount('replay_seq', 20, undefined, 10_000);

    const back = reconnected(socket);
    downA();
    if (cut === 'worker SIGKILL') process.kill(await busyWorkerPid(a), 'SIGKILL');
    else (socket.io.engine as unknown as { close(): void }).close();
    const before = seq.published;
    const cutAt = Date.now();
    await back;
    t.diagnostic(`reconnected after ${Date.now() - cutAt} ms, ${seq.published - before} events published meanwhile`);
    assert.equal(socket.recovered, true, 'the session was recovered');
    assert.ok(seq.published > before, 'events were published while the client was away');
    // Events keep flowing after the reconnection, to every room: the rooms are intact without a re-subscribe.
    await seq.waitPublished(50);
    const last = await seq.stop();
    await assertInOrder(rec, last, `${cut}`);
    assert.equal(rec.count('rtg_missed_updates'), 0, 'nothing was missed, so nothing is signalled');
    assert.ok(((await b.metricValue('gateway_recovery_replayed_events_total')) ?? 0) > 0, 'some events came from history');
  });
}
