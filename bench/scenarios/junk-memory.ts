/**
 * junk-memory: where a junk flood's memory goes, per process of a 2-worker
 * host (`npm run bench -- junk-memory --runs 3 [--messages 100000]
 * [--chunk 10000] [--snapshot DIR]`). Publishes `--messages` junk messages
 * of the hostile-input suite (test/e2e/junk-support.ts) in pipelines of
 * `--chunk`, each awaited until the primary received it and the leader
 * broadcast it; samples RSS every 50 ms; forces a GC through the inspector
 * before, right after, and once the standby buffer aged out (10 s).
 * `--snapshot DIR` writes the primary's heap snapshot right after the flood;
 * `--main PATH` runs another build's dist/main.js (a before/after comparison);
 * `--logs FILE` writes the gateway's output to FILE.run<N>;
 * `--nodeArgs "..."`: arguments of the primary's node command line (workers
 * inherit them), e.g. `--trace-gc` with `--logs` (not allowed in NODE_OPTIONS);
 * `--standby` adds a second host (1 worker) whose primary stays a standby
 * (its RSS is the table's 'standby primary' rows; `--alloc` then profiles it);
 * `--peak` prints what the primary's memory is made of at its sampled RSS peak;
 * `--nodeOptions "..."` starts the gateway with that NODE_OPTIONS (V8 flags
 * such as `--max-semi-space-size=N` for the primary; workers inherit it).
 *
 * burst mode (`--burst`): one pipeline of `--messages` at once, and whether
 * the primary's events subscription survived it (gateway_events_subscription_lost_total).
 */
import { createWriteStream, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import {
  connectClient,
  pollUntil,
  startFakeFrappe,
  startRedis,
  uniqueKeyPrefix,
  waitConnect,
  type GatewayHandle,
} from '../../test/harness';
import { collectEverywhere, inspectorUrls, rssMb, startInspectedGateway, type MemoryMb } from '../../test/e2e/hardening-support';
import { JUNK, makeJunk, MAX_MESSAGE_BYTES, SITE } from '../../test/e2e/junk-support';
import { flagNumber, printTable, type Flags } from '../lib/common';
import { spread } from '../lib/stats';

const STANDBY_MS = 10_000;

/** Writes a heap snapshot of the process behind `url` to `file`. */
function heapSnapshot(url: string, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = createWriteStream(file);
    const ws = new WebSocket(url, { maxPayload: 1 << 30 });
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.takeHeapSnapshot', params: { reportProgress: false } })));
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw)) as { id?: number; method?: string; params?: { chunk?: string } };
      if (msg.method === 'HeapProfiler.addHeapSnapshotChunk') out.write(msg.params?.chunk ?? '');
      else if (msg.id === 1) {
        ws.close();
        out.end(() => resolve());
      }
    });
  });
}

/** Evaluates `expression` (a string-valued JS expression) in the process behind `url`. */
function evaluate(url: string, expression: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.on('error', reject);
    ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression } })));
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw)) as { id?: number; result?: { result?: { value?: string } } };
      if (msg.id !== 1) return;
      ws.close();
      resolve(msg.result?.result?.value ?? '');
    });
  });
}

/** V8 heap spaces and malloc'd memory of a process, committed MB (after whatever GC ran last). */
const SPACES_EXPR = `(() => { const v8 = process.mainModule.require('v8'); const mb = (n) => (n / 1048576).toFixed(1);
  const h = v8.getHeapStatistics(); const m = process.memoryUsage();
  return 'heapTotal ' + mb(m.heapTotal) + ' used ' + mb(m.heapUsed) + ' malloced ' + mb(h.malloced_memory) + ' external ' + mb(m.external) + ' arrayBuffers ' + mb(m.arrayBuffers) + ' | ' +
    v8.getHeapSpaceStatistics().map((s) => s.space_name.replace('_space', '') + ' ' + mb(s.physical_space_size) + '/' + mb(s.space_used_size)).join(', '); })()`;

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

/**
 * Sampling heap profile of everything the process allocates (collected
 * garbage included; `--alloc promoted`: without what scavenges collected,
 * i.e. what survived into the old space) while `during` runs: the top
 * allocation sites by bytes.
 */
async function allocationProfile(url: string, during: () => Promise<void>, promotedOnly: boolean): Promise<string[]> {
  const ws = new WebSocket(url, { maxPayload: 1 << 30 });
  await new Promise((r, j) => ws.once('open', r).once('error', j));
  let id = 0;
  const call = (method: string, params: unknown = {}): Promise<unknown> =>
    new Promise((resolve) => {
      const my = ++id;
      const on = (raw: WebSocket.RawData): void => {
        const msg = JSON.parse(String(raw)) as { id?: number; result?: unknown };
        if (msg.id !== my) return;
        ws.off('message', on);
        resolve(msg.result);
      };
      ws.on('message', on);
      ws.send(JSON.stringify({ id: my, method, params }));
    });
  await call('HeapProfiler.startSampling', {
    samplingInterval: 4096,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: !promotedOnly,
  });
  await during();
  const res = (await call('HeapProfiler.stopSampling')) as { profile: { head: ProfileNode } };
  ws.close();
  const sites = new Map<string, number>();
  let total = 0;
  const walk = (n: ProfileNode, stack: string[]): void => {
    const f = n.callFrame;
    const here = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/')}:${f.lineNumber + 1}`;
    const s2 = [...stack, here].slice(-3);
    if (n.selfSize > 0) {
      const key = s2.join(' < ');
      sites.set(key, (sites.get(key) ?? 0) + n.selfSize);
      total += n.selfSize;
    }
    for (const c of n.children) walk(c, s2);
  };
  walk(res.profile.head, []);
  return [
    `allocated in total ~${(total / 1048576).toFixed(0)} MB (sampled)`,
    ...[...sites.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, 25)
      .map(([k, v]) => `${(v / 1048576).toFixed(1)} MB  ${k.split(' < ').reverse().join(' < ')}`),
  ];
}

/**
 * What the primary's memory is made of at its RSS peak (`--peak`): every
 * 100 ms during the flood, process.memoryUsage(), V8's committed spaces and
 * /proc's RSS split, evaluated in the process; the sample with the highest
 * RSS is kept. Committed sizes, garbage included: what RSS is made of.
 */
const PEAK_EXPR = `(() => { const v8 = process.mainModule.require('v8'); const fs = process.mainModule.require('fs');
  const m = process.memoryUsage(); const h = v8.getHeapStatistics(); const st = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k) => { const line = st.split('\\n').find((l) => l.startsWith(k + ':')); return line ? parseInt(line.slice(k.length + 1), 10) * 1024 : 0; };
  const o = { rss: kb('VmRSS'), rssAnon: kb('RssAnon'), heapCommitted: h.total_physical_size, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, malloced: h.malloced_memory };
  for (const s of v8.getHeapSpaceStatistics()) o[s.space_name.replace('_space', '')] = s.physical_space_size;
  o.pendingWrites = process._getActiveRequests().reduce((n, r) => n + (typeof r.bytes === 'number' ? r.bytes : 0), 0);
  return JSON.stringify(o); })()`;

class PeakSampler {
  private ws: WebSocket | null = null;
  private timer: NodeJS.Timeout | null = null;
  private id = 0;
  base: Record<string, number> | null = null;
  peak: Record<string, number> | null = null;
  samples = 0;
  constructor(private readonly url: string) {}
  private ask(): Promise<Record<string, number>> {
    const ws = this.ws as WebSocket;
    const my = ++this.id;
    return new Promise((resolve) => {
      const on = (raw: WebSocket.RawData): void => {
        const msg = JSON.parse(String(raw)) as { id?: number; result?: { result?: { value?: string } } };
        if (msg.id !== my) return;
        ws.off('message', on);
        resolve(JSON.parse(msg.result?.result?.value ?? '{}') as Record<string, number>);
      };
      ws.on('message', on);
      ws.send(JSON.stringify({ id: my, method: 'Runtime.evaluate', params: { expression: PEAK_EXPR } }));
    });
  }
  async start(): Promise<void> {
    const ws = new WebSocket(this.url);
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    this.ws = ws;
    this.base = await this.ask();
    let busy = false;
    this.timer = setInterval(() => {
      if (busy) return;
      busy = true;
      void this.ask().then((s) => {
        busy = false;
        this.samples++;
        if (!this.peak || (s['rss'] ?? 0) > (this.peak['rss'] ?? 0)) this.peak = s;
      });
    }, 100);
  }
  stop(): string {
    if (this.timer) clearInterval(this.timer);
    this.ws?.close();
    const b = this.base ?? {};
    const p = this.peak ?? {};
    const keys = [
      'rss',
      'rssAnon',
      'heapCommitted',
      'new',
      'old',
      'code',
      'map',
      'large_object',
      'new_large_object',
      'heapUsed',
      'external',
      'arrayBuffers',
      'malloced',
      'pendingWrites',
    ];
    return `${this.samples} samples; ` + keys.map((k) => `${k} ${(((p[k] ?? 0) - (b[k] ?? 0)) / 1048576).toFixed(1)}`).join(', ');
  }
}

async function spaces(gw: GatewayHandle, label: string): Promise<void> {
  const urls = inspectorUrls(gw);
  for (let i = 0; i < urls.length; i++) console.log(`  ${label} [${i}] ${await evaluate(urls[i] as string, SPACES_EXPR)}`);
}

async function counters(gw: GatewayHandle): Promise<{ received: number; lag: number; lost: number }> {
  return {
    received: (await gw.metricValue('gateway_events_received_total')) ?? 0,
    lag: (await gw.metricValue('gateway_consumer_lag_events')) ?? 0,
    lost: (await gw.metricValue('gateway_events_subscription_lost_total')) ?? 0,
  };
}

interface RunResult {
  messages: number;
  floodMs: number;
  lost: number;
  received: number;
  /** Per process, primary first: MB. */
  rssBase: number[];
  rssPeak: number[];
  rssEnd: number[];
  rssEndGc: number[];
  rssAged: number[];
  liveBase: number[];
  liveEnd: number[];
  liveAged: number[];
  heapEnd: number[];
  externalEnd: number[];
}

const live = (m: MemoryMb): number => m.heapUsed + m.external;

async function oneRun(
  messages: number,
  chunk: number,
  burst: boolean,
  snapshotDir: string | null,
  run: number,
  verbose: boolean,
  allocProfile: boolean | 'promoted',
  mainPath: string | null,
  nodeOptions: string | null,
  peakBreakdown: boolean,
  logFile: string | null,
  nodeArgs: string[],
  withStandby: boolean,
): Promise<RunResult> {
  const redis = await startRedis({ label: 'bench redis' });
  const fake = await startFakeFrappe();
  fake.addSession('sid-watcher', { user: 'watcher@example.com', user_type: 'System User' });
  let gw: GatewayHandle | undefined;
  let standby: GatewayHandle | undefined;
  try {
    // One cluster: both hosts share the key prefix (lease, progress).
    const keyPrefix = uniqueKeyPrefix();
    const host = (workers: number) =>
      startInspectedGateway({
        redisUrl: redis.url,
        keyPrefix,
        workers,
        backendUrl: fake.url,
        defaultSite: SITE,
        ...(mainPath ? { mainPath } : {}),
        ...(nodeArgs.length > 0 ? { nodeArgs } : {}),
        env: {
          GATEWAY_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
          GATEWAY_DROP_LOG_INTERVAL_MS: '600000',
          GATEWAY_STANDBY_BUFFER_MS: String(STANDBY_MS),
          ...(nodeOptions === null ? {} : { NODE_OPTIONS: nodeOptions }),
        },
      });
    gw = (await host(2)).gw;
    const g = gw;
    await pollUntil(
      async () => {
        const info = (await g.cluster()) as { workers: { nodeId: string | null }[]; leader: unknown };
        return info.workers.length === 2 && info.workers.every((w) => w.nodeId !== null) && info.leader ? true : undefined;
      },
      { timeoutMs: 20_000, intervalMs: 50, description: '2 workers and a leader' },
    );
    // `--standby`: a second host (1 worker) started once the first leads; its primary is a standby throughout.
    if (withStandby) standby = (await host(1)).gw;
    const sb = standby;
    const socket = connectClient(g.url, SITE, { cookie: 'sid-watcher' });
    await waitConnect(socket, 10_000);
    const pub = redis.client();
    const publish = async (first: number, n: number): Promise<void> => {
      const before = (await counters(g)).received;
      const pipe = pub.pipeline();
      let queued = 0;
      for (let r = first; queued < n; r++) {
        for (const p of makeJunk(SITE, r).payloads) {
          if (queued++ >= n) break;
          pipe.publish('events', p);
        }
      }
      await pipe.exec();
      await pollUntil(
        async () => {
          const c = await counters(g);
          // A lost subscription means some never arrive: then wait only for the leader to catch up.
          if (c.lost === 0 && c.received < before + n) return undefined;
          return c.lag === 0 ? true : undefined;
        },
        { timeoutMs: 120_000, intervalMs: 100, description: `${n} junk messages consumed and broadcast` },
      );
    };
    await publish(1000, JUNK); // warm-up
    // The baseline once the warm-up aged out of the standby buffer (what the flood leaves is then compared like for like).
    await new Promise((r) => setTimeout(r, STANDBY_MS + 1500));
    const base = [...(await collectEverywhere(g)), ...(sb ? (await collectEverywhere(sb)).slice(0, 1) : [])];
    if (verbose) await spaces(g, 'baseline');
    const pids = base.map((m) => m.pid);
    const rssBase = pids.map(rssMb);
    const rssPeak = [...rssBase];
    const sampler = setInterval(() => pids.forEach((p, i) => (rssPeak[i] = Math.max(rssPeak[i] ?? 0, rssMb(p)))), 50);
    const receivedBefore = (await counters(g)).received;
    const started = Date.now();
    const flood = async (): Promise<void> => {
      if (burst) await publish(2000, messages);
      else for (let done = 0, r = 0; done < messages; done += chunk, r++) await publish(2000 + r * 10, Math.min(chunk, messages - done));
    };
    const primaryUrl = inspectorUrls(g)[0];
    const peak = peakBreakdown && primaryUrl ? new PeakSampler(primaryUrl) : null;
    await peak?.start();
    const standbyUrl = sb ? inspectorUrls(sb)[0] : undefined;
    const standbyPeak = peakBreakdown && standbyUrl ? new PeakSampler(standbyUrl) : null;
    await standbyPeak?.start();
    try {
      // With --standby, the standby primary's profile.
      const profiled = standbyUrl ?? primaryUrl;
      if (allocProfile && profiled)
        for (const line of await allocationProfile(profiled, flood, allocProfile === 'promoted')) console.log(`  ${line}`);
      else await flood();
    } finally {
      clearInterval(sampler);
      if (peak) console.log(`  primary at its sampled RSS peak, MB over the baseline (committed): ${peak.stop()}`);
      if (standbyPeak) console.log(`  standby primary at its sampled RSS peak, MB over the baseline (committed): ${standbyPeak.stop()}`);
    }
    const floodMs = Date.now() - started;
    if (sb) {
      const lead = async (h: GatewayHandle): Promise<string> =>
        `leader ${String(((await h.cluster()) as { node: { leader: boolean } }).node.leader)}, transitions to leader ${(await h.metricValue('gateway_leader_transitions_total', { to: 'leader' })) ?? 0}`;
      console.log(`  after the flood: host 1 ${await lead(g)}; host 2 ${await lead(sb)}`);
    }
    const rssEnd = pids.map(rssMb);
    // The leader's garbage bound (GATEWAY_LEADER_GARBAGE_BYTES): collections run and their pauses (absent on older builds).
    const gcCount = await g.metricValue('gateway_leader_garbage_collection_seconds_count');
    const gcSum = await g.metricValue('gateway_leader_garbage_collection_seconds_sum');
    if (gcCount !== undefined) console.log(`  leader garbage collections ${gcCount}, pause total ${((gcSum ?? 0) * 1000).toFixed(0)} ms`);
    const urls = inspectorUrls(g);
    if (snapshotDir && urls[0]) await heapSnapshot(urls[0], path.join(snapshotDir, `junk-primary-run${run}.heapsnapshot`));
    if (verbose) await spaces(g, 'right after (no GC)');
    const standbyEnd = [
      (await g.metricValue('gateway_standby_buffer_bytes')) ?? NaN,
      (await g.metricValue('gateway_standby_buffer_events')) ?? NaN,
      ...(sb
        ? [(await sb.metricValue('gateway_standby_buffer_bytes')) ?? NaN, (await sb.metricValue('gateway_standby_buffer_events')) ?? NaN]
        : []),
    ];
    const end = [...(await collectEverywhere(g)), ...(sb ? (await collectEverywhere(sb)).slice(0, 1) : [])];
    if (verbose) await spaces(g, 'right after (GC)');
    const rssEndGc = pids.map(rssMb);
    const c = await counters(g);
    // Once the standby buffer aged out (and a GC).
    await new Promise((r) => setTimeout(r, STANDBY_MS + 1500));
    const standbyAged = [
      (await g.metricValue('gateway_standby_buffer_bytes')) ?? NaN,
      (await g.metricValue('gateway_standby_buffer_events')) ?? NaN,
    ];
    const aged = [...(await collectEverywhere(g)), ...(sb ? (await collectEverywhere(sb)).slice(0, 1) : [])];
    if (verbose) await spaces(g, 'aged out (GC)');
    const rssAged = pids.map(rssMb);
    socket.disconnect();
    if (logFile) writeFileSync(`${logFile}.run${run}`, g.logs.join('\n'));
    console.log(`  standby buffer bytes/events right after ${standbyEnd.join('/')}, aged out ${standbyAged.join('/')}`);
    return {
      messages,
      floodMs,
      lost: c.lost,
      received: c.received - receivedBefore,
      rssBase,
      rssPeak,
      rssEnd,
      rssEndGc,
      rssAged,
      liveBase: base.map(live),
      liveEnd: end.map(live),
      liveAged: aged.map(live),
      heapEnd: end.map((m) => m.heapUsed),
      externalEnd: end.map((m) => m.external),
    };
  } finally {
    await standby?.close();
    await gw?.close();
    await fake.close();
    await redis.close();
  }
}

export async function junkMemory(flags: Flags): Promise<unknown> {
  const messages = flagNumber(flags, 'messages', 100_000);
  const chunk = flagNumber(flags, 'chunk', JUNK);
  const burst = flags['burst'] === true;
  const snapshotDir = typeof flags['snapshot'] === 'string' ? flags['snapshot'] : null;
  const runs: RunResult[] = [];
  for (let r = 0; r < flags.runs; r++) {
    runs.push(
      await oneRun(
        messages,
        chunk,
        burst,
        snapshotDir,
        r,
        flags['spaces'] === true,
        flags['alloc'] === 'promoted' ? 'promoted' : flags['alloc'] === true,
        typeof flags['main'] === 'string' ? flags['main'] : null,
        typeof flags['nodeOptions'] === 'string' ? flags['nodeOptions'] : null,
        flags['peak'] === true,
        typeof flags['logs'] === 'string' ? flags['logs'] : null,
        typeof flags['nodeArgs'] === 'string' ? flags['nodeArgs'].split(/\s+/).filter(Boolean) : [],
        flags['standby'] === true,
      ),
    );
    const x = runs[runs.length - 1] as RunResult;
    console.log(
      `run ${r + 1}: ${x.received} received in ${x.floodMs} ms, subscription lost ${x.lost}; RSS MB base/peak/end/endGC/aged: ${x.rssBase
        .map((_, i) => [x.rssBase, x.rssPeak, x.rssEnd, x.rssEndGc, x.rssAged].map((a) => (a[i] ?? 0).toFixed(0)).join('/'))
        .join(', ')}; live MB base/end/aged: ${x.liveBase
        .map((_, i) => [x.liveBase, x.liveEnd, x.liveAged].map((a) => (a[i] ?? 0).toFixed(1)).join('/'))
        .join(', ')}; heap/external at end: ${x.heapEnd.map((h, i) => `${h.toFixed(1)}/${(x.externalEnd[i] ?? 0).toFixed(1)}`).join(', ')}`,
    );
  }
  const roles = ['primary', 'worker 1', 'worker 2', ...(flags['standby'] === true ? ['standby primary'] : [])];
  const row = (label: string, f: (x: RunResult, i: number) => number): string[][] =>
    roles.map((role, i) => {
      const s = spread(runs.map((x) => f(x, i)));
      return [`${label} (${role})`, s.median.toFixed(1), `${s.min.toFixed(1)}..${s.max.toFixed(1)}`];
    });
  printTable(
    `junk-memory: ${messages} junk messages${burst ? ' in one pipeline' : ` in pipelines of ${chunk}`}, ${runs.length} runs (MB)`,
    ['growth over the baseline', 'median', 'min..max'],
    [
      ...row('RSS peak', (x, i) => (x.rssPeak[i] ?? 0) - (x.rssBase[i] ?? 0)),
      ...row('RSS right after, after a GC', (x, i) => (x.rssEndGc[i] ?? 0) - (x.rssBase[i] ?? 0)),
      ...row('RSS once the buffer aged out', (x, i) => (x.rssAged[i] ?? 0) - (x.rssBase[i] ?? 0)),
      ...row('live right after, after a GC', (x, i) => (x.liveEnd[i] ?? 0) - (x.liveBase[i] ?? 0)),
      ...row('live once the buffer aged out', (x, i) => (x.liveAged[i] ?? 0) - (x.liveBase[i] ?? 0)),
      [
        'flood ms',
        String(spread(runs.map((x) => x.floodMs)).median),
        `${spread(runs.map((x) => x.floodMs)).min}..${spread(runs.map((x) => x.floodMs)).max}`,
      ],
      ['events subscription losses', runs.map((x) => x.lost).join(','), ''],
    ],
  );
  return { messages, chunk, burst, runs };
}
