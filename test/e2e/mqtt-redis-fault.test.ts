/**
 * MQTT ingress when Redis refuses the publish (docs/mqtt.md "Exactly once"):
 * a QoS 1 message is acknowledged to the broker only after its publish on the
 * events channel succeeded, so what Redis refused comes again from the broker
 * once Redis accepts writes, and reaches the clients once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, withScope } from '../harness';
import {
  connectFollower,
  publishMqtt,
  seqOf,
  startMqttCluster,
  statusTopic,
  STATUS_EVENT,
  subscribeRoom,
  USERS,
  waitMqttLeader,
} from './mqtt-support';

test('Redis refuses the publish: the message is not acknowledged, comes again once Redis accepts writes, and is delivered once', async (t) => {
  const scope = withScope(t);
  const { redis, broker, hosts } = await startMqttCluster({ scope, hosts: 1, workers: 1 });
  const host = await waitMqttLeader(hosts);
  const f = await connectFollower(scope, host, USERS[0], ['websocket']);
  assert.equal(await subscribeRoom(f, 'sensor:42'), true);
  const pub = await broker.client();
  const send = async (from: number, to: number): Promise<void> => {
    for (let seq = from; seq <= to; seq++) await publishMqtt(pub, statusTopic(42), JSON.stringify({ seq, sensor: '42' }));
  };
  await send(1, 10);
  await f.rec.waitForCount(STATUS_EVENT, 10, undefined, 20_000);

  // Every write is refused (OOM), the ingress script included.
  const admin = redis.client();
  await admin.config('SET', 'maxmemory-policy', 'noeviction');
  await admin.config('SET', 'maxmemory', '1');
  await send(11, 20);
  await pollUntil(
    async () => (((await host.metricValue('gateway_mqtt_messages_total', { result: 'redis_error' })) ?? 0) > 0 ? true : undefined),
    { timeoutMs: 20_000, intervalMs: 50, description: 'the ingress to see Redis refuse a publish' },
  );
  await admin.config('SET', 'maxmemory', '0');

  await f.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === 20, 30_000);
  await send(21, 21);
  await f.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === 21, 20_000);
  assert.deepEqual(
    f.rec.payloads(STATUS_EVENT).map(seqOf),
    Array.from({ length: 21 }, (_, i) => i + 1),
    'every message once, in order',
  );
});
