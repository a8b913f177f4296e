/**
 * MQTT ingress failover (docs/mqtt.md "Exactly once"): the leader published
 * QoS 1 messages to Redis but its acknowledgements never reached the broker
 * (swallowed by a proxy, as in a crash between publish and PUBACK), then the
 * leader host is SIGKILLed mid-stream. The broker session moves to the new
 * leader, which receives the unacknowledged messages again plus everything
 * queued during the failover: the clients get every message exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withScope } from '../harness';
import { logDiagnostic } from './cluster-support';
import {
  connectFollower,
  publishMqtt,
  seqOf,
  startAckSwallowingProxy,
  startMqttCluster,
  statusTopic,
  STATUS_EVENT,
  subscribeRoom,
  USERS,
  waitMqttLeader,
  type AckSwallowingProxy,
} from './mqtt-support';

/** Unacknowledged QoS 1 messages the broker sends a client at once (mosquitto max_inflight_messages; it may send a few more). */
const INFLIGHT = 10;

test('leader crash during a QoS 1 stream: the broker redelivers to the new leader, nothing is lost, nothing duplicated', async (t) => {
  const scope = withScope(t);
  let proxy: AckSwallowingProxy | undefined;
  const { broker, hosts } = await startMqttCluster({
    scope,
    hosts: 2,
    workers: 1,
    brokerConfig: [`max_inflight_messages ${INFLIGHT}`],
    brokerUrl: async (b) => {
      proxy = await startAckSwallowingProxy(scope, b);
      return proxy.url;
    },
  });
  assert.ok(proxy);
  const leader = await waitMqttLeader(hosts);
  const survivor = hosts.find((h) => h !== leader);
  assert.ok(survivor);
  const followers = [
    await connectFollower(scope, survivor, USERS[0], ['websocket']),
    await connectFollower(scope, survivor, USERS[1], ['polling']),
  ];
  for (const f of followers) assert.equal(await subscribeRoom(f, 'sensor:42'), true);
  const pub = await broker.client();
  const send = (from: number, to: number): Promise<void[]> => {
    const all: Promise<void>[] = [];
    for (let seq = from; seq <= to; seq++) all.push(publishMqtt(pub, statusTopic(42), JSON.stringify({ seq, sensor: '42' })));
    return Promise.all(all);
  };

  await send(1, 100);
  for (const f of followers) await f.rec.waitForCount(STATUS_EVENT, 100, undefined, 20_000);
  // The acknowledgements of 1-100 reach the broker before the cut (the clients can have an
  // event before its PUBACK has passed the proxy; cut then, the broker would hand those out again).
  await proxy.acknowledged(100);
  // From here the leader's PUBACKs are lost: the broker keeps its window of messages in flight.
  proxy.swallowClientBytes();
  await send(101, 150);
  for (const f of followers) await f.rec.waitForCount(STATUS_EVENT, 100 + INFLIGHT, undefined, 20_000);
  await leader.kill();
  await send(151, 200);

  const next = await waitMqttLeader([survivor]);
  assert.equal(next, survivor);
  await send(201, 201);
  const expected = Array.from({ length: 201 }, (_, i) => i + 1);
  for (const f of followers) {
    await f.rec.waitFor(STATUS_EVENT, (p) => seqOf(p) === 201, 30_000);
    assert.deepEqual(f.rec.payloads(STATUS_EVENT).map(seqOf), expected, `${f.user}: every message once, in order`);
  }
  const duplicates = await survivor.metricValue('gateway_mqtt_messages_total', { result: 'duplicate' });
  const deferred = await survivor.metricValue('gateway_leader_takeovers_deferred_total');
  const transitions = await survivor.metricValue('gateway_leader_transitions_total');
  logDiagnostic(t, 'redeliveries recognised by the new leader', { duplicates, deferred, transitions });
  // Exactly the broker's window came again: 1-100 were acknowledged before the cut, the old
  // leader published 101-110 (the clients had them) and could acknowledge none, and with no
  // PUBACK reaching it the broker sends nothing beyond its window. Up to 86 were seen before the
  // test waited for the acknowledgements of 1-100 to reach the broker: its cut then took some of
  // them (docs/mqtt.md, "Exactly once"). What the clients see is asserted above either way.
  assert.equal(duplicates, INFLIGHT, 'the unacknowledged window came again and was recognised, nothing more');
});
