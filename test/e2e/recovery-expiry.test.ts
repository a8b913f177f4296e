/**
 * When missed events cannot be replayed (the recovery window expired, or
 * history no longer reaches back to the client's offset), the client is a
 * new one: `recovered` false, automatic rooms only, and the documented
 * `rtg_missed_updates` event tells the page it may have missed updates.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { assertNotReceived, barrierPublish, pollUntil, publishRedis, startRedis, withScope, type EventRecorder } from '../harness';
import { DOCNAME, DOCTYPE, newKeyPrefix, sidOf, SITE, startBackend, startHost, USERS, userRoom } from './cluster-support';
import { ack, frontProxy, recoveringClient } from './recovery-support';

const USER = USERS[0];
const DOC_ROOM = `doc:${DOCTYPE}/${DOCNAME}`;

async function setup(t: import('node:test').TestContext, env: Record<string, string>) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url, env });
  let open = true;
  const front = await frontProxy(scope, () => (open ? [host.port] : []));
  const { socket, rec } = await recoveringClient(scope, `http://127.0.0.1:${front}`, sidOf(USER));
  assert.equal(await ack(socket, 'doc_subscribe', DOCTYPE, DOCNAME), true);
  const pub = redis.client();
  // Cut the client off: its reconnection attempts are refused until `letBack`.
  const away = new Promise<void>((r) => socket.once('disconnect', () => r()));
  open = false;
  (socket.io.engine as unknown as { close(): void }).close();
  await away;
  const back = new Promise<void>((r) => socket.once('connect', () => r()));
  return { scope, redis, host, socket, rec, pub, letBack: () => ((open = true), back) };
}

/** The stale doc room is gone: a doc event does not arrive, a marker to the automatic user room does. */
async function assertOnlyAutomaticRooms(rec: EventRecorder, pub: Parameters<typeof publishRedis>[0]): Promise<void> {
  await publishRedis(pub, 'events', { event: 'doc_update', message: { stale: true }, namespace: SITE, room: DOC_ROOM });
  await assertNotReceived(rec, 'doc_update', () => true, {
    sendMarker: (marker) => publishRedis(pub, 'events', barrierPublish(SITE, userRoom(USER), marker)),
  });
}

test('an expired recovery window: recovered false, rtg_missed_updates {reason: expired}, automatic rooms only', async (t) => {
  const { rec, socket, pub, host, letBack } = await setup(t, { GATEWAY_RECOVERY_WINDOW_MS: '1000' });
  const pid = (socket as unknown as { _pid?: string })._pid;
  assert.ok(pid, 'the client holds a private session id');
  const key = `${host.keyPrefix}:session:${pid}`;
  await pollUntil(async () => ((await pub.exists(key)) === 0 ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 50,
    description: 'session expiry',
  });
  await letBack();
  assert.equal(socket.recovered, false);
  assert.deepEqual(await rec.waitFor('rtg_missed_updates', undefined, 5000), { reason: 'expired' });
  await assertOnlyAutomaticRooms(rec, pub);
  assert.equal(await host.metricValue('gateway_session_recoveries_total', { result: 'expired' }), 1);
});

test('history trimmed past the client offset: recovered false, rtg_missed_updates {reason: trimmed}, automatic rooms only', async (t) => {
  const { rec, socket, pub, host, letBack } = await setup(t, { GATEWAY_HISTORY_MAX_EVENTS: '100' });
  // Events for somebody else push the client's offset out of the (count-bounded) history.
  const other = userRoom(USERS[1]);
  const pipeline = pub.pipeline();
  for (let i = 0; i < 1000; i++)
    pipeline.publish('events', JSON.stringify({ event: 'filler', message: { i }, namespace: SITE, room: other }));
  await pipeline.exec();
  await pollUntil(
    async () =>
      (await pub.xlen(`{${host.keyPrefix}}:history`)) >= 100 && (await pub.xlen(`{${host.keyPrefix}}:history`)) < 1000 ? true : undefined,
    {
      timeoutMs: 10_000,
      intervalMs: 20,
      description: 'the leader to broadcast and trim',
    },
  );
  await letBack();
  assert.equal(socket.recovered, false);
  assert.deepEqual(await rec.waitFor('rtg_missed_updates', undefined, 5000), { reason: 'trimmed' });
  await assertOnlyAutomaticRooms(rec, pub);
  assert.equal(await host.metricValue('gateway_session_recoveries_total', { result: 'trimmed' }), 1);
});
