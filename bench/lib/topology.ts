/**
 * Topologies under test, started by the bench itself: the gateway (standalone
 * or one host of N workers, or several hosts sharing Redis) through the test
 * harness, and the baselines in bench/baselines/.
 */
import path from 'node:path';
import readline from 'node:readline';
import { Redis } from 'ioredis';
import {
  freePort,
  httpRequest,
  repoRoot,
  startGateway,
  uniqueKeyPrefix,
  type FakeFrappe,
  type GatewayHandle,
  type RedisServer,
} from '../../test/harness';
import { spawnManaged, type ManagedProcess } from '../../test/harness/processes';
import { frappeEvent, nowMs } from './frames';
import { childrenOf } from './proc';
import type { PublishTarget } from './publisher-protocol';

export const SITE = 'bench.local';
export const CHANNEL = 'events';

export type TargetKind = 'gateway' | 'stock' | 'raw-ws';

export interface Target {
  /** e.g. gateway-standalone, gateway-2w, stock, stock-4w, raw-ws */
  readonly name: string;
  readonly kind: TargetKind;
  readonly url: string;
  readonly origin: string;
  readonly publish: { mode: 'redis' | 'http'; redisUrl?: string; httpUrl?: string };
  readonly primaryPid: number;
  /** Primary (or the single process) and its worker processes, looked up now. */
  pids(): number[];
  workerPids(): number[];
  gateway?: GatewayHandle;
  close(): Promise<void>;
}

export interface GatewayTargetOptions {
  /** undefined = standalone (no Redis) */
  workers?: number;
  redis?: RedisServer;
  fake: FakeFrappe;
  keyPrefix?: string;
  env?: Record<string, string | undefined>;
  name?: string;
  /** Fixed ports, to restart a host on the same address. */
  port?: number;
  opsPort?: number;
  /** Another build's entry point (`dist/main.js`), to compare builds in one run. */
  mainPath?: string;
}

export async function startGatewayTarget(o: GatewayTargetOptions): Promise<Target> {
  const cluster = o.workers !== undefined;
  if (cluster && !o.redis) throw new Error('cluster mode needs Redis');
  const gw = await startGateway({
    redisUrl: cluster ? o.redis?.url : undefined,
    workers: o.workers,
    backendUrl: o.fake.url,
    keyPrefix: o.keyPrefix ?? uniqueKeyPrefix(),
    logLevel: 'warn',
    readyTimeoutMs: 60_000,
    closeGraceMs: 3000,
    ...(o.port === undefined ? {} : { port: o.port }),
    ...(o.opsPort === undefined ? {} : { opsPort: o.opsPort }),
    ...(o.mainPath === undefined ? {} : { mainPath: o.mainPath }),
    // BENCH_CPU_PROF_DIR=dir: every gateway process writes a .cpuprofile there on exit
    // (workers inherit the primary's execArgv; NODE_OPTIONS may not carry --cpu-prof).
    nodeArgs: process.env['BENCH_CPU_PROF_DIR'] ? ['--cpu-prof', `--cpu-prof-dir=${process.env['BENCH_CPU_PROF_DIR']}`] : [],
    // BENCH_GATEWAY_MAIN=path/main.js: another build of the gateway (A/B against a baseline build in the same session).
    ...(process.env['BENCH_GATEWAY_MAIN'] ? { mainPath: process.env['BENCH_GATEWAY_MAIN'] } : {}),
    env: {
      GATEWAY_DRAIN_MS: '500',
      GATEWAY_SHUTDOWN_GRACE_MS: '5000',
      GATEWAY_HOST: '127.0.0.1',
      // Every load-generator client comes from 127.0.0.1, most with one credential;
      // the stock server has none of these limits.
      GATEWAY_MAX_CONNECTIONS_PER_IP: '0',
      GATEWAY_MAX_CONNECTIONS_PER_USER: '0',
      GATEWAY_CLIENT_EVENTS_PER_SEC: '0',
      // Capacity is measured without admission control (the stock server has none);
      // scenarios that study it set it themselves.
      GATEWAY_ADMISSION_RATE: '0',
      GATEWAY_ADMISSION_CONCURRENCY: '0',
      ...(o.env ?? {}),
    },
  });
  if (cluster) {
    // readyz is green with one worker up; wait for all of them.
    const deadline = Date.now() + 60_000;
    for (;;) {
      const c = (await gw.cluster()) as { workers?: unknown[] };
      if ((c.workers?.length ?? 0) >= (o.workers ?? 1) && childrenOf(gw.pid).length >= (o.workers ?? 1)) break;
      if (Date.now() > deadline) throw new Error('gateway workers did not come up');
      await sleep(100);
    }
    await sleep(300);
  }
  const name = o.name ?? (cluster ? `gateway-${o.workers}w` : 'gateway-standalone');
  return {
    name,
    kind: 'gateway',
    url: gw.url,
    origin: gw.url,
    publish: cluster ? { mode: 'redis', redisUrl: o.redis?.url } : { mode: 'http', httpUrl: `${gw.opsUrl}/api/v1/publish` },
    primaryPid: gw.pid,
    pids: () => [gw.pid, ...childrenOf(gw.pid)],
    workerPids: () => (cluster ? childrenOf(gw.pid) : [gw.pid]),
    gateway: gw,
    close: () => gw.close(),
  };
}

export interface BaselineOptions {
  kind: 'stock' | 'raw-ws';
  redis: RedisServer;
  fake: FakeFrappe;
  /** stock only: 0 = one process (Frappe), N = sticky primary + N processes each consuming the channel. */
  workers?: number;
}

export async function startBaseline(o: BaselineOptions): Promise<Target> {
  const port = await freePort();
  const workers = o.kind === 'stock' ? (o.workers ?? 0) : 0;
  const file = path.join(repoRoot, 'bench', 'baselines', o.kind === 'stock' ? 'stock.ts' : 'raw-ws.ts');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_PORT: String(port),
    BENCH_REDIS_URL: o.redis.url,
    BENCH_BACKEND_URL: o.fake.url,
    BENCH_WORKERS: String(workers),
    BENCH_CHANNEL: CHANNEL,
  };
  const proc: ManagedProcess = await spawnManaged(process.execPath, ['--import', 'tsx', file], {
    cwd: repoRoot,
    env,
    stdout: 'pipe',
    stderr: 'pipe',
  });
  let ready = 0;
  const lines: string[] = [];
  for (const s of [proc.proc.stdout, proc.proc.stderr]) {
    if (s)
      readline.createInterface({ input: s }).on('line', (l) => {
        lines.push(l);
        if (/listening|worker ready/.test(l)) ready++;
      });
  }
  const want = Math.max(1, workers);
  const deadline = Date.now() + 60_000;
  while (ready < want) {
    if (proc.exitInfo) throw new Error(`${o.kind} exited: ${lines.slice(-10).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`${o.kind} did not start: ${lines.slice(-10).join('\n')}`);
    await sleep(50);
  }
  // Its Redis subscription(s): wait until every process is subscribed.
  const probe = new Redis(o.redis.url);
  try {
    for (;;) {
      const r = (await probe.call('PUBSUB', 'NUMSUB', CHANNEL)) as [string, number];
      if (Number(r[1]) >= want) break;
      if (Date.now() > deadline) throw new Error(`${o.kind} did not subscribe`);
      await sleep(50);
    }
  } finally {
    probe.disconnect();
  }
  const url = `http://127.0.0.1:${port}`;
  return {
    name: o.kind === 'stock' ? (workers === 0 ? 'stock' : `every-process-${workers}w`) : 'raw-ws',
    kind: o.kind,
    url,
    origin: url,
    publish: { mode: 'redis', redisUrl: o.redis.url },
    primaryPid: proc.pid,
    pids: () => [proc.pid, ...childrenOf(proc.pid)],
    workerPids: () => (workers > 0 ? childrenOf(proc.pid) : [proc.pid]),
    close: async () => {
      await proc.terminate({ signal: 'SIGTERM', graceMs: 2000 });
    },
  };
}

/** One-off publishes (warm-up markers) through the target's ingress. */
export class OneShotPublisher {
  private redis: Redis | undefined;
  constructor(private readonly target: Target) {
    if (target.publish.mode === 'redis') this.redis = new Redis(target.publish.redisUrl ?? '');
  }
  async publish(event: string, targets: readonly PublishTarget[]): Promise<void> {
    const t = nowMs();
    if (this.redis) {
      const pipe = this.redis.pipeline();
      for (const x of targets) pipe.publish(CHANNEL, frappeEvent(event, x.ns, x.room, -1, t));
      await pipe.exec();
      return;
    }
    for (let i = 0; i < targets.length; i += 500) {
      const batch = targets.slice(i, i + 500).map((x) => ({ event, message: { s: -1, t }, namespace: x.ns, room: x.room }));
      const res = await httpRequest(this.target.publish.httpUrl ?? '', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch),
      });
      if (res.status >= 300) throw new Error(`publish API answered ${res.status}: ${res.body}`);
    }
  }
  close(): void {
    this.redis?.disconnect();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The plain targets by name: gateway-standalone, gateway-<N>w (one host of N workers), stock, raw-ws. */
export function startNamedTarget(
  name: string,
  env: { redis: RedisServer; fake: FakeFrappe },
  gatewayEnv?: Record<string, string>,
): Promise<Target> {
  if (name === 'gateway-standalone') return startGatewayTarget({ fake: env.fake, env: gatewayEnv });
  if (/^gateway-\d+w$/.test(name))
    return startGatewayTarget({ fake: env.fake, redis: env.redis, workers: Number(name.slice(8, -1)), env: gatewayEnv });
  if (name === 'stock' || name === 'raw-ws') return startBaseline({ kind: name, redis: env.redis, fake: env.fake });
  throw new Error(`unknown target ${name}`);
}
