/**
 * idle-memory: RSS and V8 heap per idle connection at N (10,000) connections
 * against a baseline with 0, for the standalone gateway, one worker of a
 * cluster, and the stock server. Each run starts a fresh target.
 * `--settle S` (5): seconds between the end of the connect burst and the
 * samples; the gateway compacts its heap once a burst has been over for
 * GATEWAY_IDLE_COMPACT_MS (5 s), so --settle 15 measures after it.
 */
import { flagList, flagNumber, fmtSpread, makeClients, printTable, startEnv, type Flags } from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { readStatus } from '../lib/proc';
import { spread } from '../lib/stats';
import { SITE, sleep, startBaseline, startGatewayTarget, type Target } from '../lib/topology';

interface MemRun {
  connected: number;
  errors: Record<string, number>;
  /** Process holding the sockets (standalone process, the cluster's worker, stock process). */
  socketProcRssBefore: number;
  socketProcRssAfter: number;
  allRssBefore: number;
  allRssAfter: number;
  heapBefore: number;
  heapAfter: number;
  rssPerConnBytes: number;
  allRssPerConnBytes: number;
  heapPerConnBytes: number;
}

async function heapUsed(t: Target): Promise<number> {
  if (!t.gateway) return NaN;
  try {
    return (await t.gateway.metricValue('nodejs_heap_size_used_bytes')) ?? NaN;
  } catch (err) {
    console.error(`[idle-memory] ${t.name}: /metrics failed: ${String(err)}`);
    return NaN;
  }
}

/** Median of 3 samples 1 s apart (RSS and heap move with GC). */
async function sample(t: Target): Promise<{ sock: number; all: number; heap: number }> {
  const s: { sock: number; all: number; heap: number }[] = [];
  for (let i = 0; i < 3; i++) {
    const sockPid = t.workerPids()[0] ?? t.primaryPid;
    s.push({ sock: readStatus(sockPid).rss, all: t.pids().reduce((a, p) => a + readStatus(p).rss, 0), heap: await heapUsed(t) });
    if (i < 2) await sleep(1000);
  }
  const med = (f: (x: { sock: number; all: number; heap: number }) => number): number => spread(s.map(f)).median;
  return { sock: med((x) => x.sock), all: med((x) => x.all), heap: med((x) => x.heap) };
}

export async function idleMemory(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const settleMs = flagNumber(flags, 'settle', 5) * 1000;
  const targets = flagList(flags, 'targets', ['gateway-standalone', 'gateway-1w', 'stock']);
  const env = await startEnv();
  const clients = makeClients(env, n);
  const results: Record<string, MemRun[]> = {};
  try {
    for (const name of targets) {
      results[name] = [];
      for (let run = 0; run < flags.runs; run++) {
        const t =
          name === 'gateway-standalone'
            ? await startGatewayTarget({ fake: env.fake })
            : name === 'stock'
              ? await startBaseline({ kind: 'stock', redis: env.redis, fake: env.fake })
              : await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: Number(name.slice(8, -1)) });
        const loadgen = await LoadGen.start(flags.loadgens);
        try {
          await sleep(2000);
          const before = await sample(t);
          const c = await loadgen.connect({ url: t.url, site: SITE, origin: t.origin, clients, ratePerSec: 2000, timeoutMs: 120_000 });
          await sleep(settleMs);
          const after = await sample(t);
          if (t.gateway?.proc.exitCode !== null && t.gateway?.proc.exitCode !== undefined)
            console.error(`[idle-memory] ${name}: gateway exited (${t.gateway.proc.exitCode}): ${t.gateway.logs.slice(-5).join(' | ')}`);
          const r: MemRun = {
            connected: c.connected,
            errors: c.errors,
            socketProcRssBefore: before.sock,
            socketProcRssAfter: after.sock,
            allRssBefore: before.all,
            allRssAfter: after.all,
            heapBefore: before.heap,
            heapAfter: after.heap,
            rssPerConnBytes: (after.sock - before.sock) / Math.max(1, c.connected),
            allRssPerConnBytes: (after.all - before.all) / Math.max(1, c.connected),
            heapPerConnBytes: (after.heap - before.heap) / Math.max(1, c.connected),
          };
          console.error(
            `[idle-memory] ${name} run ${run + 1}: ${c.connected}/${n} connected, ${(r.rssPerConnBytes / 1024).toFixed(1)} KB RSS/conn, heap ${(r.heapPerConnBytes / 1024).toFixed(1)} KB/conn`,
          );
          results[name]?.push(r);
        } finally {
          await loadgen.close();
          await t.close();
        }
      }
    }
  } finally {
    await env.close();
  }
  const kb = (v: number): number => v / 1024;
  const rows = Object.entries(results).map(([name, runs]) => [
    name,
    `${Math.min(...runs.map((r) => r.connected))}/${n}`,
    fmtSpread(spread(runs.map((r) => kb(r.socketProcRssBefore) / 1024)), 1),
    fmtSpread(spread(runs.map((r) => kb(r.socketProcRssAfter) / 1024)), 1),
    fmtSpread(spread(runs.map((r) => kb(r.rssPerConnBytes))), 1),
    fmtSpread(spread(runs.map((r) => kb(r.allRssPerConnBytes))), 1),
    fmtSpread(spread(runs.map((r) => kb(r.heapPerConnBytes))), 1),
  ]);
  printTable(
    `idle-memory: ${n} idle websocket connections vs 0, ${settleMs / 1000} s after the burst, median (min-max) of ${flags.runs} runs`,
    [
      'target',
      'connected',
      'RSS at 0 (MiB)',
      `RSS at ${n} (MiB)`,
      'RSS/conn KB (socket process)',
      'RSS/conn KB (all processes)',
      'heap/conn KB',
    ],
    rows,
  );
  return { clients: n, settleMs, results };
}
