/**
 * history-cost: what the missed-event history costs. CPU per event (gateway
 * processes + redis-server, from /proc) with GATEWAY_HISTORY on and off in the
 * same run at several user-room event rates, for a ~300-byte Frappe event;
 * and Redis memory per 1,000 history entries (MEMORY USAGE of the stream over
 * XLEN, and the used_memory growth over the entries added).
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
import { frappeEvent, nowMs } from '../lib/frames';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import { SITE, startGatewayTarget } from '../lib/topology';
import { uniqueKeyPrefix } from '../../test/harness';

const EVENT_BYTES = 300;

interface MemoryFigures {
  entries: number;
  streamBytes: number;
  streamBytesPer1000: number;
  usedMemoryDelta: number;
  usedMemoryPer1000: number;
}

function usedMemory(info: string): number {
  const m = /^used_memory:(\d+)/m.exec(info);
  return m ? Number(m[1]) : NaN;
}

/** Pad that brings a bench event (largest sequence/room of this run) to about `bytes` on the events channel. */
export function padFor(bytes: number, rooms: number): number {
  const bare = frappeEvent('bench', SITE, `user:u${rooms - 1}`, 9_999_999, nowMs(), 'x').length - 1;
  return Math.max(0, bytes - bare);
}

export async function historyCost(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const rates = flagList(flags, 'rates', ['1000', '5000']).map(Number);
  const workers = flagNumber(flags, 'workers', 2);
  const modes = flagList(flags, 'history', ['off', 'on']);
  const padBytes = padFor(flagNumber(flags, 'eventBytes', EVENT_BYTES), n);
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(n);
  const results: Record<string, Record<string, RunResult[]>> = {};
  const memory: Record<string, MemoryFigures> = {};
  const probe = env.redis.client();
  try {
    for (const rate of rates) {
      const byMode: Record<string, RunResult[]> = (results[String(rate)] = {});
      for (const history of modes) {
        const keyPrefix = uniqueKeyPrefix();
        const streamKey = `{${keyPrefix}}:history`;
        const t = await startGatewayTarget({
          fake: env.fake,
          redis: env.redis,
          workers,
          keyPrefix,
          env: { GATEWAY_HISTORY: history, GATEWAY_MAX_CONNECTIONS_PER_USER: '0', GATEWAY_CLIENT_EVENTS_PER_SEC: '0' },
        });
        const loadgen = await LoadGen.start(flags.loadgens);
        try {
          const c = await loadgen.connect({ url: t.url, site: SITE, origin: t.origin, clients: makeClients(env, n), ratePerSec: 2000 });
          if (c.connected !== n) throw new Error(`only ${c.connected}/${n} connected: ${JSON.stringify(c.errors)}`);
          await warmUp(t, loadgen, rooms, n);
          const len0 = history === 'on' ? Number(await probe.xlen(streamKey)) : 0;
          const mem0 = usedMemory(await probe.info('memory'));
          const runs: RunResult[] = [];
          for (let i = 0; i < flags.runs; i++) {
            const r = await measure({
              target: t,
              loadgen,
              publisher,
              redis: env.redis,
              rate,
              durationMs: flags.durationMs,
              rooms,
              perEvent: 1,
              padBytes,
            });
            console.error(
              `[history-cost] ${rate}/s history ${history} run ${i + 1}: ${fmt(r.totalCpuUsPerEvent)} us CPU/event (gw ${fmt(r.gatewayCpuUsPerEvent)}, redis ${fmt((r.redisCpuSec / r.sent) * 1e6)}), p99 ${fmt(r.latencyMs.p99, 1)} ms, lost ${r.lost}${r.valid ? '' : ` INVALID: ${r.invalid.join('; ')}`}`,
            );
            runs.push(r);
          }
          byMode[history] = runs;
          if (history === 'on') {
            const entries = Number(await probe.xlen(streamKey));
            const streamBytes = Number(await probe.call('MEMORY', 'USAGE', streamKey, 'SAMPLES', '0'));
            const mem1 = usedMemory(await probe.info('memory'));
            memory[String(rate)] = {
              entries,
              streamBytes,
              streamBytesPer1000: (streamBytes / Math.max(1, entries)) * 1000,
              usedMemoryDelta: mem1 - mem0,
              usedMemoryPer1000: ((mem1 - mem0) / Math.max(1, entries - len0)) * 1000,
            };
            console.error(`[history-cost] ${rate}/s memory: ${JSON.stringify(memory[String(rate)])}`);
          }
        } finally {
          await loadgen.close();
          await t.close();
        }
      }
    }
  } finally {
    probe.disconnect();
    publisher.close();
    await env.close();
  }
  const rows: string[][] = [];
  for (const [rate, byMode] of Object.entries(results)) {
    const off = summarize(byMode['off'] ?? [], (r) => r.totalCpuUsPerEvent).median;
    for (const [history, runs] of Object.entries(byMode)) {
      const total = summarize(runs, (r) => r.totalCpuUsPerEvent);
      rows.push([
        rate,
        history,
        fmtSpread(total),
        fmtSpread(summarize(runs, (r) => r.gatewayCpuUsPerEvent)),
        fmtSpread(summarize(runs, (r) => (r.redisCpuSec / r.sent) * 1e6)),
        fmtSpread(
          summarize(runs, (r) => r.latencyMs.p99),
          1,
        ),
        String(runs.reduce((a, r) => a + r.lost, 0)),
        history === 'on' && Number.isFinite(off) ? `${fmt(total.median - off)} (${fmt(((total.median - off) / off) * 100)}%)` : '',
        `${runs.filter((r) => r.valid).length}/${runs.length}`,
      ]);
    }
  }
  printTable(
    `history-cost: ${n} clients in user rooms, ${workers} workers, ~${EVENT_BYTES}-byte events (pad ${padBytes}), ${flags.durationMs / 1000} s per run, median (min-max)`,
    [
      'events/s',
      'history',
      'CPU us/event (gw+redis)',
      'gw CPU us/event',
      'redis CPU us/event',
      'p99 ms',
      'lost',
      'history on - off',
      'valid',
    ],
    rows,
  );
  printTable(
    'history-cost: Redis memory of the history stream',
    ['events/s run', 'XLEN', 'MEMORY USAGE bytes', 'bytes per 1,000 entries (MEMORY USAGE)', 'used_memory growth per 1,000 entries'],
    Object.entries(memory).map(([rate, m]) => [
      rate,
      fmt(m.entries),
      fmt(m.streamBytes),
      fmt(m.streamBytesPer1000),
      fmt(m.usedMemoryPer1000),
    ]),
  );
  return { clients: n, workers, padBytes, results, memory };
}
