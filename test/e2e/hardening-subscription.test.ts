/**
 * Redis closes a subscriber whose output buffer overflows
 * (client-output-buffer-limit pubsub): a burst of large events on `events`
 * cuts the primaries' subscription. The loss must be counted
 * (gateway_events_subscription_lost_total), the subscription must come back
 * and delivery resume. (Recovering the events lost meanwhile is not this
 * test's concern.)
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, EventRecorder, pollUntil, publishRedis, startRedis, waitConnect, withScope } from '../harness';
import { newKeyPrefix, SITE, sidOf, startBackend, startHost, USERS, userRoom } from './cluster-support';

test('events subscription closed by Redis (output buffer limit): counted, re-established, delivery resumes', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const gw = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url, workers: 1 });
  const user = USERS[0];
  const client = connectClient(gw.url, SITE, { scope, cookie: sidOf(user), transports: ['websocket'] });
  await waitConnect(client);
  const rec = new EventRecorder(client);
  const r = redis.client();
  await publishRedis(r, 'events', { event: 'before', message: 1, namespace: SITE, room: userRoom(user) });
  assert.equal(await rec.waitFor('before'), 1);
  assert.equal((await gw.metricValue('gateway_events_subscription_lost_total')) ?? 0, 0);

  await r.config('SET', 'client-output-buffer-limit', 'pubsub 1mb 512kb 1');
  // 80 events of 900 KB to a room nobody is in, published faster than any subscriber reads.
  const big = 'x'.repeat(900 * 1024);
  const pipeline = r.pipeline();
  for (let i = 0; i < 80; i++) pipeline.publish('events', JSON.stringify({ event: 'big', message: big, namespace: SITE, room: 'nobody' }));
  await pipeline.exec();

  await pollUntil(async () => (((await gw.metricValue('gateway_events_subscription_lost_total')) ?? 0) >= 1 ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 100,
    description: 'the lost events subscription to be counted',
  });
  // Delivery resumes once the subscription is back: publish until one arrives.
  let n = 0;
  await pollUntil(
    async () => {
      await publishRedis(r, 'events', { event: 'after', message: ++n, namespace: SITE, room: userRoom(user) });
      return rec.count('after') > 0 ? true : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 200, description: 'delivery to resume after the subscription loss' },
  );
  t.diagnostic(
    `subscription losses counted: ${await gw.metricValue('gateway_events_subscription_lost_total')}; small events published before one arrived: ${n}`,
  );
});
