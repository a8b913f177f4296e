/**
 * leader-throughput: steps the rate of targeted events (user rooms) through a
 * one-host cluster and reports the highest rate sustained with zero loss
 * (and a bounded p99), with every process's share of a core at each step so
 * the limit is visible: leader primary, workers, redis, generators, machine.
 * With `--runs N` each step also reports the medians and spreads over its runs
 * of the leader's (primary's) CPU per event, Redis's CPU per event and the
 * p99 publish-to-receive latency (`npm run bench -- leader-throughput --rates 500,5000`).
 * `--coalesce 0,2,4` runs this build once per leader coalescing window
 * (GATEWAY_LEADER_COALESCE_MS), alternating per step like `--before`.
 * `--keys off,on` runs this build without and with an idempotency key on
 * every event (the leader's SET NX PX per event), alternating per step.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import {
  flagList,
  flagNumber,
  fmt,
  fmtSpread,
  makeClients,
  measure,
  printTable,
  startEnv,
  summarize,
  userRooms,
  warmUp,
  type Flags,
  type RunResult,
} from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import { SITE, startGatewayTarget, type Target } from '../lib/topology';

export async function leaderThroughput(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const w = flagNumber(flags, 'workers', 2);
  const rates = flagList(flags, 'rates', ['2000', '4000', '6000', '8000', '10000', '12000', '15000']).map(Number);
  const p99Limit = flagNumber(flags, 'p99Limit', 1000);
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(n);
  // --before <dist dir>: the same steps on another build (e.g. the branch's base), alternating per step.
  const before = typeof flags['before'] === 'string' ? path.resolve(flags['before'], 'main.js') : undefined;
  const windows = flagList(flags, 'coalesce', []);
  const keyModes = flagList(flags, 'keys', []);
  const builds: { label: string; mainPath?: string; env?: Record<string, string>; keys?: boolean }[] = [
    ...(windows.length
      ? windows.map((ms) => ({ label: `this build, window ${ms} ms`, env: { GATEWAY_LEADER_COALESCE_MS: ms } }))
      : keyModes.length
        ? keyModes.map((k) => ({ label: `this build, keys ${k}`, keys: k === 'on' }))
        : [{ label: 'this build' }]),
    ...(before ? [{ label: 'before', mainPath: before }] : []),
  ];
  const stepsByBuild = new Map<string, Step[]>(builds.map((b) => [b.label, []]));
  const failures = new Map<string, number>();
  try {
    for (const rate of rates) {
      for (const build of builds) {
        if ((failures.get(build.label) ?? 0) >= 2) continue;
        const t = await startGatewayTarget({
          fake: env.fake,
          redis: env.redis,
          workers: w,
          ...(build.mainPath ? { mainPath: build.mainPath } : {}),
          ...(build.env ? { env: build.env } : {}),
        });
        const loadgen = await LoadGen.start(flags.loadgens);
        try {
          const c = await loadgen.connect({ url: t.url, site: SITE, origin: t.origin, clients: makeClients(env, n), ratePerSec: 2000 });
          if (c.connected !== n) throw new Error(`only ${c.connected}/${n} connected`);
          await warmUp(t, loadgen, rooms, n);
          const runs: RunResult[] = [];
          const batchesBefore = await batchTotals(t);
          const wakeupsBefore = wakeups(t.primaryPid);
          const run = { target: t, loadgen, publisher, redis: env.redis, rate, durationMs: flags.durationMs, rooms, perEvent: 1 };
          for (let i = 0; i < flags.runs; i++) runs.push(await measure({ ...run, keys: build.keys === true }));
          const sustained = runs.every((r) => r.valid && r.lost === 0 && r.latencyMs.p99 <= p99Limit);
          const wakeupsAfter = wakeups(t.primaryPid);
          const batchesAfter = await batchTotals(t);
          const eventsPerBatch =
            batchesBefore && batchesAfter && batchesAfter.count > batchesBefore.count
              ? (batchesAfter.events - batchesBefore.events) / (batchesAfter.count - batchesBefore.count)
              : null;
          const sent = runs.reduce((a, r) => a + r.sent, 0);
          const wakeupsPerEvent =
            wakeupsBefore !== null && wakeupsAfter !== null && sent > 0 ? (wakeupsAfter - wakeupsBefore) / sent : null;
          stepsByBuild.get(build.label)?.push({ rate, runs, sustained, eventsPerBatch, wakeupsPerEvent });
          const r = runs[runs.length - 1] as RunResult;
          const share = Object.entries(r.cpuByProcess)
            .map(([k, v]) => `${k.replace(/\(\d+\)/, '')} ${Math.round((v / (r.windowMs / 1000)) * 100)}%`)
            .join(', ');
          console.error(
            `[leader-throughput] ${build.label} ${rate}/s: ${sustained ? 'sustained' : 'NOT sustained'}; lost ${r.lost}, p99 ${fmt(r.latencyMs.p99, 1)} ms; ${share}; machine ${r.machineBusyCores.toFixed(2)} cores busy${r.valid ? '' : `; INVALID: ${r.invalid.join('; ')}`}`,
          );
          if (!sustained) failures.set(build.label, (failures.get(build.label) ?? 0) + 1);
        } finally {
          await loadgen.close();
          await t.close();
        }
      }
    }
  } finally {
    publisher.close();
    await env.close();
  }
  const out: Record<string, unknown> = {};
  for (const build of builds) out[build.label] = report(build.label, stepsByBuild.get(build.label) ?? [], n, w, flags);
  return { clients: n, workers: w, builds: out };
}

interface Step {
  rate: number;
  runs: RunResult[];
  sustained: boolean;
  /** Mean events per fenced batch over the step's runs (gateway_leader_batch_events); null for a build without it. */
  eventsPerBatch: number | null;
  /** The leader's main-thread sleeps (voluntary context switches) per event sent, over the step's runs. */
  wakeupsPerEvent: number | null;
}

/** voluntary_ctxt_switches of a process's main thread (its event loop): each is a sleep, i.e. one wake-up. */
function wakeups(pid: number): number | null {
  try {
    const m = /^voluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The leader's gateway_leader_batch_events totals (the primary's /metrics), or null when the build has no such metric. */
async function batchTotals(t: Target): Promise<{ count: number; events: number } | null> {
  const count = await t.gateway?.metricValue('gateway_leader_batch_events_count');
  const events = await t.gateway?.metricValue('gateway_leader_batch_events_sum');
  return count === undefined || events === undefined ? null : { count, events };
}

function report(label: string, steps: Step[], n: number, w: number, flags: Flags): unknown {
  const rows = steps.map((s) => {
    const r = s.runs[s.runs.length - 1] as RunResult;
    const secs = r.windowMs / 1000;
    const pct = (k: string): string =>
      Object.entries(r.cpuByProcess)
        .filter(([name]) => name.startsWith(k))
        .map(([, v]) => `${Math.round((v / secs) * 100)}%`)
        .join('+');
    return [
      `${s.rate}/s`,
      fmt(r.eventsPerSec),
      String(r.lost),
      fmt(r.latencyMs.p50, 1),
      fmt(r.latencyMs.p99, 1),
      pct('primary'),
      pct('worker'),
      pct('redis'),
      `${Math.round((r.generatorCpuSec / secs) * 100)}%`,
      r.machineBusyCores.toFixed(2),
      s.sustained ? 'yes' : r.valid ? 'no' : `invalid: ${r.invalid.join('; ')}`,
    ];
  });
  const primaryCpu = (r: RunResult): number =>
    Object.entries(r.cpuByProcess)
      .filter(([name]) => name.startsWith('primary'))
      .reduce((a, [, v]) => a + v, 0);
  const perEvent = steps.map((s) => {
    const leader = summarize(s.runs, (r) => (primaryCpu(r) / Math.max(1, r.sent)) * 1e6);
    const redis = summarize(s.runs, (r) => (r.redisCpuSec / Math.max(1, r.sent)) * 1e6);
    const workers = summarize(s.runs, (r) => ((r.gatewayCpuSec - primaryCpu(r)) / Math.max(1, r.sent)) * 1e6);
    const p99 = summarize(s.runs, (r) => r.latencyMs.p99);
    const lost = s.runs.reduce((a, r) => a + r.lost, 0);
    return {
      rate: s.rate,
      leaderUsPerEvent: leader,
      redisUsPerEvent: redis,
      workersUsPerEvent: workers,
      p99Ms: p99,
      lost,
      eventsPerBatch: s.eventsPerBatch,
      wakeupsPerEvent: s.wakeupsPerEvent,
    };
  });
  printTable(
    `leader-throughput (${label}) per event: medians (min-max) over the valid runs of each step`,
    [
      'offered',
      'valid runs',
      'leader (primary) CPU us/event',
      'workers CPU us/event',
      'redis CPU us/event',
      'p99 ms',
      'lost',
      'events/batch',
      'leader wake-ups/event',
    ],
    perEvent.map((p, i) => [
      `${p.rate}/s`,
      `${p.leaderUsPerEvent.validRuns}/${steps[i]?.runs.length ?? 0}`,
      fmtSpread(p.leaderUsPerEvent, 1),
      fmtSpread(p.workersUsPerEvent, 1),
      fmtSpread(p.redisUsPerEvent, 1),
      fmtSpread(p.p99Ms, 1),
      String(p.lost),
      p.eventsPerBatch === null ? '-' : fmt(p.eventsPerBatch, 1),
      p.wakeupsPerEvent === null ? '-' : fmt(p.wakeupsPerEvent, 2),
    ]),
  );
  const best = steps.filter((s) => s.sustained).map((s) => s.rate);
  printTable(
    `leader-throughput (${label}): ${w} workers, ${n} clients in user rooms, ${flags.durationMs / 1000} s per step (CPU as % of one core over the window)`,
    [
      'offered',
      'achieved events/s',
      'lost',
      'p50 ms',
      'p99 ms',
      'leader primary CPU',
      'workers CPU',
      'redis CPU',
      'generators CPU',
      'machine cores busy',
      'sustained',
    ],
    rows,
  );
  console.log(`${label}: highest sustained rate: ${best.length ? Math.max(...best) : 'none'} events/s`);
  return { steps, perEvent, highestSustained: best.length ? Math.max(...best) : null };
}
