/**
 * Conflation for slow clients (docs/mqtt.md "Conflation"): a client that
 * stopped reading (a raw Engine.IO polling client that does not poll) gets
 * only the newest pending event of its `conflate` room once it reads again,
 * counted in gateway_conflated_events_total; its other room and the other
 * clients of the same room get every event.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withScope, type GatewayHandle } from '../harness';
import { sidOf } from './cluster-support';
import {
  connectFollower,
  machineTopic,
  MACHINE_EVENT,
  publishMqtt,
  seqOf,
  SITE,
  startMqttCluster,
  statusTopic,
  STATUS_EVENT,
  subscribeRoom,
  USERS,
  waitMqttLeader,
} from './mqtt-support';

const SENSOR_MESSAGES = 200;
const MACHINE_MESSAGES = 30;
const BACKLOG = 8;
const RS = '\x1e';

/** Engine.IO v4 long-polling by hand, so the test decides when the client reads. */
class RawPollingClient {
  private sid = '';
  readonly events: { event: string; payload: unknown }[] = [];
  private readonly acks = new Map<number, unknown[]>();

  constructor(
    private readonly gw: GatewayHandle,
    private readonly cookie: string,
  ) {}

  private url(): string {
    return `${this.gw.url}/socket.io/?EIO=4&transport=polling${this.sid ? `&sid=${this.sid}` : ''}`;
  }

  private headers(): Record<string, string> {
    return { Origin: this.gw.url, Cookie: `sid=${this.cookie}` };
  }

  async open(): Promise<void> {
    const body = await (await fetch(this.url(), { headers: this.headers() })).text();
    assert.equal(body[0], '0', `open packet, got ${body.slice(0, 80)}`);
    this.sid = (JSON.parse(body.slice(1)) as { sid: string }).sid;
    await this.send(`40/${SITE},`);
    const packets = await this.poll();
    assert.ok(
      packets.some((p) => p.startsWith(`40/${SITE},`)),
      `namespace connected, got ${packets.join(' | ').slice(0, 200)}`,
    );
  }

  async send(packet: string): Promise<void> {
    const res = await fetch(this.url(), { method: 'POST', headers: { ...this.headers(), 'Content-Type': 'text/plain' }, body: packet });
    assert.equal(res.status, 200, await res.text());
  }

  /** One GET: the packets the server had queued (or the next ones). */
  async poll(): Promise<string[]> {
    const body = await (await fetch(this.url(), { headers: this.headers() })).text();
    const packets = body.split(RS);
    for (const p of packets) {
      if (p === '2') await this.send('3');
      const m = new RegExp(`^4([23])/${SITE.replace(/\./g, '\\.')},(\\d*)(\\[.*)$`, 's').exec(p);
      if (!m) continue;
      const args = JSON.parse(m[3] ?? '[]') as unknown[];
      if (m[1] === '3') this.acks.set(Number(m[2]), args);
      else this.events.push({ event: String(args[0]), payload: args[1] });
    }
    return packets;
  }

  async emitWithAck(id: number, event: string, ...args: unknown[]): Promise<unknown[]> {
    await this.send(`42/${SITE},${id}${JSON.stringify([event, ...args])}`);
    while (!this.acks.has(id)) await this.poll();
    return this.acks.get(id) ?? [];
  }
}

test('a stalled client of a conflate room gets only the newest pending event; its other room and other clients get all', async (t) => {
  const scope = withScope(t);
  const { broker, hosts } = await startMqttCluster({
    scope,
    hosts: 1,
    workers: 1,
    env: {
      GATEWAY_CONFLATE_BACKLOG: String(BACKLOG),
      GATEWAY_CUSTOM_ROOMS: JSON.stringify([
        { pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', conflate: true },
        { pattern: 'machine:{id}', doctype: 'Machine', name: '{id}' },
      ]),
    },
  });
  const host = await waitMqttLeader(hosts);
  const fast = await connectFollower(scope, host, USERS[0], ['websocket']);
  assert.equal(await subscribeRoom(fast, 'sensor:42'), true);
  assert.equal(await subscribeRoom(fast, 'machine:7'), true);
  const slow = new RawPollingClient(host, sidOf(USERS[1]));
  await slow.open();
  assert.deepEqual(await slow.emitWithAck(0, 'subscribe_room', 'sensor:42'), [true]);
  assert.deepEqual(await slow.emitWithAck(1, 'subscribe_room', 'machine:7'), [true]);
  // From here the slow client does not poll: its queue grows on the server.

  const pub = await broker.client();
  const sends: Promise<void>[] = [];
  for (let seq = 1; seq <= SENSOR_MESSAGES; seq++) {
    sends.push(publishMqtt(pub, statusTopic(42), JSON.stringify({ seq, sensor: '42' })));
    if (seq % 5 === 0 && seq / 5 <= MACHINE_MESSAGES) sends.push(publishMqtt(pub, machineTopic(7), JSON.stringify({ seq: seq / 5 })));
  }
  await Promise.all(sends);
  // The fast client got everything: the worker has handled every broadcast.
  const fastSensor = await fast.rec.waitForCount(STATUS_EVENT, SENSOR_MESSAGES, undefined, 20_000);
  await fast.rec.waitForCount(MACHINE_EVENT, MACHINE_MESSAGES, undefined, 20_000);
  assert.deepEqual(
    fastSensor.map((r) => seqOf(r.args[0])),
    Array.from({ length: SENSOR_MESSAGES }, (_, i) => i + 1),
    'the reading client is unaffected',
  );
  const conflated = (await host.metricValue('gateway_conflated_events_total', { room_pattern: 'sensor:{id}' })) ?? 0;
  assert.ok(conflated > 0, 'events were conflated for the stalled client');

  // The slow client reads again.
  const sensorSeqs = (): number[] => slow.events.filter((e) => e.event === STATUS_EVENT).map((e) => seqOf(e.payload));
  while (!sensorSeqs().includes(SENSOR_MESSAGES)) await slow.poll();
  const got = sensorSeqs();
  assert.ok(
    got.every((s, i) => i === 0 || s > (got[i - 1] ?? 0)),
    `newer after older: ${got.join(',')}`,
  );
  assert.ok(got.length <= BACKLOG + 1, `at most the queue before the backlog plus the newest: got ${got.length}`);
  assert.equal(got.length + conflated, SENSOR_MESSAGES, 'every sensor event was either delivered or counted as conflated');
  const machine = slow.events.filter((e) => e.event === MACHINE_EVENT).map((e) => seqOf(e.payload));
  assert.deepEqual(
    machine,
    Array.from({ length: MACHINE_MESSAGES }, (_, i) => i + 1),
    'the room without conflate is delivered in full',
  );
});
