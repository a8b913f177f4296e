/**
 * MQTT ingress across two hosts (docs/mqtt.md): a real Mosquitto, messages
 * published with mqtt.js and with mosquitto_pub reach the sensor room's
 * clients on every host and worker exactly once and in order; subscribe_room
 * is gated by the backend's permission; junk payloads and unmatched topics
 * are dropped and counted; a client that joins gets the latest value first.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withScope } from '../harness';
import { errorLogs } from './cluster-support';
import {
  connectFollower,
  OUTSIDER,
  publishMqtt,
  seqOf,
  startMqttCluster,
  statusTopic,
  STATUS_EVENT,
  subscribeRoom,
  USERS,
  waitMqttLeader,
  type Follower,
} from './mqtt-support';

const N = 300;

test('two hosts, one broker: sensor messages reach every client of the room once, in order; permission, junk and latest value', async (t) => {
  const scope = withScope(t);
  const clientId = 'delivery-test-gateway';
  const { broker, hosts } = await startMqttCluster({
    scope,
    hosts: 2,
    workers: 2,
    env: { GATEWAY_MQTT_CLIENT_ID: clientId },
    // A subscription left in the persistent session by an earlier configuration (a rule since removed).
    beforeHosts: async (b) => {
      const old = await b.client({ clientId, clean: false });
      await old.subscribeAsync('factory/+/unknown/#', { qos: 1 });
      await old.endAsync();
    },
  });
  const leader = await waitMqttLeader(hosts);
  const followers: Follower[] = [];
  for (const host of hosts) {
    for (const [user, transports] of [
      [USERS[0], ['websocket']],
      [USERS[1], ['polling']],
      [USERS[2], undefined],
    ] as const) {
      const f = await connectFollower(scope, host, user, transports ? [...transports] : undefined);
      assert.equal(await subscribeRoom(f, 'sensor:42'), true, `${user} on ${host.url} joins sensor:42`);
      followers.push(f);
    }
  }
  const other = await connectFollower(scope, hosts[1] ?? leader, USERS[3]);
  assert.equal(await subscribeRoom(other, 'sensor:43'), true);
  const outsider = await connectFollower(scope, hosts[1] ?? leader, OUTSIDER);
  assert.equal(await subscribeRoom(outsider, 'sensor:42'), false, 'no read permission on Sensor/42: refused');
  assert.equal(await subscribeRoom(other, 'doc:ToDo/1'), false, 'a room no pattern describes: refused');
  assert.equal(await subscribeRoom(other, 'sensor'), false);

  const pub = await broker.client();
  const sends: Promise<void>[] = [];
  for (let seq = 1; seq <= N; seq++) {
    sends.push(publishMqtt(pub, statusTopic(42), JSON.stringify({ seq, sensor: '42' })));
    if (seq === 100) {
      sends.push(publishMqtt(pub, statusTopic(42), Buffer.from([0xff, 0xfe, 0xfd])));
      sends.push(publishMqtt(pub, statusTopic(42), Buffer.alloc(0)));
      sends.push(publishMqtt(pub, 'factory/l1/unknown/42/status', '{"seq":-1}'));
      sends.push(publishMqtt(pub, statusTopic(42), '['.repeat(100) + ']'.repeat(100)));
    }
  }
  await Promise.all(sends);
  // The command line client too, after the mqtt.js stream (its own connection: order is only per publisher).
  for (const f of followers) await f.rec.waitForCount(STATUS_EVENT, N, undefined, 20_000);
  await broker.mosquittoPub(statusTopic(42), JSON.stringify({ seq: N + 1, sensor: '42' }));
  // A marker after everything: a duplicate or a stray would arrive before it.
  await publishMqtt(pub, statusTopic(42), JSON.stringify({ seq: N + 2, sensor: '42' }));
  await publishMqtt(pub, statusTopic(43), JSON.stringify({ seq: 1, sensor: '43' }));
  const expected = Array.from({ length: N + 2 }, (_, i) => i + 1);
  for (const f of followers) {
    await f.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === N + 2, 20_000);
    assert.deepEqual(f.rec.payloads(STATUS_EVENT).map(seqOf), expected, `${f.user} on ${f.host.url}: every message once, in order`);
  }
  await other.rec.waitFor(STATUS_EVENT, (p) => (p as { sensor: string }).sensor === '43');
  assert.deepEqual(other.rec.payloads(STATUS_EVENT), [{ seq: 1, sensor: '43' }], 'sensor:43 got only its own message');
  assert.equal(outsider.rec.count(STATUS_EVENT), 0, 'the refused client got nothing');

  const count = (result: string): Promise<number | undefined> => leader.metricValue('gateway_mqtt_messages_total', { result });
  assert.equal(await count('published'), N + 3);
  assert.equal(await count('dropped_bad_payload'), 1);
  assert.equal(await count('dropped_empty_payload'), 1);
  assert.equal(await count('dropped_no_rule'), 1);
  assert.equal(await count('dropped_too_deep'), 1);
  assert.equal(await leader.metricValue('gateway_mqtt_connected'), 1);
  assert.ok(((await leader.metricValue('gateway_mqtt_lag_seconds_count')) ?? 0) >= N, 'lag observed per published message');
  assert.ok(((await hosts[1]?.metricValue('gateway_custom_room_subscriptions_total', { result: 'denied' })) ?? 0) >= 1);

  // Latest value: a client joining now gets the last message before its acknowledgement, then the live ones.
  const late = await connectFollower(scope, hosts[1] ?? leader, USERS[0]);
  assert.equal(await subscribeRoom(late, 'sensor:42'), true);
  assert.deepEqual(late.rec.payloads(STATUS_EVENT), [{ seq: N + 2, sensor: '42' }], 'the latest value arrived with the join');
  const fresh = await connectFollower(scope, hosts[0] ?? leader, USERS[0]);
  assert.equal(await subscribeRoom(fresh, 'sensor:77'), true);
  assert.equal(fresh.rec.count(STATUS_EVENT), 0, 'a room without a value yet gives nothing on join');
  await publishMqtt(pub, statusTopic(42), JSON.stringify({ seq: N + 3, sensor: '42' }));
  await late.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === N + 3);
  assert.deepEqual(late.rec.payloads(STATUS_EVENT).map(seqOf), [N + 2, N + 3]);

  for (const host of hosts) assert.deepEqual(errorLogs(host), [], `${host.url} logged errors`);
});
