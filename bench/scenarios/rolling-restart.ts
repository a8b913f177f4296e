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
 * --admission A,B,... (admission settings run alternately within each run:
 * `off` (the default, as in every capacity scenario), `default` (the
 * gateway's defaults), `RATE/BURST` (the host bucket alone), `cN` (N
 * handshakes in flight per worker alone, refused at once when all are
 * taken), `qN` (up to N handshakes per host wait for a slot instead,
 * GATEWAY_ADMISSION_QUEUE), `wMS` (for up to MS, GATEWAY_ADMISSION_QUEUE_MS;
 * default: the gateway's), joined by `+`, e.g. `1000/2000+c64+q1000+w2000`).
 *
 * Per step it also reports the latency of the clients that stayed connected
 * through it (those on the surviving host: what admission protects), over
 * the events published from 3 s after the signal (after a leader fail-over,
 * ~1.5 s lease) to the next step, and how many events were lost by clients
 * that were never told (rtg_missed_updates).
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
import type { WindowLatency } from '../lib/sio-clients-protocol';
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
  /** Clients connected all through the step (the surviving host's): from the signal, and from ESTABLISHED_SKIP_MS after it. */
  established: WindowLatency;
  establishedAfterFailover: WindowLatency;
}

interface RollingRun extends DeliverySummary {
  history: string;
  admission: string;
  /** Events lost by clients that are connected at the end and never got rtg_missed_updates, and how many such clients. */
  lostUntold: number;
  clientsLostUntold: number;
  untoldSample: { client: number; lost: number; recovered: number; missing: number[] }[];
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

/** Events published in the first seconds after a SIGKILL wait for the leader's fail-over (lease 1.5 s), whatever admission does. */
const ESTABLISHED_SKIP_MS = 3000;

/** GATEWAY_ADMISSION_* for one `--admission` setting (see the header). */
export function admissionEnv(setting: string): Record<string, string> {
  if (setting === 'default') {
    return {
      GATEWAY_ADMISSION_RATE: OPTIONS.admissionRate.default ?? '0',
      GATEWAY_ADMISSION_BURST: OPTIONS.admissionBurst.default ?? '1',
      GATEWAY_ADMISSION_CONCURRENCY: OPTIONS.admissionConcurrency.default ?? '0',
      GATEWAY_ADMISSION_QUEUE: OPTIONS.admissionQueue.default ?? '0',
      GATEWAY_ADMISSION_QUEUE_MS: OPTIONS.admissionQueueMs.default ?? '0',
    };
  }
  const env: Record<string, string> = {
    GATEWAY_ADMISSION_RATE: '0',
    GATEWAY_ADMISSION_CONCURRENCY: '0',
    GATEWAY_ADMISSION_QUEUE: '0',
    GATEWAY_ADMISSION_QUEUE_MS: OPTIONS.admissionQueueMs.default ?? '0',
  };
  if (setting === 'off') return env;
  for (const part of setting.split('+')) {
    if (part.startsWith('c')) env['GATEWAY_ADMISSION_CONCURRENCY'] = part.slice(1);
    else if (part.startsWith('q')) env['GATEWAY_ADMISSION_QUEUE'] = part.slice(1);
    else if (part.startsWith('w')) env['GATEWAY_ADMISSION_QUEUE_MS'] = part.slice(1);
    else {
      const [rate = '0', burst = '1'] = part.split('/');
      env['GATEWAY_ADMISSION_RATE'] = rate;
      env['GATEWAY_ADMISSION_BURST'] = burst;
    }
  }
  return env;
}

/** Lost events of clients that were never told they missed updates (a recovery bug, if any). */
function untold(
  reps: { ledgers: { seqs: number[] }[]; told: number[]; recoveredPer: number[]; connectedPer?: boolean[] }[],
  sent: number,
): Pick<RollingRun, 'lostUntold' | 'clientsLostUntold' | 'untoldSample'> {
  const ledgers = reps.flatMap((r) => r.ledgers);
  const told = reps.flatMap((r) => r.told);
  const recoveredPer = reps.flatMap((r) => r.recoveredPer);
  const connected = reps.flatMap((r) => r.connectedPer ?? []);
  const n = ledgers.length;
  let lostUntold = 0;
  let clients = 0;
  const sample: RollingRun['untoldSample'] = [];
  ledgers.forEach((l, i) => {
    // Told, or not back (yet): only a client that came back and was never told is a silent loss.
    if ((told[i] ?? 0) > 0 || connected[i] === false) return;
    const seen = new Set(l.seqs);
    const missing: number[] = [];
    for (let s = i; s < sent; s += n) if (!seen.has(s)) missing.push(s);
    if (missing.length === 0) return;
    lostUntold += missing.length;
    clients++;
    if (sample.length < 20)
      sample.push({ client: i, lost: missing.length, recovered: recoveredPer[i] ?? 0, missing: missing.slice(0, 20) });
  });
  return { lostUntold, clientsLostUntold: clients, untoldSample: sample };
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
  // How waits for a handshake slot ended (GATEWAY_ADMISSION_QUEUE): admitted, expired (a 503), full (a 503 at once), closed.
  ['gateway_admission_queue_waits_total', 'result'],
  ['gateway_session_recoveries_total', 'result'],
  ['gateway_auth_requests_total', 'result'],
  // Time spent in backend calls (sum over all of them) and their count: the mean backend latency.
  ['gateway_backend_request_duration_seconds_sum', 'endpoint'],
  ['gateway_backend_request_duration_seconds_count', 'endpoint'],
  // The events leader's hand-over after a SIGKILL: events a new leader replayed from its standby buffer, and take-overs without alignment.
  ['gateway_leader_transitions_total', 'to'],
  ['gateway_replayed_events_total', ''],
  ['gateway_replay_unaligned_total', ''],
  // Take-overs left to a standby by a process that did not hold the dead leader's progress (subscribed after it died).
  ['gateway_leader_takeovers_deferred_total', ''],
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
  const admissions = flagList(flags, 'admission', ['off']);
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
      for (const mode of modes.flatMap((history) => admissions.map((admission) => ({ history, admission })))) {
        const { history, admission } = mode;
        const keyPrefix = uniqueKeyPrefix();
        const gwEnv = {
          GATEWAY_HISTORY: history,
          GATEWAY_MAX_CONNECTIONS_PER_USER: '0',
          GATEWAY_CLIENT_EVENTS_PER_SEC: '0',
          GATEWAY_DRAIN_MS: String(drainMs),
          GATEWAY_DRAIN_RATE: String(drainRate),
          ...admissionEnv(admission),
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
          const pubEnd = Date.now();
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
          // Per step: from the signal (and from ESTABLISHED_SKIP_MS after it) to the next step's signal.
          const windows = stepStarts.flatMap((from, i) => {
            const to = stepStarts[i + 1] ?? pubEnd;
            return [
              { from, to, eventsFrom: from },
              { from, to, eventsFrom: from + ESTABLISHED_SKIP_MS },
            ];
          });
          const lats = await Promise.all(gens.map((g) => g.send({ type: 'latency', windows })));
          const established = (w: number): WindowLatency => mergeLatency(lats.map((l) => l.latency?.[w]));
          for (const h of hosts) await addCounters(h, counters);
          const reconnectMs = reps.flatMap((r) => r.reconnectMs);
          const reconnectAt = reps.flatMap((r) => r.reconnectAt);
          const handshakeMs = reps.flatMap((r) => r.handshakeMs);
          const byPhase = reconnectsByPhase(reconnectAt, reconnectMs, stepStarts);
          const missed: Record<string, number> = {};
          for (const r of reps) for (const [why, c] of Object.entries(r.missed)) missed[why] = (missed[why] ?? 0) + c;
          const r: RollingRun = {
            history,
            admission,
            signal,
            ...untold(reps, p.sent),
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
              established: established(2 * i),
              establishedAfterFailover: established(2 * i + 1),
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
            `[rolling-restart] ${signal} history ${history} admission ${admission} run ${run + 1}: never back ${r.neverBack}/${k}, reconnects ${r.reconnects} (recovered ${r.recovered}, connect errors ${r.connectErrors}), reconnect p50/p95/max ${fmt(r.reconnect.p50)}/${fmt(r.reconnect.p95)}/${fmt(r.reconnect.max)} ms (handshake alone p50/p95 ${fmt(r.handshake.p50)}/${fmt(r.handshake.p95)} ms), per step p95 ${r.steps.map((s) => fmt(s.reconnects.p95)).join(' / ')} ms, lost ${r.lost}, dup ${r.duplicates}, out-of-order ${r.outOfOrder} of ${r.expected}, max loop lag ${fmt(r.maxEventLoopLagMs)} ms, load ${r.loadavg.map((x) => x.toFixed(2)).join(' ')}, missed-updates ${JSON.stringify(missed)}, lost untold ${r.lostUntold} (${r.clientsLostUntold} clients)${p.behind ? ' PUBLISHER BEHIND' : ''}`,
          );
          for (const st of r.steps)
            console.error(
              `[rolling-restart]   ${st.host}: established clients ${st.establishedAfterFailover.clients}, latency from ${ESTABLISHED_SKIP_MS} ms after the signal p50/p99/max ${fmt(st.establishedAfterFailover.p50)}/${fmt(st.establishedAfterFailover.p99)}/${fmt(st.establishedAfterFailover.max)} ms (${st.establishedAfterFailover.events} events; from the signal p99 ${fmt(st.established.p99)} ms)`,
            );
          if (r.untoldSample.length > 0)
            console.error(`[rolling-restart]   lost untold, sample: ${JSON.stringify(r.untoldSample.slice(0, 5))}`);
          console.error(`[rolling-restart]   gateway counters: ${JSON.stringify(counters)}`);
          for (const st of r.steps)
            console.error(
              `[rolling-restart]   ${st.host}: handshake p95 by second after ${signal}: ${st.handshakeP95BySecond.map((x) => fmt(x)).join(' ')}`,
            );
          (results[`${history} ${admission}`] ??= []).push(r);
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
    `rolling-restart: ${hostCount} hosts x 1 worker behind a TCP balancer, ${k} socket.io-client clients (websocket), ${rate} events/s, ${signal} + restart each host in turn (drain ${drainMs} ms, drain rate ${drainRate || 'off'}), ${durationMs / 1000} s of events, median (min-max) of ${flags.runs} run(s)`,
    [
      'signal',
      'history, admission',
      'never back',
      'reconnects',
      'recovered %',
      'reconnect p50 ms',
      'reconnect p95 ms',
      'reconnect max ms',
      'handshake p95 ms',
      'lost',
      'lost untold',
      'trimmed/expired told',
      'established p99 ms (from 3 s, worst step)',
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
      s(runs, (r) => r.lostUntold),
      s(runs, (r) => (r.missedUpdates['trimmed'] ?? 0) + (r.missedUpdates['expired'] ?? 0)),
      s(runs, (r) => Math.max(...r.steps.map((st) => st.establishedAfterFailover.p99))),
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
    admissions,
    rate,
    durationMs,
    readyPollMs,
    reconnectionDelayMs: reconnectionDelayMs ?? 'client default',
    results,
  };
}

/** The latency of one window over every generator (percentiles of the union, approximated by the worst generator's). */
function mergeLatency(parts: (WindowLatency | undefined)[]): WindowLatency {
  const ps = parts.filter((x): x is WindowLatency => x !== undefined && x.events > 0);
  return {
    clients: parts.reduce((a, x) => a + (x?.clients ?? 0), 0),
    events: ps.reduce((a, x) => a + x.events, 0),
    p50: ps.length ? Math.max(...ps.map((x) => x.p50)) : NaN,
    p99: ps.length ? Math.max(...ps.map((x) => x.p99)) : NaN,
    max: ps.length ? Math.max(...ps.map((x) => x.max)) : NaN,
  };
}
