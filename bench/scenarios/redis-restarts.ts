/**
 * redis-restarts: heap and RSS of a 2-worker host across Redis restarts with
 * idle clients connected (`npm run bench -- redis-restarts --clients 100
 * --restarts 10`). After each restart, once the host is ready again and a
 * room event reaches a client, a full GC is forced in every process through
 * the inspector and heap used, external and RSS are recorded: a heap that
 * grows per restart is a leak, an RSS that grows over a flat heap is the
 * allocator.
 */
import { connectClient, EventRecorder, publishRedis, waitConnect, type GatewayHandle } from '../../test/harness';
import { collectAt, slope, startInspectedGateway } from '../../test/e2e/hardening-support';
import { flagNumber, makeClients, printTable, startEnv, type Flags } from '../lib/common';
import { SITE } from '../lib/topology';

export async function redisRestarts(flags: Flags): Promise<unknown> {
  const restarts = flagNumber(flags, 'restarts', 10);
  const env = await startEnv();
  const specs = makeClients(env, flags.clients, { prefix: 'rr' });
  let gw: GatewayHandle | undefined;
  const sockets: ReturnType<typeof connectClient>[] = [];
  try {
    const started = await startInspectedGateway({
      redisUrl: env.redis.url,
      workers: 2,
      backendUrl: env.fake.url,
      defaultSite: SITE,
      env: { GATEWAY_MAX_CONNECTIONS_PER_IP: '0', GATEWAY_CLIENT_EVENTS_PER_SEC: '0' },
    });
    gw = started.gw;
    const urls = started.urls;
    const g = gw as GatewayHandle;
    for (const s of specs) sockets.push(connectClient(g.url, SITE, { cookie: s.sid, transports: ['websocket'] }));
    await Promise.all(sockets.map((s) => waitConnect(s, 30_000)));
    const probe = sockets[0];
    if (!probe) throw new Error('--clients must be at least 1');
    const rec = new EventRecorder(probe);
    const pub = env.redis.client();
    const delivered = async (n: number): Promise<void> => {
      // Re-published until it arrives: the workers' adapter subscriptions come back a moment after ready.
      for (let tries = 0; ; tries++) {
        await publishRedis(pub, 'events', { event: 'rr_probe', message: { n }, namespace: SITE, room: `user:${specs[0]?.sid.slice(2)}` });
        try {
          await rec.waitFor('rr_probe', (p) => (p as { n: number }).n === n, 1000);
          return;
        } catch (err) {
          if (tries >= 30) throw err;
        }
      }
    };
    await delivered(0);
    const samples: { heap: number[]; external: number[]; rss: number[] }[] = [];
    const sample = async (): Promise<void> => {
      const m = await collectAt(urls);
      samples.push({ heap: m.map((x) => x.heapUsed), external: m.map((x) => x.external), rss: m.map((x) => x.rss) });
      const last = samples[samples.length - 1];
      console.log(
        `restart ${samples.length - 1}: heap MB ${last?.heap.map((h) => h.toFixed(2)).join(', ')}; RSS MB ${last?.rss.map((h) => h.toFixed(0)).join(', ')}`,
      );
    };
    await sample();
    for (let r = 1; r <= restarts; r++) {
      await env.redis.restart();
      await g.ready(60_000);
      await delivered(r);
      await sample();
    }
    const connected = sockets.filter((s) => s.connected).length;
    const roles = ['primary', 'worker 1', 'worker 2'];
    const rows = roles.map((role, i) => {
      const heap = samples.map((s) => s.heap[i] ?? NaN);
      const rss = samples.map((s) => s.rss[i] ?? NaN);
      // The first restart warms up reconnect code paths: the slope is over restarts 1..N.
      return [
        role,
        `${heap[0]?.toFixed(2)} -> ${heap[1]?.toFixed(2)} -> ${heap[heap.length - 1]?.toFixed(2)}`,
        (slope(heap.slice(1)) * 1024).toFixed(0),
        `${rss[0]?.toFixed(0)} -> ${rss[rss.length - 1]?.toFixed(0)}`,
        slope(rss.slice(1)).toFixed(2),
      ];
    });
    printTable(
      `redis-restarts: ${flags.clients} idle clients, ${restarts} Redis restarts, forced GC after each (${connected} still connected)`,
      ['process', 'heap MB start -> 1st -> last', 'heap slope kB/restart', 'RSS MB start -> last', 'RSS slope MB/restart'],
      rows,
    );
    return { restarts, clients: flags.clients, connected, samples };
  } finally {
    for (const s of sockets) s.disconnect();
    await gw?.close();
    await env.close();
  }
}
