/**
 * MQTT ingress faults (docs/mqtt.md): when Redis refuses the publish, a QoS 1
 * message is not acknowledged to the broker (the acknowledgement follows a
 * successful publish on the events channel), so it comes again once Redis
 * accepts writes and reaches the clients once. When the broker goes away the
 * leader reports it in /readyz (staying ready) and reconnects with backoff.
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

test('broker restart: /readyz reports the MQTT state without turning unready, the leader reconnects and messages flow again', async (t) => {
  const scope = withScope(t);
  const { broker, hosts } = await startMqttCluster({ scope, hosts: 1, workers: 1 });
  const host = await waitMqttLeader(hosts);
  const f = await connectFollower(scope, host, USERS[0], ['websocket']);
  assert.equal(await subscribeRoom(f, 'sensor:42'), true);

  await broker.kill();
  const down = await pollUntil(
    async () => {
      const r = await host.readyz();
      const mqtt = (r.body as { mqtt?: { state?: string; lastError?: string } }).mqtt;
      return mqtt?.state === 'reconnecting' ? { status: r.status, mqtt } : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50, description: 'readyz to report the MQTT connection as reconnecting' },
  );
  assert.equal(down.status, 200, 'a broker outage does not make the host unready');
  assert.equal(await host.metricValue('gateway_mqtt_connected'), 0);

  await broker.restart();
  await waitMqttLeader([host]);
  const pub = await broker.client();
  await publishMqtt(pub, statusTopic(42), JSON.stringify({ seq: 1, sensor: '42' }));
  await f.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === 1, 20_000);
  assert.equal(await host.metricValue('gateway_mqtt_connected'), 1);
});
