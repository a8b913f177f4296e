/**
 * scaling: CPU per targeted event (user rooms, one member each) at 1, 2, 4, 8
 * worker processes: the gateway (leader + sharded adapter: a worker receives
 * only events for its rooms) next to the every-process design (Frappe's: N
 * processes each consuming the channel, behind the same sticky primary),
 * measured in the same run. Gateway processes + redis-server CPU, and what
 * each worker read from Redis.
 */
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
import { SITE, startBaseline, startGatewayTarget, type Target } from '../lib/topology';

type ScalingRun = RunResult & { adapterMessagesPerEvent?: number };

export async function scaling(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const workers = flagList(flags, 'workers', ['1', '2', '4', '8']).map(Number);
  const rate = flagNumber(flags, 'rate', 1000);
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(n);
  const results: Record<string, Record<string, ScalingRun[]>> = {};
  try {
    for (const w of workers) {
      results[String(w)] = {};
      for (const design of ['gateway', 'every-process']) {
        const t: Target =
          design === 'gateway'
            ? await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: w })
            : await startBaseline({ kind: 'stock', redis: env.redis, fake: env.fake, workers: w });
        const loadgen = await LoadGen.start(flags.loadgens);
        try {
          const c = await loadgen.connect({ url: t.url, site: SITE, origin: t.origin, clients: makeClients(env, n), ratePerSec: 2000 });
          if (c.connected !== n) throw new Error(`${t.name}: only ${c.connected}/${n} connected: ${JSON.stringify(c.errors)}`);
          await warmUp(t, loadgen, rooms, n);
          const runs: ScalingRun[] = [];
          for (let i = 0; i < flags.runs; i++) {
            const m0 = t.gateway ? ((await t.gateway.metricValue('gateway_worker_broadcasts_total', { kind: 'adapter' })) ?? 0) : 0;
            const r: ScalingRun = await measure({
              target: t,
              loadgen,
              publisher,
              redis: env.redis,
              rate,
              durationMs: flags.durationMs,
              rooms,
              perEvent: 1,
              workerIo: true,
            });
            if (t.gateway)
              r.adapterMessagesPerEvent =
                (((await t.gateway.metricValue('gateway_worker_broadcasts_total', { kind: 'adapter' })) ?? 0) - m0) / r.sent;
            console.error(
              `[scaling] ${w} workers ${design} run ${i + 1}: ${fmt(r.totalCpuUsPerEvent)} us CPU/event (gw ${fmt(r.gatewayCpuUsPerEvent)}, redis ${fmt((r.redisCpuSec / r.sent) * 1e6)}), p99 ${fmt(r.latencyMs.p99, 1)} ms, lost ${r.lost}${r.valid ? '' : ` INVALID: ${r.invalid.join('; ')}`}`,
            );
            runs.push(r);
          }
          (results[String(w)] as Record<string, ScalingRun[]>)[design] = runs;
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
  const rows: string[][] = [];
  for (const [w, byDesign] of Object.entries(results)) {
    const g = byDesign['gateway'] ?? [];
    const e = byDesign['every-process'] ?? [];
    const gm = summarize(g, (r) => r.totalCpuUsPerEvent).median;
    const em = summarize(e, (r) => r.totalCpuUsPerEvent).median;
    for (const [design, runs] of Object.entries(byDesign)) {
      const bytes = (r: ScalingRun): number => (r.bytesReadPerWorkerPerEvent ?? []).reduce((a, b) => a + b, 0);
      rows.push([
        w,
        design,
        fmtSpread(summarize(runs, (r) => r.totalCpuUsPerEvent)),
        fmtSpread(summarize(runs, (r) => r.gatewayCpuUsPerEvent)),
        fmtSpread(summarize(runs, (r) => (r.redisCpuSec / r.sent) * 1e6)),
        fmtSpread(summarize(runs, bytes)),
        design === 'gateway'
          ? fmtSpread(
              summarize(runs, (r) => r.adapterMessagesPerEvent ?? NaN),
              2,
            )
          : `${w} (by design)`,
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.p99),
          1,
        ),
        String(runs.reduce((a, r) => a + r.lost, 0)),
        design === 'gateway' ? (gm / em).toFixed(2) : '',
        `${runs.filter((r) => r.valid).length}/${runs.length}`,
      ]);
    }
  }
  printTable(
    `scaling: ${n} clients in user rooms, ${rate} targeted events/s, ${flags.durationMs / 1000} s per run, median (min-max)`,
    [
      'workers',
      'design',
      'CPU us/event (gw+redis)',
      'gw CPU us/event',
      'redis CPU us/event',
      'bytes read from Redis per event (all workers)',
      'adapter msgs per event (all workers)',
      'p99 ms',
      'lost',
      'gateway / every-process',
      'valid',
    ],
    rows,
  );
  return { clients: n, rate, results };
}
