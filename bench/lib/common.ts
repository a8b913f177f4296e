/** Shared pieces of the scenarios: the environment, one measured run, warm-up barriers, tables and JSON output. */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { repoRoot, startFakeFrappe, startRedis, type FakeFrappe, type RedisServer } from '../../test/harness';
import type { ClientSpec } from './loadgen-protocol';
import type { LoadGen } from './loadgen';
import { cpuDelta, readCpuSeconds, readIo, readMachineCpu, sampleCpu, sum } from './proc';
import type { Publisher } from './publisher';
import type { PublishTarget } from './publisher-protocol';
import { spread, type Spread } from './stats';
import { CHANNEL, OneShotPublisher, SITE, sleep, type Target } from './topology';

export interface Flags {
  runs: number;
  durationMs: number;
  clients: number;
  loadgens: number;
  [k: string]: unknown;
}

export function flagNumber(flags: Record<string, unknown>, name: string, dflt: number): number {
  const v = flags[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number`);
  return n;
}

export function flagList(flags: Record<string, unknown>, name: string, dflt: string[]): string[] {
  const v = flags[name];
  return typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : dflt;
}

export interface BenchEnv {
  redis: RedisServer;
  fake: FakeFrappe;
  close(): Promise<void>;
}

export async function startEnv(latencyMs = 0): Promise<BenchEnv> {
  const redis = await startRedis({ label: 'bench redis' });
  const fake = await startFakeFrappe({ latencyMs });
  fake.allow('*', 'BenchDoc');
  return {
    redis,
    fake,
    close: async () => {
      await fake.close();
      await redis.close();
    },
  };
}

/** n System Users with sids `s.<user>` (the raw-ws baseline relies on that shape), registered in the fake backend. */
export function makeClients(
  env: BenchEnv,
  n: number,
  opts: { prefix?: string; docRoomSize?: number; sharedSid?: boolean } = {},
): ClientSpec[] {
  const prefix = opts.prefix ?? 'u';
  const out: ClientSpec[] = [];
  for (let i = 0; i < n; i++) {
    const user = opts.sharedSid ? `${prefix}shared` : `${prefix}${i}`;
    const sid = `s.${user}`;
    if (!opts.sharedSid || i === 0) env.fake.addSession(sid, { user, user_type: 'System User' });
    const spec: ClientSpec = { sid };
    if (opts.docRoomSize) spec.docs = [['BenchDoc', `d${Math.floor(i / opts.docRoomSize)}`]];
    out.push(spec);
  }
  return out;
}

export function userRooms(n: number, prefix = 'u'): PublishTarget[] {
  return Array.from({ length: n }, (_, i) => ({ ns: SITE, room: `user:${prefix}${i}` }));
}

export function docRooms(n: number, size: number): PublishTarget[] {
  return Array.from({ length: Math.ceil(n / size) }, (_, k) => ({ ns: SITE, room: `doc:BenchDoc/d${k}` }));
}

/**
 * Publishes `warm` to every room until `expectClients` clients have seen one:
 * proves connections and subscriptions (including the adapter's dynamic
 * shard subscriptions) are in place before a measured run.
 */
export async function warmUp(
  target: Target,
  loadgen: LoadGen,
  rooms: readonly PublishTarget[],
  expectClients: number,
  timeoutMs = 60_000,
): Promise<void> {
  const pub = new OneShotPublisher(target);
  try {
    await loadgen.window();
    const deadline = Date.now() + timeoutMs;
    let warm = 0;
    while (Date.now() < deadline) {
      await pub.publish('warm', rooms);
      for (let i = 0; i < 10; i++) {
        await sleep(150);
        warm = (await loadgen.report()).warm;
        if (warm >= expectClients) return;
      }
    }
    throw new Error(`warm-up: only ${warm}/${expectClients} clients received a marker within ${timeoutMs} ms`);
  } finally {
    pub.close();
  }
}

export interface RunResult {
  valid: boolean;
  invalid: string[];
  rate: number;
  sent: number;
  expected: number;
  deliveries: number;
  lost: number;
  sendMs: number;
  windowMs: number;
  eventsPerSec: number;
  deliveriesPerSec: number;
  gatewayCpuSec: number;
  redisCpuSec: number;
  cpuByProcess: Record<string, number>;
  deliveriesPerGatewayCpuSec: number;
  gatewayCpuUsPerEvent: number;
  gatewayCpuUsPerDelivery: number;
  totalCpuUsPerEvent: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  loadgenCpu: number[];
  publisherCpu: number;
  publisherAchievedRate: number;
  bytesReadPerWorkerPerEvent?: number[];
  disconnects: number;
  /** Whole machine: cores busy on average during the window (of nproc). */
  machineBusyCores: number;
  /** Load generators + publisher CPU seconds (they share the machine). */
  generatorCpuSec: number;
  /**
   * Redis `INFO commandstats` over the run, per event sent: calls and the
   * command's own µs (execution only: not the socket reads and writes, which
   * redis-server's CPU above includes). Scripts' inner calls count under
   * their own names as well as under `evalsha`.
   */
  redisCommands?: Record<string, { callsPerEvent: number; usecPerEvent: number }>;
  /** Set by scenarios that know the target's primary (fanout): its CPU per event sent. */
  primaryCpuUsPerEvent?: number;
}

export interface MeasureOptions {
  target: Target;
  loadgen: LoadGen;
  publisher: Publisher;
  redis?: RedisServer;
  rate: number;
  durationMs: number;
  rooms: readonly PublishTarget[];
  /** Deliveries each event should produce. */
  perEvent: number;
  seqStart?: number;
  padBytes?: number;
  /** Every event with its own idempotency key. */
  keys?: boolean;
  /** Sample /proc/<worker>/io rchar (bytes a worker read, i.e. from Redis). */
  workerIo?: boolean;
}

export type CommandStats = Map<string, { calls: number; usec: number }>;

/** Calls and µs per command from `INFO commandstats` (`cmdstat_<name>:calls=N,usec=N,...,failed_calls=N`). */
export function parseCommandStats(info: string): CommandStats {
  const m: CommandStats = new Map();
  for (const line of info.split('\n')) {
    const x = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (x) m.set(x[1] ?? '', { calls: Number(x[2]), usec: Number(x[3]) });
  }
  return m;
}

/**
 * `INFO commandstats` of the bench's redis-server (a fresh connection: its own
 * commands are a few calls); null when it cannot be read (a scenario that
 * stops Redis): the run is measured without it.
 */
async function commandStats(url: string): Promise<CommandStats | null> {
  const r = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
  r.on('error', () => undefined);
  try {
    return parseCommandStats(await r.info('commandstats'));
  } catch {
    return null;
  } finally {
    r.disconnect();
  }
}

/** Per event sent, each command's calls and µs between two `parseCommandStats` (commands not called in between are left out). */
export function commandsPerEvent(a: CommandStats, b: CommandStats, events: number): RunResult['redisCommands'] {
  const out: NonNullable<RunResult['redisCommands']> = {};
  for (const [k, v] of b) {
    const before = a.get(k) ?? { calls: 0, usec: 0 };
    const calls = v.calls - before.calls;
    if (calls > 0) out[k] = { callsPerEvent: calls / Math.max(1, events), usecPerEvent: (v.usec - before.usec) / Math.max(1, events) };
  }
  return out;
}

/** One line: `cmd calls/event µs/event, ...`, busiest first. */
export function fmtCommands(c: RunResult['redisCommands']): string {
  if (!c) return '';
  return Object.entries(c)
    .filter(([, v]) => v.callsPerEvent >= 0.01)
    .sort((x, y) => y[1].usecPerEvent - x[1].usecPerEvent)
    .map(([k, v]) => `${k} ${fmt(v.callsPerEvent, 2)}x ${fmt(v.usecPerEvent, 2)}us`)
    .join(', ');
}

function readRchar(pid: number): number {
  return readIo(pid)['rchar'] ?? NaN;
}

/** One measured run: window, publish at `rate` for `durationMs`, wait for deliveries to drain, diff CPU. */
export async function measure(o: MeasureOptions): Promise<RunResult> {
  const gwPids = o.target.pids();
  const workerPids = o.target.workerPids();
  const redisPid = o.redis?.pid;
  await o.loadgen.window();
  const all = [...gwPids, ...(redisPid ? [redisPid] : [])];
  const io0 = o.workerIo ? workerPids.map(readRchar) : [];
  const cs0 = o.redis ? await commandStats(o.redis.url) : null;
  const t0 = performance.now();
  const cpu0 = sampleCpu(all);
  const m0 = readMachineCpu();
  const extra0 = sampleCpu([...o.loadgen.pids, o.publisher.pid]);
  const pub = await o.publisher.run({
    mode: o.target.publish.mode,
    redisUrl: o.target.publish.redisUrl,
    httpUrl: o.target.publish.httpUrl,
    channel: CHANNEL,
    rate: o.rate,
    durationMs: o.durationMs,
    targets: [...o.rooms],
    seqStart: o.seqStart ?? 0,
    padBytes: o.padBytes ?? 0,
    keys: o.keys === true,
  });
  const expected = pub.sent * o.perEvent;
  // Drain: until everything arrived or nothing moved for 1 s (max 15 s).
  let rep = await o.loadgen.report();
  let last = rep.deliveries;
  let still = performance.now();
  const drainDeadline = performance.now() + 15_000;
  while (rep.deliveries < expected && performance.now() < drainDeadline && performance.now() - still < 1000) {
    await sleep(100);
    rep = await o.loadgen.report();
    if (rep.deliveries !== last) {
      last = rep.deliveries;
      still = performance.now();
    }
  }
  const cpu1 = sampleCpu(all);
  const m1 = readMachineCpu();
  const extra1 = sampleCpu([...o.loadgen.pids, o.publisher.pid]);
  const windowMs = performance.now() - t0;
  const io1 = o.workerIo ? workerPids.map(readRchar) : [];
  const cs1 = o.redis ? await commandStats(o.redis.url) : null;
  const d = cpuDelta(cpu0, cpu1);
  const gwCpu = sum(gwPids.map((p) => d.get(p) ?? 0));
  const redisCpu = redisPid ? (d.get(redisPid) ?? 0) : 0;
  const cpuByProcess: Record<string, number> = {};
  for (const p of gwPids) cpuByProcess[p === o.target.primaryPid ? `primary(${p})` : `worker(${p})`] = d.get(p) ?? 0;
  if (redisPid) cpuByProcess[`redis(${redisPid})`] = redisCpu;
  const invalid: string[] = [];
  if (rep.saturated)
    invalid.push(`load generator saturated (${rep.cpuFractions.map((f) => `${Math.round(f * 100)}%`).join(', ')} of a core)`);
  const pubCpu = pub.cpuMs / Math.max(1, pub.wallMs);
  if (pubCpu >= 0.9) invalid.push(`publisher saturated (${Math.round(pubCpu * 100)}% of a core)`);
  if (pub.behind)
    invalid.push(
      `publisher fell behind the offered rate (achieved ${Math.round(pub.achievedRate)}/s of ${o.rate}/s, max backlog ${pub.maxBacklog})`,
    );
  const sendS = pub.sendMs / 1000;
  const h = rep.hist;
  return {
    valid: invalid.length === 0,
    invalid,
    rate: o.rate,
    sent: pub.sent,
    expected,
    deliveries: rep.deliveries,
    lost: Math.max(0, expected - rep.deliveries),
    sendMs: pub.sendMs,
    windowMs,
    eventsPerSec: pub.sent / sendS,
    deliveriesPerSec: rep.deliveries / sendS,
    gatewayCpuSec: gwCpu,
    redisCpuSec: redisCpu,
    cpuByProcess,
    deliveriesPerGatewayCpuSec: rep.deliveries / gwCpu,
    gatewayCpuUsPerEvent: (gwCpu / pub.sent) * 1e6,
    gatewayCpuUsPerDelivery: (gwCpu / Math.max(1, rep.deliveries)) * 1e6,
    totalCpuUsPerEvent: ((gwCpu + redisCpu) / pub.sent) * 1e6,
    latencyMs: { p50: h.percentile(50), p90: h.percentile(90), p99: h.percentile(99), max: h.max },
    loadgenCpu: rep.cpuFractions,
    publisherCpu: pubCpu,
    publisherAchievedRate: pub.achievedRate,
    ...(o.workerIo ? { bytesReadPerWorkerPerEvent: io1.map((b, i) => (b - (io0[i] ?? 0)) / pub.sent) } : {}),
    disconnects: rep.disconnects,
    machineBusyCores: ((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total)) * os.cpus().length,
    generatorCpuSec: sum(cpuDelta(extra0, extra1).values()),
    ...(cs0 && cs1 ? { redisCommands: commandsPerEvent(cs0, cs1, pub.sent) } : {}),
  };
}

/** Median and spread of a numeric field over the valid runs (all runs when none is valid, flagged). */
export function summarize<T extends { valid: boolean }>(runs: T[], pick: (r: T) => number): Spread & { validRuns: number } {
  const valid = runs.filter((r) => r.valid);
  return { ...spread(valid.map(pick)), validRuns: valid.length };
}

export function fmt(n: number, digits = 0): string {
  if (!Number.isFinite(n)) return '-';
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** "median (min-max)" */
export function fmtSpread(s: Spread, digits = 0): string {
  if (s.n === 0) return 'n/a';
  if (s.n === 1) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}-${fmt(s.max, digits)})`;
}

export function printTable(title: string, header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => '| ' + cells.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ') + ' |';
  console.log(`\n${title}`);
  console.log(line(header));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(r));
}

export function machineInfo(): Record<string, unknown> {
  let redisVersion = '';
  try {
    redisVersion = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    // absent
  }
  return {
    nproc: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    redis: redisVersion,
    loadavgAtStart: os.loadavg(),
    uptimeLoadAtEnd: undefined as unknown,
  };
}

export function saveResult(scenario: string, data: unknown): string {
  const dir = path.join(repoRoot, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${scenario}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(data, null, 2));
  return file;
}

/** CPU fraction of one core a process used over `ms` (a quick busy check). */
export async function busyFraction(pid: number, ms: number): Promise<number> {
  const a = readCpuSeconds(pid);
  await sleep(ms);
  return (readCpuSeconds(pid) - a) / (ms / 1000);
}
