/**
 * The primary's own CPU and wake-ups, builds alternated, without clients:
 * one host of 2 workers on a fresh redis-server, events published on the
 * events channel at `rate` per second (in bursts every 10 ms from 100/s up,
 * else one at a time), and over each window the primary's on-CPU time of all
 * its threads (/proc/<pid>/task/<tid>/schedstat, ns) and its main thread's
 * voluntary context switches (each is one sleep, i.e. one wake-up after it).
 *
 *   node --import tsx bench/primary-cost.ts <rate> <seconds> <rounds> <label>=<dist/main.js> ...
 *   node --import tsx bench/primary-cost.ts 0 10 3 before=/tmp/base/dist/main.js after=dist/main.js
 *
 * Rate 0 prints ms of CPU per second; otherwise µs per event.
 * PRIMARY_COST_NODE_ARGS="--cpu-prof --cpu-prof-dir=d" profiles the processes.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { Redis } from 'ioredis';
import { startFakeFrappe, startGateway, startRedis, uniqueKeyPrefix } from '../test/harness';
import { frappeEvent } from './lib/frames';
import { spread } from './lib/stats';

function cpuNs(pid: number): number {
  let ns = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) ns += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
  return ns;
}

function mainThreadSleeps(pid: number): number {
  return Number(/voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function main(): Promise<void> {
  const [rateArg, secondsArg, roundsArg, ...builds] = process.argv.slice(2);
  const rate = Number(rateArg);
  const seconds = Number(secondsArg);
  const rounds = Number(roundsArg);
  if (!(rate >= 0) || !(seconds > 0) || !(rounds > 0) || builds.length === 0) {
    throw new Error('usage: primary-cost.ts <rate> <seconds> <rounds> <label>=<path/to/main.js> ...');
  }
  const nodeArgs = process.env['PRIMARY_COST_NODE_ARGS']?.split(' ').filter(Boolean) ?? [];
  const redis = await startRedis();
  const fake = await startFakeFrappe();
  const results = new Map<string, { cost: number[]; wakeups: number[] }>();
  try {
    for (let round = 0; round < rounds; round++) {
      for (const build of builds) {
        const [label, mainPath] = build.split('=') as [string, string];
        const gw = await startGateway({
          redisUrl: redis.url,
          workers: 2,
          backendUrl: fake.url,
          keyPrefix: uniqueKeyPrefix(),
          mainPath,
          nodeArgs,
          readyTimeoutMs: 60_000,
          closeGraceMs: 3000,
        });
        const pub = new Redis(redis.url);
        try {
          // Settled after boot (leader elected, workers up).
          await pause(4000);
          let seq = 0;
          const perTick = Math.max(1, Math.round(rate / 100));
          const publish = (): void => {
            for (let i = 0; i < perTick; i++, seq++)
              void pub.publish('events', frappeEvent('bench', 'bench.local', `user:u${seq % 1000}`, seq, Date.now()));
          };
          const ticker = rate > 0 ? setInterval(publish, rate >= 100 ? 10 : 1000 / rate) : null;
          await pause(1000);
          const c0 = cpuNs(gw.pid);
          const w0 = mainThreadSleeps(gw.pid);
          const s0 = seq;
          const t0 = performance.now();
          await pause(seconds * 1000);
          const c1 = cpuNs(gw.pid);
          const w1 = mainThreadSleeps(gw.pid);
          const events = seq - s0;
          const elapsed = (performance.now() - t0) / 1000;
          if (ticker) clearInterval(ticker);
          const cpuMsPerS = (c1 - c0) / 1e6 / elapsed;
          const cost = rate > 0 ? (c1 - c0) / 1e3 / Math.max(1, events) : cpuMsPerS;
          const wakeups = (w1 - w0) / elapsed;
          const r = results.get(label) ?? { cost: [], wakeups: [] };
          results.set(label, r);
          r.cost.push(cost);
          r.wakeups.push(wakeups);
          console.log(
            `${new Date().toISOString().slice(11, 19)} ${label} ${rate}/s: primary ${cpuMsPerS.toFixed(2)} ms CPU/s` +
              (rate > 0 ? `, ${cost.toFixed(1)} µs/event (${events} events)` : '') +
              `, ${wakeups.toFixed(0)} main-thread wake-ups/s, load ${loadavg()}`,
          );
        } finally {
          pub.disconnect();
          await gw.close();
        }
      }
    }
  } finally {
    await fake.close();
    await redis.close();
  }
  const fmt = (values: number[]): string => {
    const s = spread(values);
    return `${s.median.toFixed(1)} (${s.min.toFixed(1)}-${s.max.toFixed(1)})`;
  };
  for (const [label, r] of results) {
    console.log(`${label}: ${rate > 0 ? 'µs/event' : 'ms CPU/s'} ${fmt(r.cost)}, main-thread wake-ups/s ${fmt(r.wakeups)}`);
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
