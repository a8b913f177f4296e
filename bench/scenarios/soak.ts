/**
 * soak: churn + junk + Redis restarts on a 2-worker host for `--duration`
 * seconds (`npm run bench -- soak --duration 120 --clients 200`), then the
 * checks of SECURITY.md: exact doc_viewers, no presence key left, ready,
 * drops counted, worker RSS against the first cycle's. Each cycle connects
 * `--clients` clients that open a document and leave (half abruptly), floods
 * `events` with 10,000 junk messages, and every third cycle restarts Redis.
 */
import type { Socket } from 'socket.io-client';
import { connectClient, EventRecorder, pollUntil, waitConnect } from '../../test/harness';
import { makeClients, printTable, startEnv, type Flags } from '../lib/common';
import { readStatus } from '../lib/proc';
import { SITE, startGatewayTarget } from '../lib/topology';

const DOCS = 20;
/** The bench target has no default site: the site comes from the header, as behind nginx. */
const SITE_HEADER = { 'X-Frappe-Site-Name': SITE };
const JUNK = 10_000;

const ack = (s: Socket, event: string, ...args: unknown[]): Promise<boolean> =>
  new Promise((resolve) => s.emit(event, ...args, (ok: boolean) => resolve(ok)));

function junk(cycle: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < JUNK; i++) {
    switch (i % 4) {
      case 0:
        out.push(`{"event":"x","message":${i}`);
        break;
      case 1:
        out.push(JSON.stringify({ event: 'junk', message: i, namespace: `junk-${cycle}-${i}.local`, room: `room-${i}` }));
        break;
      case 2:
        out.push(JSON.stringify({ event: 42, message: i, namespace: SITE }));
        break;
      default:
        out.push(JSON.stringify({ event: 'junk', message: i, namespace: SITE, room: `nobody-${cycle}-${i}` }));
    }
  }
  return out;
}

export async function soak(flags: Flags): Promise<unknown> {
  const env = await startEnv();
  const specs = makeClients(env, flags.clients, { prefix: 'soak', docRoomSize: 1 });
  for (const u of ['checka', 'checkb']) env.fake.addSession(`s.${u}`, { user: u, user_type: 'System User' });
  const t = await startGatewayTarget({
    fake: env.fake,
    redis: env.redis,
    workers: 2,
    env: { GATEWAY_MAX_CONNECTIONS_PER_IP: '0', GATEWAY_CLIENT_EVENTS_PER_SEC: '0', GATEWAY_STANDBY_BUFFER_MS: '5000' },
  });
  const gw = t.gateway;
  if (!gw) throw new Error('soak needs the gateway target');
  const pub = env.redis.client();
  const rows: string[][] = [];
  let firstRss: number[] | null = null;
  let cycles = 0;
  let restarts = 0;
  let connectFailures = 0;
  const deadline = Date.now() + flags.durationMs;
  try {
    while (Date.now() < deadline || cycles === 0) {
      cycles++;
      const sockets = specs.map((s) => connectClient(t.url, SITE, { cookie: s.sid, transports: ['websocket'], headers: SITE_HEADER }));
      const settled = await Promise.allSettled(sockets.map((s) => waitConnect(s, 30_000)));
      connectFailures += settled.filter((r) => r.status === 'rejected').length;
      await Promise.all(
        sockets.map(async (s, i) => {
          if (!s.connected) return;
          await ack(s, 'doc_open', 'BenchDoc', `d${i % DOCS}`);
          if (i % 2 === 0)
            (s.io.engine as unknown as { transport: { ws?: { _socket?: { destroy(): void } } } }).transport.ws?._socket?.destroy();
          else s.disconnect();
        }),
      );
      for (const s of sockets) s.disconnect();
      const pipe = pub.pipeline();
      for (const p of junk(cycles)) pipe.publish('events', p);
      await pipe.exec().catch(() => undefined);
      if (cycles % 3 === 0) {
        await env.redis.restart();
        restarts++;
        await gw.ready(60_000);
      }
      if (firstRss === null) firstRss = t.workerPids().map((p) => readStatus(p).rss);
    }
    // Checks, once everyone left.
    await pollUntil(
      async () =>
        ((await gw.cluster()) as { workers: { connections: number }[] }).workers.every((w) => w.connections === 0) ? true : undefined,
      {
        timeoutMs: 30_000,
        intervalMs: 200,
        description: 'every connection closed',
      },
    );
    const presence = async (): Promise<number> => (await pub.keys(`${gw.keyPrefix}:presence*`)).length;
    const left = await pollUntil(async () => ((await presence()) === 0 ? 0 : undefined), {
      timeoutMs: 15_000,
      intervalMs: 200,
      description: 'no presence keys',
    }).catch(async () => presence());
    let ghosts = 0;
    for (let d = 0; d < DOCS; d++) {
      const a = connectClient(t.url, SITE, { cookie: 's.checka', transports: ['websocket'], headers: SITE_HEADER });
      const b = connectClient(t.url, SITE, { cookie: 's.checkb', transports: ['websocket'], headers: SITE_HEADER });
      await Promise.all([waitConnect(a, 20_000), waitConnect(b, 20_000)]);
      const rec = new EventRecorder(a);
      await ack(a, 'doc_open', 'BenchDoc', `d${d}`);
      await ack(b, 'doc_open', 'BenchDoc', `d${d}`);
      const v = (await rec.waitFor('doc_viewers', (p) => (p as { users: string[] }).users.includes('checkb'), 10_000)) as {
        users: string[];
      };
      if (JSON.stringify(v.users) !== JSON.stringify(['checka', 'checkb'])) ghosts++;
      a.disconnect();
      b.disconnect();
    }
    const lastRss = t.workerPids().map((p) => readStatus(p).rss);
    const ready = (await gw.readyz()).status === 200;
    const dropped = (await gw.metricValue('gateway_events_dropped_total')) ?? 0;
    const lost = (await gw.metricValue('gateway_events_subscription_lost_total')) ?? 0;
    const mb = (xs: number[] | null): string => (xs ?? []).map((x) => (x / 1024 / 1024).toFixed(0)).join('/');
    const check = (ok: boolean): string => (ok ? 'ok' : 'FAIL');
    rows.push(['cycles / Redis restarts', `${cycles} / ${restarts}`, '']);
    rows.push(['ready at the end', String(ready), check(ready)]);
    rows.push(['churn connections that failed (Redis restarts)', String(connectFailures), '']);
    rows.push(['documents with wrong doc_viewers', `${ghosts} of ${DOCS}`, check(ghosts === 0)]);
    rows.push(['presence keys left', String(left), check(left === 0)]);
    rows.push(['junk dropped (counted)', String(dropped), check(dropped >= (cycles * JUNK) / 2)]);
    rows.push(['events subscription losses', String(lost), '']);
    const grown = (firstRss ?? []).some((r, i) => (lastRss[i] ?? 0) > r * 1.2);
    rows.push(['worker RSS MB first cycle -> end', `${mb(firstRss)} -> ${mb(lastRss)}`, check(!grown)]);
    printTable(
      `soak: ${flags.clients} clients x ${cycles} cycles, ${JUNK} junk each, Redis restarted every 3rd cycle`,
      ['check', 'value', ''],
      rows,
    );
    return { cycles, restarts, connectFailures, ready, ghosts, presenceKeysLeft: left, dropped, subscriptionLost: lost, firstRss, lastRss };
  } finally {
    await t.close();
    await env.close();
  }
}
