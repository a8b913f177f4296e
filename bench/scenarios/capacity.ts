/**
 * capacity: the highest delivery rate a target sustains on this machine with
 * p99 <= --p99Limit ms (50), nothing lost, no client disconnected, and the load
 * generators and the publisher on schedule. For each target (gateway-2w,
 * gateway-1w, stock by default) and room kind (doc rooms of 10, user rooms)
 * a step search (bench/lib/step-search.ts: doubling, then bisection to
 * --resolution) offers rates of --duration s each on a fresh target. A step
 * where a generator saturated or the publisher fell behind is "limited by the
 * generator": it bounds the search, and the result says so. --runs N repeats
 * every search N times, targets alternating within each repetition, so the
 * ratios to stock come from neighbouring searches.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import {
  docRooms,
  flagList,
  flagNumber,
  fmt,
  fmtSpread,
  makeClients,
  measure,
  printTable,
  startEnv,
  userRooms,
  warmUp,
  type BenchEnv,
  type Flags,
  type RunResult,
} from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import type { PublishTarget } from '../lib/publisher-protocol';
import { cpuCeiling } from '../lib/cpu-ceiling';
import { spread } from '../lib/stats';
import { runStepSearch, type StepOutcome, type StepSearchResult } from '../lib/step-search';
import { SITE, sleep, startNamedTarget } from '../lib/topology';

const KIND_LABELS: Record<string, string> = { doc: 'doc rooms of 10', user: 'user rooms' };

interface Kind {
  name: string;
  label: string;
  rooms: PublishTarget[];
  perEvent: number;
}

interface Step {
  deliveryRate: number;
  eventRate: number;
  outcome: StepOutcome;
  why: string;
  run: RunResult;
}

interface Search {
  target: string;
  kind: string;
  rep: number;
  result: StepSearchResult;
  steps: Step[];
}

/** pass / fail (the target missed) / limited (the measurement could not be made at that rate), with the reason. */
function classify(r: RunResult, p99Limit: number): { outcome: StepOutcome; why: string } {
  if (!r.valid) return { outcome: 'limited', why: r.invalid.join('; ') };
  const why: string[] = [];
  if (r.lost > 0) why.push(`lost ${r.lost}`);
  if (r.disconnects > 0) why.push(`${r.disconnects} disconnects`);
  if (!(r.latencyMs.p99 <= p99Limit)) why.push(`p99 ${fmt(r.latencyMs.p99, 1)} ms`);
  return why.length ? { outcome: 'fail', why: why.join(', ') } : { outcome: 'pass', why: '' };
}

/** Waits until the clients' delivery count stops moving for `quietMs` (a failed step's backlog must not leak into the next). */
async function settle(loadgen: LoadGen, quietMs = 1000, maxMs = 30_000): Promise<void> {
  const deadline = performance.now() + maxMs;
  let last = (await loadgen.report()).deliveries;
  let since = performance.now();
  while (performance.now() < deadline && performance.now() - since < quietMs) {
    await sleep(200);
    const d = (await loadgen.report()).deliveries;
    if (d !== last) {
      last = d;
      since = performance.now();
    }
  }
}

function cores(r: RunResult, seconds: number): number {
  return seconds / (r.windowMs / 1000);
}

export async function capacity(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const targets = flagList(flags, 'targets', ['gateway-2w', 'gateway-1w', 'stock']);
  const kindsWanted = flagList(flags, 'kinds', ['doc', 'user']);
  const p99Limit = flagNumber(flags, 'p99Limit', 50);
  const searchOpts = {
    start: flagNumber(flags, 'start', 2000),
    factor: flagNumber(flags, 'factor', 2),
    resolution: flagNumber(flags, 'resolution', 0.1),
    granularity: flagNumber(flags, 'granularity', 500),
    max: flagNumber(flags, 'maxRate', 200_000),
    min: flagNumber(flags, 'minRate', 500),
  };
  const saved = flags['report'];
  if (typeof saved === 'string') {
    // Re-print the tables of a saved run (bench/results/capacity-*.json).
    const j = JSON.parse(readFileSync(saved, 'utf8')) as { flags: Flags; result: { searches: Search[] } };
    const names = [...new Set(j.result.searches.map((x) => x.target))];
    const kindNames = [...new Set(j.result.searches.map((x) => x.kind))];
    return report(
      j.result.searches,
      names,
      kindNames.map((k) => ({ name: k, label: KIND_LABELS[k] ?? k, rooms: [], perEvent: k === 'doc' ? 10 : 1 })),
      j.flags.clients,
      j.flags,
      flagNumber(j.flags, 'p99Limit', 50),
    );
  }
  const kinds: Kind[] = [];
  if (kindsWanted.includes('doc')) kinds.push({ name: 'doc', label: KIND_LABELS['doc'] ?? 'doc', rooms: docRooms(n, 10), perEvent: 10 });
  if (kindsWanted.includes('user')) kinds.push({ name: 'user', label: KIND_LABELS['user'] ?? 'user', rooms: userRooms(n), perEvent: 1 });

  const env = await startEnv();
  const publisher = await Publisher.start();
  const searches: Search[] = [];
  try {
    for (let rep = 1; rep <= flags.runs; rep++)
      for (const kind of kinds)
        for (const name of targets) searches.push(await search(env, publisher, flags, name, kind, rep, searchOpts, p99Limit));
  } finally {
    publisher.close();
    await env.close();
  }
  return report(searches, targets, kinds, n, flags, p99Limit);
}

async function search(
  env: BenchEnv,
  publisher: Publisher,
  flags: Flags,
  name: string,
  kind: Kind,
  rep: number,
  opts: Parameters<typeof runStepSearch>[0],
  p99Limit: number,
): Promise<Search> {
  const n = flags.clients;
  const target = await startNamedTarget(name, env);
  const loadgen = await LoadGen.start(flags.loadgens);
  const steps: Step[] = [];
  try {
    const c = await loadgen.connect({
      url: target.url,
      site: SITE,
      origin: target.origin,
      clients: makeClients(env, n, { docRoomSize: 10 }),
      ratePerSec: 2000,
    });
    if (c.connected !== n) throw new Error(`${target.name}: only ${c.connected}/${n} connected: ${JSON.stringify(c.errors)}`);
    await warmUp(target, loadgen, kind.rooms, n);
    let seq = 0;
    const result = await runStepSearch(opts, async (deliveryRate) => {
      const eventRate = deliveryRate / kind.perEvent;
      const run = await measure({
        target,
        loadgen,
        publisher,
        redis: target.publish.mode === 'redis' ? env.redis : undefined,
        rate: eventRate,
        durationMs: flags.durationMs,
        rooms: kind.rooms,
        perEvent: kind.perEvent,
        seqStart: seq,
      });
      seq += run.sent;
      const { outcome, why } = classify(run, p99Limit);
      steps.push({ deliveryRate, eventRate, outcome, why, run });
      console.error(
        `[capacity] run ${rep} ${target.name} ${kind.label} ${fmt(deliveryRate)} deliveries/s (${fmt(eventRate)} events/s): ${outcome}${why ? ` (${why})` : ''}; p99 ${fmt(run.latencyMs.p99, 1)} ms, gateway ${cores(run, run.gatewayCpuSec).toFixed(2)} cores, generators ${cores(run, run.generatorCpuSec).toFixed(2)} cores (load generators ${run.loadgenCpu.map((f) => `${Math.round(f * 100)}%`).join('+')}, publisher ${Math.round(run.publisherCpu * 100)}%), machine ${run.machineBusyCores.toFixed(2)} busy`,
      );
      if (outcome !== 'pass') await settle(loadgen);
      return outcome;
    });
    return { target: target.name, kind: kind.name, rep, result, steps };
  } finally {
    await loadgen.close();
    await target.close();
  }
}

function report(searches: Search[], targets: string[], kinds: Kind[], n: number, flags: Flags, p99Limit: number): unknown {
  const stepAt = (s: Search, rate: number | null): Step | undefined => s.steps.find((x) => x.deliveryRate === rate);
  const bounded = (s: Search): string => {
    const b = stepAt(s, s.result.lowestNonPass);
    if (s.result.boundedBy === 'max') return 'max rate offered';
    if (!b) return '-';
    return `${s.result.boundedBy === 'limited' ? 'generator' : 'target'} at ${fmt(b.deliveryRate)}: ${b.why}`;
  };
  // Per search: its highest sustained step and what stopped it.
  printTable(
    `capacity: every search (${n} clients, ${flags.durationMs / 1000} s per step, p99 <= ${p99Limit} ms, 0 lost, generators on schedule)`,
    [
      'run',
      'target',
      'rooms',
      'highest sustained deliveries/s',
      'events/s',
      'p99 ms there',
      'gateway/target cores',
      'redis cores',
      'generator cores',
      'machine busy',
      'bounded by (lowest step not sustained)',
      'steps',
    ],
    searches.map((s) => {
      const at = stepAt(s, s.result.highestPass);
      const r = at?.run;
      return [
        String(s.rep),
        s.target,
        kinds.find((k) => k.name === s.kind)?.label ?? s.kind,
        s.result.highestPass === null ? 'none' : fmt(s.result.highestPass),
        at ? fmt(at.eventRate) : '-',
        r ? fmt(r.latencyMs.p99, 1) : '-',
        r ? cores(r, r.gatewayCpuSec).toFixed(2) : '-',
        r ? cores(r, r.redisCpuSec).toFixed(2) : '-',
        r ? cores(r, r.generatorCpuSec).toFixed(2) : '-',
        r ? r.machineBusyCores.toFixed(2) : '-',
        bounded(s),
        s.steps.map((x) => `${fmt(x.deliveryRate / 1000, 1)}k${x.outcome === 'pass' ? '+' : x.outcome === 'fail' ? '-' : '?'}`).join(' '),
      ];
    }),
  );
  console.log("steps: k deliveries/s, '+' sustained, '-' target failed, '?' limited by the generator (or publisher)");

  // Summary: medians (min-max) over the repetitions, and the ratio to stock per repetition.
  const summary: Record<string, Record<string, unknown>> = {};
  const ceilingsByTarget = new Map<string, { sameHost: number[]; elsewhere: number[] }>();
  const rows: string[][] = [];
  for (const kind of kinds) {
    for (const t of targets) {
      const mine = searches.filter((s) => s.target === t && s.kind === kind.name);
      const rates = mine.map((s) => s.result.highestPass ?? 0);
      const ratios = mine.map((s) => {
        const stock = searches.find((x) => x.target === 'stock' && x.kind === kind.name && x.rep === s.rep);
        return stock?.result.highestPass ? (s.result.highestPass ?? 0) / stock.result.highestPass : NaN;
      });
      const limited = mine.filter((s) => s.result.boundedBy === 'limited').length;
      const genCores = mine.map((s) => {
        const r = stepAt(s, s.result.highestPass)?.run;
        return r ? cores(r, r.generatorCpuSec) : NaN;
      });
      const p99 = mine.map((s) => stepAt(s, s.result.highestPass)?.run.latencyMs.p99 ?? NaN);
      const ceilings = mine.map((s) => {
        const r = stepAt(s, s.result.highestPass)?.run;
        return r ? cpuCeiling(r, os.cpus().length) : { sameHost: NaN, generatorsElsewhere: NaN };
      });
      const sameHost = ceilings.map((c) => c.sameHost);
      const elsewhere = ceilings.map((c) => c.generatorsElsewhere);
      ceilingsByTarget.set(`${t} ${kind.name}`, { sameHost, elsewhere });
      summary[`${t} ${kind.name}`] = { rates, ratios, limitedByGenerator: limited, generatorCores: genCores, p99, sameHost, elsewhere };
      rows.push([
        t,
        kind.label,
        fmtSpread(spread(rates)),
        t === 'stock' ? '' : fmtSpread(spread(ratios), 2),
        fmtSpread(spread(p99), 1),
        fmtSpread(spread(genCores), 2),
        `${limited}/${mine.length}`,
        fmtSpread(spread(sameHost)),
        fmtSpread(spread(elsewhere)),
      ]);
    }
  }
  printTable(
    `capacity: median (min-max) over ${flags.runs} repetitions`,
    [
      'target',
      'rooms',
      'highest sustained deliveries/s',
      'x stock (same repetition)',
      'p99 ms there',
      'generator cores there',
      'bounded by the generator',
      'CPU ceiling, generators on these cores',
      'CPU ceiling, generators elsewhere',
    ],
    rows,
  );
  console.log(
    'CPU ceiling: deliveries/s at which the cores (or one target process at a full core) would be busy, from the CPU per delivery measured at the highest sustained step; an estimate, not a measured rate',
  );
  for (const kind of kinds) {
    const g = ceilingsByTarget.get(`gateway-2w ${kind.name}`);
    const st = ceilingsByTarget.get(`stock ${kind.name}`);
    if (!g || !st) continue;
    const ratio = (a: number[], b: number[]): string => fmt(spread(a).median / spread(b).median, 2);
    console.log(
      `${kind.label}: gateway-2w / stock CPU ceiling ${ratio(g.sameHost, st.sameHost)}x with the generators on these cores, ${ratio(g.elsewhere, st.elsewhere)}x with them elsewhere (medians)`,
    );
  }
  return { clients: n, p99Limit, searches, summary };
}
