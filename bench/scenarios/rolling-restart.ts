/**
 * rolling-restart: two hosts (1 worker each) sharing Redis, K real
 * socket.io-client clients split between them, events flowing to their user
 * rooms; each host in turn is SIGTERMed (drain, leader hand-over) and started
 * again on the same ports. Clients reconnect to the host they were on (no load
 * balancer in the rig), so they wait for its restart. Reports clients never
 * back, reconnect p95, lost and duplicated events.
 */
import { flagList, flagNumber, fmt, fmtSpread, makeClients, printTable, startEnv, userRooms, type Flags } from '../lib/common';
import { Publisher } from '../lib/publisher';
import { summarizeDelivery, type DeliverySummary } from '../lib/recovery-accounting';
import { SioClients } from '../lib/sio-clients';
import { percentile, spread } from '../lib/stats';
import { CHANNEL, SITE, sleep, startGatewayTarget, type Target } from '../lib/topology';
import { uniqueKeyPrefix } from '../../test/harness';

interface RollingRun extends DeliverySummary {
  history: string;
  sent: number;
  neverBack: number;
  reconnects: number;
  recovered: number;
  reconnectP95Ms: number;
  reconnectMaxMs: number;
  restartMs: number[];
  missedUpdates: Record<string, number>;
  publisherBehind: boolean;
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

export async function rollingRestart(flags: Flags): Promise<unknown> {
  const k = flags.clients;
  const perClientRate = flagNumber(flags, 'perClientRate', 0.5);
  const durationMs = flags['duration'] === undefined ? 40_000 : flags.durationMs;
  const pauseMs = flagNumber(flags, 'pause', 5) * 1000;
  const modes = flagList(flags, 'history', ['on']);
  const rate = k * perClientRate;
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(k);
  const specs = makeClients(env, k).map((c) => ({ sid: c.sid }));
  const half = Math.ceil(k / 2);
  const results: Record<string, RollingRun[]> = {};
  try {
    for (let run = 0; run < flags.runs; run++) {
      for (const history of modes) {
        const keyPrefix = uniqueKeyPrefix();
        const gwEnv = { GATEWAY_HISTORY: history, GATEWAY_MAX_CONNECTIONS_PER_USER: '0', GATEWAY_CLIENT_EVENTS_PER_SEC: '0' };
        const hosts: Target[] = [];
        for (const name of ['host-a', 'host-b'])
          hosts.push(await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: 1, keyPrefix, name, env: gwEnv }));
        const gens = [await SioClients.start(), await SioClients.start()];
        try {
          const parts = [specs.slice(0, half), specs.slice(half)];
          await Promise.all(
            gens.map(async (g, i) => {
              const h = hosts[i] as Target;
              const c = await g.send({
                type: 'connect',
                url: h.url,
                site: SITE,
                origin: h.origin,
                clients: parts[i] ?? [],
                reconnectionDelayMs: 1000,
                timeoutMs: 120_000,
              });
              if (c.connected !== (parts[i] ?? []).length) throw new Error(`${h.name}: only ${c.connected} connected`);
              await g.warmUp(h, rooms, (parts[i] ?? []).length, 120_000);
              await g.send({ type: 'reset' });
            }),
          );
          const pub = publisher.run({
            mode: 'redis',
            redisUrl: env.redis.url,
            channel: CHANNEL,
            rate,
            durationMs,
            targets: rooms,
            seqStart: 0,
            padBytes: 0,
          });
          const restartMs: number[] = [];
          for (let i = 0; i < hosts.length; i++) {
            await sleep(pauseMs);
            const old = hosts[i] as Target;
            const t0 = performance.now();
            await old.gateway?.stop(15_000);
            hosts[i] = await startGatewayTarget({
              fake: env.fake,
              redis: env.redis,
              workers: 1,
              keyPrefix,
              name: old.name,
              env: gwEnv,
              port: portOf(old.url),
              opsPort: portOf(old.gateway?.opsUrl ?? ''),
            });
            restartMs.push(performance.now() - t0);
            console.error(`[rolling-restart] ${old.name} back after ${fmt(restartMs[i] ?? NaN)} ms`);
          }
          const p = await pub;
          const waitAll = await Promise.all(gens.map((g) => g.send({ type: 'stop-jitter', timeoutMs: 30_000 })));
          const connected = waitAll.reduce((a, r) => a + r.connected, 0);
          // What history replays has arrived once the received count stops moving.
          let last = -1;
          for (let i = 0; i < 100; i++) {
            const now = (await Promise.all(gens.map((g) => g.send({ type: 'report', full: false })))).reduce((a, r) => a + r.received, 0);
            if (now === last || now >= p.sent) break;
            last = now;
            await sleep(1500);
          }
          const reps = await Promise.all(gens.map((g) => g.send({ type: 'report', full: true })));
          const reconnectMs = reps.flatMap((r) => r.reconnectMs);
          const missed: Record<string, number> = {};
          for (const r of reps) for (const [why, c] of Object.entries(r.missed)) missed[why] = (missed[why] ?? 0) + c;
          const r: RollingRun = {
            history,
            sent: p.sent,
            ...summarizeDelivery(
              reps.flatMap((x) => x.ledgers),
              p.sent,
            ),
            neverBack: k - connected,
            reconnects: reps.reduce((a, x) => a + x.reconnects, 0),
            recovered: reps.reduce((a, x) => a + x.recovered, 0),
            reconnectP95Ms: percentile(reconnectMs, 95),
            reconnectMaxMs: reconnectMs.length ? Math.max(...reconnectMs) : NaN,
            restartMs,
            missedUpdates: missed,
            publisherBehind: p.behind,
          };
          console.error(
            `[rolling-restart] history ${history} run ${run + 1}: never back ${r.neverBack}/${k}, reconnects ${r.reconnects} (recovered ${r.recovered}), reconnect p95 ${fmt(r.reconnectP95Ms)} ms, lost ${r.lost}, dup ${r.duplicates}, out-of-order ${r.outOfOrder} of ${r.expected}, missed-updates ${JSON.stringify(missed)}${p.behind ? ' PUBLISHER BEHIND' : ''}`,
          );
          (results[history] ??= []).push(r);
        } finally {
          for (const g of gens) g.close();
          for (const h of hosts) await h.close();
        }
      }
    }
  } finally {
    publisher.close();
    await env.close();
  }
  printTable(
    `rolling-restart: two hosts x 1 worker, ${k} socket.io-client clients (half per host), ${rate} events/s, SIGTERM + restart each host in turn, ${durationMs / 1000} s of events, median (min-max) of ${flags.runs} run(s)`,
    [
      'history',
      'never back',
      'reconnects',
      'recovered %',
      'reconnect p95 ms',
      'reconnect max ms',
      'lost',
      'duplicated',
      'out of order',
      'delivery %',
    ],
    Object.entries(results).map(([history, runs]) => [
      history,
      fmtSpread(spread(runs.map((r) => r.neverBack))),
      fmtSpread(spread(runs.map((r) => r.reconnects))),
      fmtSpread(spread(runs.map((r) => (r.recovered / Math.max(1, r.reconnects)) * 100))),
      fmtSpread(spread(runs.map((r) => r.reconnectP95Ms))),
      fmtSpread(spread(runs.map((r) => r.reconnectMaxMs))),
      fmtSpread(spread(runs.map((r) => r.lost))),
      fmtSpread(spread(runs.map((r) => r.duplicates))),
      fmtSpread(spread(runs.map((r) => r.outOfOrder))),
      fmtSpread(spread(runs.map((r) => r.overallRatio * 100)), 2),
    ]),
  );
  return { clients: k, rate, durationMs, results };
}
