/**
 * rolling-restart: H hosts (1 worker each, default 2) sharing Redis behind a
 * TCP load balancer (bench/lib/balancer.ts: round robin, readiness-aware,
 * not sticky: the clients are websocket-only), K real socket.io-client
 * clients connected through it, events flowing to their user rooms. Every
 * host in turn: SIGTERM (or SIGKILL with --kill) -> drain -> exit -> start
 * again on the same ports -> ready -> settle -> next host. A host's clients
 * reconnect through the balancer to a surviving host. Reconnect time per
 * client = from its `disconnect` to its next `connect` (recovered or not).
 *
 * Flags: --clients N (1000), --hosts H (2), --history on,off (on), --kill,
 * --drain MS (the gateway's default GATEWAY_DRAIN_MS, 10000), --pause S
 * (settle after ready and before the first restart, 5), --perClientRate
 * (0.5 events/s per client), --readyPoll MS (1000), --duration S (default:
 * long enough for the whole roll), --reconnectionDelay MS (default: the
 * client library's own defaults), --drainRate N (GATEWAY_DRAIN_RATE, 0),
 * --admission RATE/BURST (GATEWAY_ADMISSION_RATE/_BURST; default off, as in
 * every capacity scenario; `default` = the gateway's defaults).
 */
import { OPTIONS } from '../../src/config/schema';
import {
  flagList,
  flagNumber,
  fmt,
  fmtSpread,
  makeClients,
  printTable,
  startEnv,
  userRooms,
  type BenchEnv,
  type Flags,
} from '../lib/common';
import { BalancerProcess, type BalancerStats } from '../lib/balancer';
import { Publisher } from '../lib/publisher';
import {
  p95BySecond,
  reconnectsByPhase,
  summarizeDelivery,
  summarizeReconnects,
  type DeliverySummary,
  type ReconnectSummary,
} from '../lib/recovery-accounting';
import { SioClients } from '../lib/sio-clients';
import { spread } from '../lib/stats';
import { CHANNEL, SITE, sleep, startGatewayTarget, type Target } from '../lib/topology';
import { parsePrometheusText, uniqueKeyPrefix } from '../../test/harness';
import os from 'node:os';

interface RestartStep {
  host: string;
  signal: 'SIGTERM' | 'SIGKILL';
  /** ms after the step began (the signal) */
  exitedMs: number;
  readyMs: number;
  reconnects: ReconnectSummary;
  /** p95 of the handshake alone, per second after the signal, by when the client lost its connection (queueing shows as growth). */
  handshakeP95BySecond: number[];
}

interface RollingRun extends DeliverySummary {
  history: string;
  signal: 'SIGTERM' | 'SIGKILL';
  sent: number;
  neverBack: number;
  reconnects: number;
  recovered: number;
  connectErrors: number;
  reconnect: ReconnectSummary;
  /** The successful attempt alone (after the backoff wait): what the surviving host's handshake rate costs. */
  handshake: ReconnectSummary;
  steps: RestartStep[];
  strayReconnects: ReconnectSummary;
  /** Worst nodejs_eventloop_lag_max_seconds (ms) any host reported during the roll, sampled each second. */
  maxEventLoopLagMs: number;
  maxConnectionsPerHost: number;
  balancer: BalancerStats;
  missedUpdates: Record<string, number>;
  /** Gateway counters summed over every host lifetime (read just before each signal and at the end). */
  gatewayCounters: Record<string, number>;
  publisherBehind: boolean;
  loadavg: number[];
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

/** Polls every live host's /metrics once a second: worst event-loop lag and most connections on one host. */
function startSampler(hosts: () => Target[]): { stop(): Promise<{ lagMs: number; conns: number }> } {
  let lagMs = 0;
  let conns = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      await Promise.all(
        hosts().map(async (h) => {
          try {
            const lag = await h.gateway?.metricValue('nodejs_eventloop_lag_max_seconds');
            const c = await h.gateway?.metricValue('gateway_connections');
            if (lag !== undefined) lagMs = Math.max(lagMs, lag * 1000);
            if (c !== undefined) conns = Math.max(conns, c);
          } catch {
            // a host that is restarting answers nothing
          }
        }),
      );
      await sleep(1000);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { lagMs, conns };
    },
  };
}

/** Gateway counters that explain a slow or refused reconnection, by label. */
const COUNTERS: [string, string][] = [
  ['gateway_connect_errors_total', 'reason'],
  ['gateway_limit_exceeded_total', 'limit'],
  ['gateway_session_recoveries_total', 'result'],
  ['gateway_auth_requests_total', 'result'],
  // Time spent in backend calls (sum over all of them) and their count: the mean backend latency.
  ['gateway_backend_request_duration_seconds_sum', 'endpoint'],
  ['gateway_backend_request_duration_seconds_count', 'endpoint'],
];

/** Adds a host's counters (cumulative since it started) to `into`, as `metric{label}`; a host that does not answer adds nothing. */
async function addCounters(h: Target, into: Record<string, number>): Promise<void> {
  let text: string;
  try {
    text = (await h.gateway?.metrics()) ?? '';
  } catch {
    return;
  }
  for (const x of parsePrometheusText(text)) {
    const c = COUNTERS.find(([name]) => name === x.name);
    if (!c) continue;
    const key = `${x.name.replace(/^gateway_|_total$/g, '')}{${x.labels[c[1]] ?? ''}}`;
    if (x.value === 0) continue;
    into[key] = (into[key] ?? 0) + x.value;
  }
}

async function startHost(env: BenchEnv, keyPrefix: string, name: string, gwEnv: Record<string, string>, old?: Target): Promise<Target> {
  return startGatewayTarget({
    fake: env.fake,
    redis: env.redis,
    workers: 1,
    keyPrefix,
    name,
    env: gwEnv,
    ...(old ? { port: portOf(old.url), opsPort: portOf(old.gateway?.opsUrl ?? '') } : {}),
  });
}

export async function rollingRestart(flags: Flags): Promise<unknown> {
  const k = flags.clients;
  const hostCount = Math.max(2, flagNumber(flags, 'hosts', 2));
  const perClientRate = flagNumber(flags, 'perClientRate', 0.5);
  const pauseMs = flagNumber(flags, 'pause', 5) * 1000;
  const drainMs = flagNumber(flags, 'drain', 10_000);
  const readyPollMs = flagNumber(flags, 'readyPoll', 1000);
  const drainRate = flagNumber(flags, 'drainRate', 0);
  const admission = typeof flags['admission'] === 'string' ? flags['admission'] : 'off';
  const admissionEnv: Record<string, string> =
    admission === 'off'
      ? {}
      : admission === 'default'
        ? { GATEWAY_ADMISSION_RATE: OPTIONS.admissionRate.default ?? '0', GATEWAY_ADMISSION_BURST: OPTIONS.admissionBurst.default ?? '0' }
        : { GATEWAY_ADMISSION_RATE: admission.split('/')[0] ?? '0', GATEWAY_ADMISSION_BURST: admission.split('/')[1] ?? '0' };
  const signal = flags['kill'] === undefined ? 'SIGTERM' : 'SIGKILL';
  const reconnectionDelayMs = flags['reconnectionDelay'] === undefined ? undefined : flagNumber(flags, 'reconnectionDelay', 1000);
  const modes = flagList(flags, 'history', ['on']);
  // Events for the whole roll: per host the drain, ~8 s to exit and come back, the settle pause; then a last pause.
  const durationMs = flags['duration'] === undefined ? pauseMs + hostCount * (drainMs + 8000 + pauseMs) : flags.durationMs;
  const rate = k * perClientRate;
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(k);
  const specs = makeClients(env, k).map((c) => ({ sid: c.sid }));
  const generators = 2;
  const per = Math.ceil(k / generators);
  const results: Record<string, RollingRun[]> = {};
  try {
    for (let run = 0; run < flags.runs; run++) {
      for (const history of modes) {
        const keyPrefix = uniqueKeyPrefix();
        const gwEnv = {
          GATEWAY_HISTORY: history,
          GATEWAY_MAX_CONNECTIONS_PER_USER: '0',
          GATEWAY_CLIENT_EVENTS_PER_SEC: '0',
          GATEWAY_DRAIN_MS: String(drainMs),
          GATEWAY_DRAIN_RATE: String(drainRate),
          ...admissionEnv,
          // The gateway's default: the drain must fit in it (the bench topology's 5 s would cut a 10 s drain short).
          GATEWAY_SHUTDOWN_GRACE_MS: String(Math.max(30_000, drainMs + 10_000)),
        };
        const hosts: Target[] = [];
        for (let h = 0; h < hostCount; h++) hosts.push(await startHost(env, keyPrefix, `host-${String.fromCharCode(97 + h)}`, gwEnv));
        const lb = await BalancerProcess.start({
          backends: hosts.map((h) => ({
            host: '127.0.0.1',
            port: portOf(h.url),
            readyUrl: `${h.gateway?.opsUrl ?? ''}/readyz`,
          })),
          readyPollMs,
        });
        const gens = await Promise.all(Array.from({ length: generators }, () => SioClients.start()));
        try {
          const parts = gens.map((_, i) => specs.slice(i * per, (i + 1) * per));
          const first = hosts[0] as Target;
          await Promise.all(
            gens.map(async (g, i) => {
              const part = parts[i] ?? [];
              const c = await g.send({
                type: 'connect',
                url: lb.url,
                site: SITE,
                origin: first.origin,
                clients: part,
                ...(reconnectionDelayMs === undefined ? {} : { reconnectionDelayMs }),
                timeoutMs: 180_000,
              });
              if (c.connected !== part.length) throw new Error(`generator ${i}: only ${c.connected} connected`);
            }),
          );
          // Every client's room is joined (markers reach all of them) before anything is measured.
          await Promise.all(gens.map((g, i) => g.warmUp(first, rooms, (parts[i] ?? []).length, 180_000)));
          await Promise.all(gens.map((g) => g.send({ type: 'reset' })));
          const lb0 = await lb.stats();
          console.error(`[rolling-restart] ${k} clients up; per host ${lb0.backends.map((b) => b.active).join(' / ')}`);
          const sampler = startSampler(() => hosts);
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
          const counters: Record<string, number> = {};
          const stepStarts: number[] = [];
          const stepTimes: { exitedMs: number; readyMs: number }[] = [];
          await sleep(pauseMs);
          for (let i = 0; i < hosts.length; i++) {
            const old = hosts[i] as Target;
            await addCounters(old, counters);
            const t0 = performance.now();
            stepStarts.push(Date.now());
            if (signal === 'SIGKILL') await old.gateway?.kill();
            else await old.gateway?.stop(drainMs + 30_000);
            const exitedMs = performance.now() - t0;
            hosts[i] = await startHost(env, keyPrefix, old.name, gwEnv, old);
            const readyMs = performance.now() - t0;
            stepTimes.push({ exitedMs, readyMs });
            console.error(`[rolling-restart] ${old.name} ${signal}: exited after ${fmt(exitedMs)} ms, ready after ${fmt(readyMs)} ms`);
            await sleep(pauseMs);
          }
          const p = await pub;
          const lag = await sampler.stop();
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
          for (const h of hosts) await addCounters(h, counters);
          const reconnectMs = reps.flatMap((r) => r.reconnectMs);
          const reconnectAt = reps.flatMap((r) => r.reconnectAt);
          const handshakeMs = reps.flatMap((r) => r.handshakeMs);
          const byPhase = reconnectsByPhase(reconnectAt, reconnectMs, stepStarts);
          const missed: Record<string, number> = {};
          for (const r of reps) for (const [why, c] of Object.entries(r.missed)) missed[why] = (missed[why] ?? 0) + c;
          const r: RollingRun = {
            history,
            signal,
            sent: p.sent,
            ...summarizeDelivery(
              reps.flatMap((x) => x.ledgers),
              p.sent,
            ),
            neverBack: k - connected,
            reconnects: reps.reduce((a, x) => a + x.reconnects, 0),
            recovered: reps.reduce((a, x) => a + x.recovered, 0),
            connectErrors: reps.reduce((a, x) => a + x.connectErrors, 0),
            reconnect: summarizeReconnects(reconnectMs),
            handshake: summarizeReconnects(handshakeMs.filter((x) => Number.isFinite(x))),
            steps: stepTimes.map((t, i) => ({
              host: (hosts[i] as Target).name,
              signal,
              ...t,
              reconnects: byPhase.phases[i] as ReconnectSummary,
              handshakeP95BySecond: p95BySecond(reconnectAt, handshakeMs, stepStarts[i] as number, Math.ceil(t.exitedMs / 1000) + 2),
            })),
            strayReconnects: byPhase.before,
            maxEventLoopLagMs: lag.lagMs,
            maxConnectionsPerHost: lag.conns,
            balancer: await lb.stats(),
            missedUpdates: missed,
            gatewayCounters: counters,
            publisherBehind: p.behind,
            loadavg: os.loadavg(),
          };
          console.error(
            `[rolling-restart] ${signal} history ${history} run ${run + 1}: never back ${r.neverBack}/${k}, reconnects ${r.reconnects} (recovered ${r.recovered}, connect errors ${r.connectErrors}), reconnect p50/p95/max ${fmt(r.reconnect.p50)}/${fmt(r.reconnect.p95)}/${fmt(r.reconnect.max)} ms (handshake alone p50/p95 ${fmt(r.handshake.p50)}/${fmt(r.handshake.p95)} ms), per step p95 ${r.steps.map((s) => fmt(s.reconnects.p95)).join(' / ')} ms, lost ${r.lost}, dup ${r.duplicates}, out-of-order ${r.outOfOrder} of ${r.expected}, max loop lag ${fmt(r.maxEventLoopLagMs)} ms, load ${r.loadavg.map((x) => x.toFixed(2)).join(' ')}, missed-updates ${JSON.stringify(missed)}${p.behind ? ' PUBLISHER BEHIND' : ''}`,
          );
          console.error(`[rolling-restart]   gateway counters: ${JSON.stringify(counters)}`);
          for (const st of r.steps)
            console.error(
              `[rolling-restart]   ${st.host}: handshake p95 by second after ${signal}: ${st.handshakeP95BySecond.map((x) => fmt(x)).join(' ')}`,
            );
          (results[history] ??= []).push(r);
        } finally {
          for (const g of gens) g.close();
          lb.close();
          for (const h of hosts) await h.close();
        }
      }
    }
  } finally {
    publisher.close();
    await env.close();
  }
  const s = (runs: RollingRun[], pick: (r: RollingRun) => number, digits = 0): string => fmtSpread(spread(runs.map(pick)), digits);
  printTable(
    `rolling-restart: ${hostCount} hosts x 1 worker behind a TCP balancer, ${k} socket.io-client clients (websocket), ${rate} events/s, ${signal} + restart each host in turn (drain ${drainMs} ms, drain rate ${drainRate || 'off'}, admission ${admission}), ${durationMs / 1000} s of events, median (min-max) of ${flags.runs} run(s)`,
    [
      'signal',
      'history',
      'never back',
      'reconnects',
      'recovered %',
      'reconnect p50 ms',
      'reconnect p95 ms',
      'reconnect max ms',
      'handshake p95 ms',
      'lost',
      'duplicated',
      'out of order',
      'delivery %',
      'max loop lag ms',
      'load avg (1 min)',
    ],
    Object.entries(results).map(([history, runs]) => [
      signal,
      history,
      s(runs, (r) => r.neverBack),
      s(runs, (r) => r.reconnects),
      s(runs, (r) => (r.recovered / Math.max(1, r.reconnects)) * 100),
      s(runs, (r) => r.reconnect.p50),
      s(runs, (r) => r.reconnect.p95),
      s(runs, (r) => r.reconnect.max),
      s(runs, (r) => r.handshake.p95),
      s(runs, (r) => r.lost),
      s(runs, (r) => r.duplicates),
      s(runs, (r) => r.outOfOrder),
      s(runs, (r) => r.overallRatio * 100, 2),
      s(runs, (r) => r.maxEventLoopLagMs),
      s(runs, (r) => r.loadavg[0] ?? NaN, 1),
    ]),
  );
  return {
    clients: k,
    hosts: hostCount,
    signal,
    drainMs,
    drainRate,
    admission,
    rate,
    durationMs,
    readyPollMs,
    reconnectionDelayMs: reconnectionDelayMs ?? 'client default',
    results,
  };
}
