/**
 * mqtt: MQTT messages per second through one host to dashboards (default
 * 1,000 clients over 100 sensor rooms of 10), stepped over rates, side by
 * side with the same load published on the Redis `events` channel. A step is
 * sustained when every run lost nothing and kept p99 <= --p99Limit (50 ms).
 *
 * The MQTT rule maps `bench/<room>/<event>` to room `doc:BenchDoc/<room>`,
 * so the load generators' doc_subscribe joins the rooms (the permission
 * check is the same as subscribe_room's) and the payload is the bench
 * payload `{"s": seq, "t": publishedAtMs}` the generators time.
 */
import { performance } from 'node:perf_hooks';
import { connect, type MqttClient } from 'mqtt';
import { startMosquitto, type MosquittoServer } from '../../test/harness/mosquitto';
import { docRooms, flagList, flagNumber, fmt, makeClients, measure, printTable, startEnv, type Flags, type RunResult } from '../lib/common';
import { nowMs } from '../lib/frames';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import { SITE, sleep, startGatewayTarget, type Target } from '../lib/topology';

const ROOM_SIZE = 10;

interface MqttRun {
  valid: boolean;
  invalid: string[];
  rate: number;
  sent: number;
  expected: number;
  deliveries: number;
  lost: number;
  achievedRate: number;
  latencyMs: { p50: number; p99: number; max: number };
}

async function mqttClient(broker: MosquittoServer): Promise<MqttClient> {
  const c = connect(broker.url, { reconnectPeriod: 0, clientId: `bench-pub-${process.pid}` });
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve());
    c.once('error', reject);
  });
  return c;
}

/** Publishes to every room at `rate` messages/s in 5 ms ticks, QoS 1, then waits for the broker's acknowledgements. */
async function publishMqtt(
  c: MqttClient,
  rooms: number,
  event: string,
  rate: number,
  durationMs: number,
): Promise<{ sent: number; sendMs: number }> {
  const t0 = performance.now();
  let sent = 0;
  const acks: Promise<unknown>[] = [];
  while (performance.now() - t0 < durationMs) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    while (sent < due) {
      const payload = `{"s":${sent},"t":${nowMs()}}`;
      acks.push(c.publishAsync(`bench/d${sent % rooms}/${event}`, payload, { qos: 1 }));
      sent++;
    }
    await sleep(5);
  }
  const sendMs = performance.now() - t0;
  await Promise.all(acks);
  return { sent, sendMs };
}

async function measureMqtt(
  target: Target,
  loadgen: LoadGen,
  c: MqttClient,
  rooms: number,
  rate: number,
  durationMs: number,
): Promise<MqttRun> {
  await loadgen.window();
  const pub = await publishMqtt(c, rooms, 'bench', rate, durationMs);
  const expected = pub.sent * ROOM_SIZE;
  let rep = await loadgen.report();
  let last = rep.deliveries;
  let still = performance.now();
  const deadline = performance.now() + 15_000;
  while (rep.deliveries < expected && performance.now() < deadline && performance.now() - still < 1000) {
    await sleep(100);
    rep = await loadgen.report();
    if (rep.deliveries !== last) {
      last = rep.deliveries;
      still = performance.now();
    }
  }
  const invalid: string[] = [];
  if (rep.saturated) invalid.push(`load generator saturated (${rep.cpuFractions.map((f) => `${Math.round(f * 100)}%`).join(', ')})`);
  const achievedRate = pub.sent / (pub.sendMs / 1000);
  if (achievedRate < rate * 0.95) invalid.push(`publisher achieved ${Math.round(achievedRate)}/s of ${rate}/s`);
  void target;
  return {
    valid: invalid.length === 0,
    invalid,
    rate,
    sent: pub.sent,
    expected,
    deliveries: rep.deliveries,
    lost: Math.max(0, expected - rep.deliveries),
    achievedRate,
    latencyMs: { p50: rep.hist.percentile(50), p99: rep.hist.percentile(99), max: rep.hist.max },
  };
}

/** Warm markers through MQTT until every client saw one: subscriptions (and the broker's) are in place. */
async function warmUpMqtt(loadgen: LoadGen, c: MqttClient, rooms: number, clients: number): Promise<void> {
  await loadgen.window();
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    await Promise.all(Array.from({ length: rooms }, (_, k) => c.publishAsync(`bench/d${k}/warm`, '{}', { qos: 1 })));
    await sleep(300);
    if ((await loadgen.report()).warm >= clients) return;
  }
  throw new Error('mqtt warm-up: not every client received a marker');
}

export async function mqtt(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const workers = flagNumber(flags, 'workers', 2);
  const rates = flagList(flags, 'rates', ['500', '1000', '2000', '3000', '4000']).map(Number);
  const p99Limit = flagNumber(flags, 'p99Limit', 50);
  const rooms = Math.ceil(n / ROOM_SIZE);
  const env = await startEnv();
  // The broker's default window of 20 unacknowledged QoS 1 messages per client caps the rate at 20 per round trip (docs/mqtt.md).
  const broker = await startMosquitto({ extraConfig: [`max_inflight_messages ${flagNumber(flags, 'inflight', 1000)}`] });
  const rules = [{ name: 'bench', topic: 'bench/+/+', site: SITE, room: 'doc:BenchDoc/{2}', event: '{3}' }];
  const target = await startGatewayTarget({
    fake: env.fake,
    redis: env.redis,
    workers,
    // Every generated client comes from 127.0.0.1.
    env: { GATEWAY_MQTT_URL: broker.url, GATEWAY_MQTT_RULES: JSON.stringify(rules), GATEWAY_MAX_CONNECTIONS_PER_IP: '0' },
  });
  const loadgen = await LoadGen.start(flags.loadgens);
  const publisher = await Publisher.start();
  const pubClient = await mqttClient(broker);
  const steps: { rate: number; mqtt: MqttRun[]; events: RunResult[] }[] = [];
  try {
    const c = await loadgen.connect({
      url: target.url,
      site: SITE,
      origin: target.origin,
      clients: makeClients(env, n, { docRoomSize: ROOM_SIZE }),
      ratePerSec: 2000,
    });
    if (c.connected !== n) throw new Error(`only ${c.connected}/${n} connected: ${JSON.stringify(c.errors)}`);
    await warmUpMqtt(loadgen, pubClient, rooms, n);
    for (const rate of rates) {
      const step = { rate, mqtt: [] as MqttRun[], events: [] as RunResult[] };
      for (let i = 0; i < flags.runs; i++) {
        const m = await measureMqtt(target, loadgen, pubClient, rooms, rate, flags.durationMs);
        step.mqtt.push(m);
        await sleep(1000);
        const e = await measure({
          target,
          loadgen,
          publisher,
          redis: env.redis,
          rate,
          durationMs: flags.durationMs,
          rooms: docRooms(n, ROOM_SIZE),
          perEvent: ROOM_SIZE,
        });
        step.events.push(e);
        console.error(
          `[mqtt] ${rate}/s run ${i + 1}: mqtt lost ${m.lost}, p99 ${fmt(m.latencyMs.p99, 1)} ms${m.valid ? '' : ` INVALID: ${m.invalid.join('; ')}`}; events lost ${e.lost}, p99 ${fmt(e.latencyMs.p99, 1)} ms${e.valid ? '' : ` INVALID: ${e.invalid.join('; ')}`}`,
        );
        await sleep(1000);
      }
      steps.push(step);
      const mqttOk = step.mqtt.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit);
      const eventsOk = step.events.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit);
      if (!mqttOk && !eventsOk) break;
    }
  } finally {
    pubClient.end(true);
    await loadgen.close();
    publisher.close();
    await target.close();
    await broker.close();
    await env.close();
  }
  const worst = <T>(runs: T[], pick: (r: T) => number): number => Math.max(...runs.map(pick));
  const rows = steps.map((s) => [
    `${s.rate}/s`,
    String(s.mqtt.reduce((a, r) => a + r.lost, 0)),
    fmt(
      worst(s.mqtt, (r) => r.latencyMs.p50),
      1,
    ),
    fmt(
      worst(s.mqtt, (r) => r.latencyMs.p99),
      1,
    ),
    s.mqtt.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit) ? 'yes' : 'no',
    String(s.events.reduce((a, r) => a + r.lost, 0)),
    fmt(
      worst(s.events, (r) => r.latencyMs.p50),
      1,
    ),
    fmt(
      worst(s.events, (r) => r.latencyMs.p99),
      1,
    ),
    s.events.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit) ? 'yes' : 'no',
  ]);
  printTable(
    `mqtt: ${n} clients in ${rooms} rooms of ${ROOM_SIZE}, one host with ${workers} workers, ${flags.durationMs / 1000} s per run, worst of ${flags.runs} runs; sustained = 0 lost and p99 <= ${p99Limit} ms`,
    [
      'messages/s',
      'mqtt lost',
      'mqtt p50 ms',
      'mqtt p99 ms',
      'mqtt sustained',
      'events lost',
      'events p50 ms',
      'events p99 ms',
      'events sustained',
    ],
    rows,
  );
  const best = (ok: (s: (typeof steps)[number]) => boolean): number => Math.max(0, ...steps.filter(ok).map((s) => s.rate));
  return {
    clients: n,
    rooms,
    workers,
    p99Limit,
    sustainedMqtt: best((s) => s.mqtt.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit)),
    sustainedEvents: best((s) => s.events.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit)),
    steps,
  };
}
