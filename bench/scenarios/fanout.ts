/**
 * fanout: deliveries/s, deliveries per gateway CPU-second and publish-to-client
 * latency for room sizes 1 (user rooms), 10 (doc rooms) and all (site
 * broadcast to every client), for the gateway and the baselines.
 */
import path from 'node:path';
import {
  docRooms,
  flagList,
  flagNumber,
  fmt,
  fmtCommands,
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
import type { PublishTarget } from '../lib/publisher-protocol';
import { SITE, startGatewayTarget, startNamedTarget, type Target } from '../lib/topology';

interface SizeSpec {
  size: string;
  rooms: PublishTarget[];
  perEvent: number;
  rate: number;
}

/** The primary's (the leader's) CPU per event sent, for a cluster target; NaN otherwise. */
function primaryUsPerEvent(r: RunResult, t: Target): number {
  if (t.kind !== 'gateway' || t.workerPids().includes(t.primaryPid)) return NaN;
  return ((r.cpuByProcess[`primary(${t.primaryPid})`] ?? NaN) / Math.max(1, r.sent)) * 1e6;
}

export async function fanout(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const targets = flagList(flags, 'targets', ['gateway-standalone', 'gateway-1w', 'stock', 'raw-ws']);
  const sizesWanted = flagList(flags, 'sizes', ['1', '10', 'all']);
  const sizes: SizeSpec[] = [];
  if (sizesWanted.includes('1'))
    sizes.push({ size: '1 (user rooms)', rooms: userRooms(n), perEvent: 1, rate: flagNumber(flags, 'rate1', 3000) });
  if (sizesWanted.includes('10'))
    sizes.push({ size: '10 (doc rooms)', rooms: docRooms(n, 10), perEvent: 10, rate: flagNumber(flags, 'rate10', 1000) });
  if (sizesWanted.includes('all'))
    sizes.push({
      size: `all (${n} clients)`,
      rooms: [{ ns: SITE, room: 'all' }],
      perEvent: n,
      rate: flagNumber(flags, 'rateAll', Math.max(1, Math.round(20_000 / n))),
    });

  // --nodeOptions "...": NODE_OPTIONS of this build's gateway targets (not of gateway-1w-before), e.g. its V8 flags as the image sets them.
  const nodeEnv = typeof flags['nodeOptions'] === 'string' ? { NODE_OPTIONS: flags['nodeOptions'] } : undefined;
  const env = await startEnv();
  const loadgen = await LoadGen.start(flags.loadgens);
  const publisher = await Publisher.start();
  const results: Record<string, Record<string, RunResult[]>> = {};
  try {
    for (const name of targets) {
      let target: Target;
      if (name === 'gateway-1w-nonative')
        // ws without its optional native helpers (bufferutil, utf-8-validate), same build.
        target = await startGatewayTarget({
          fake: env.fake,
          redis: env.redis,
          workers: 1,
          name,
          env: { WS_NO_BUFFER_UTIL: '1', WS_NO_UTF_8_VALIDATE: '1' },
        });
      else if (/^gateway-\d+w-before$/.test(name)) {
        // Another build (--before <dir with main.js>), e.g. the branch's base, in the same run (gateway-1w-before, gateway-2w-before, ...).
        const dir = flags['before'];
        if (typeof dir !== 'string') throw new Error(`${name} needs --before <dist dir>`);
        const workers = Number(/^gateway-(\d+)w/.exec(name)?.[1]);
        target = await startGatewayTarget({ fake: env.fake, redis: env.redis, workers, name, mainPath: path.resolve(dir, 'main.js') });
      } else target = await startNamedTarget(name, env, nodeEnv);
      console.error(`[fanout] ${target.name}: connecting ${n} clients`);
      try {
        const clients = makeClients(env, n, { docRoomSize: 10 });
        // --connectTimeout S: how long the 2,000 connections may take (a loaded machine needs more than the default 60 s).
        const timeoutMs = flagNumber(flags, 'connectTimeout', 60) * 1000;
        const c = await loadgen.connect({ url: target.url, site: SITE, origin: target.origin, clients, ratePerSec: 2000, timeoutMs });
        if (c.connected !== n) throw new Error(`${target.name}: only ${c.connected}/${n} connected: ${JSON.stringify(c.errors)}`);
        results[target.name] = {};
        for (const s of sizes) {
          await warmUp(target, loadgen, s.rooms, n);
          const runs: RunResult[] = [];
          for (let i = 0; i < flags.runs; i++) {
            const r = await measure({
              target,
              loadgen,
              publisher,
              redis: target.publish.mode === 'redis' ? env.redis : undefined,
              rate: s.rate,
              durationMs: flags.durationMs,
              rooms: s.rooms,
              perEvent: s.perEvent,
            });
            console.error(
              `[fanout] ${target.name} size ${s.size} run ${i + 1}: ${fmt(r.deliveriesPerSec)} deliveries/s, ${fmt(r.deliveriesPerGatewayCpuSec)} per gw CPU-s, primary ${fmt(primaryUsPerEvent(r, target), 1)} us/event, p99 ${fmt(r.latencyMs.p99, 1)} ms, lost ${r.lost}${r.valid ? '' : ` INVALID: ${r.invalid.join('; ')}`}`,
            );
            console.error(`[fanout]   redis per event: ${fmtCommands(r.redisCommands)}`);
            r.primaryCpuUsPerEvent = primaryUsPerEvent(r, target);
            runs.push(r);
          }
          (results[target.name] as Record<string, RunResult[]>)[s.size] = runs;
        }
      } finally {
        await target.close();
      }
    }
  } finally {
    await loadgen.close();
    publisher.close();
    await env.close();
  }

  const rows: string[][] = [];
  for (const [t, bySize] of Object.entries(results)) {
    for (const [size, runs] of Object.entries(bySize)) {
      rows.push([
        t,
        size,
        `${runs[0]?.rate ?? 0}/s`,
        fmtSpread(summarize(runs, (r) => r.deliveriesPerSec)),
        fmtSpread(summarize(runs, (r) => r.deliveriesPerGatewayCpuSec)),
        fmtSpread(
          summarize(runs, (r) => r.gatewayCpuUsPerDelivery),
          2,
        ),
        fmtSpread(
          summarize(runs, (r) => (r.redisCpuSec * 1e6) / Math.max(1, r.deliveries)),
          2,
        ),
        fmtSpread(
          summarize(runs, (r) => r.primaryCpuUsPerEvent ?? NaN),
          1,
        ),
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.p50),
          1,
        ),
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.p90),
          1,
        ),
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.p99),
          1,
        ),
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.max),
          1,
        ),
        String(runs.reduce((a, r) => a + r.lost, 0)),
        `${runs.filter((r) => r.valid).length}/${runs.length}`,
      ]);
    }
  }
  printTable(
    `fanout: ${n} clients, ${flags.durationMs / 1000} s per run, median (min-max) of valid runs`,
    [
      'target',
      'room size',
      'offered events',
      'deliveries/s',
      'deliveries per gw CPU-s',
      'gw CPU us/delivery',
      'redis CPU us/delivery',
      'primary us/event',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'max ms',
      'lost',
      'valid',
    ],
    rows,
  );
  return { clients: n, results };
}
