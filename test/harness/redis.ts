/**
 * Real redis-server processes for integration tests: standalone, cluster and
 * sentinel. Each process gets a free port, its own temp dir (logfile, config,
 * nodes.conf) and its own process group; nothing here ever touches a Redis
 * that was already running on the machine.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import { findExecutable } from './paths';
import { freePort, freePorts } from './ports';
import { spawnManaged, type ManagedProcess } from './processes';
import { pairsToRecord, parseInfo, redisCommand } from './resp';
import type { Scope } from './scope';
import { pollUntil, withTimeout } from './wait';

export const REDIS_HOST = '127.0.0.1';
/** How long a fresh redis-server may take to answer PING. */
const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 20;
/** SIGTERM grace before SIGKILL; with `--save ""` a clean shutdown is immediate. */
const STOP_GRACE_MS = 5_000;
const CLUSTER_READY_TIMEOUT_MS = 20_000;
const SENTINEL_READY_TIMEOUT_MS = 20_000;

export interface HostPort {
  host: string;
  port: number;
}

export class RedisHarnessError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'RedisHarnessError';
    this.code = code;
  }
}

function requireBinary(name: 'redis-server' | 'redis-cli'): string {
  const found = findExecutable(`/usr/bin/${name}`, process.env['PATH']);
  if (found === undefined) {
    throw new RedisHarnessError(
      'HARNESS_ERR_REDIS_MISSING',
      `${name} not found (looked in /usr/bin and PATH). Install it with: apt-get install -y redis-server`,
    );
  }
  return found;
}

function logTail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function makeTempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), `rtgw-${prefix}-`));
}

/** How to (re)launch one redis-server process; fixed for the life of a RedisServer. */
interface LaunchSpec {
  label: string;
  port: number;
  logFile: string;
  dir: string;
  args: string[];
}

async function launch(spec: LaunchSpec): Promise<ManagedProcess> {
  const proc = await spawnManaged(requireBinary('redis-server'), spec.args, { cwd: spec.dir });
  try {
    await pollUntil(async () => ((await redisCommand(REDIS_HOST, spec.port, ['PING'], 1000)) === 'PONG' ? true : undefined), {
      timeoutMs: READY_TIMEOUT_MS,
      intervalMs: READY_POLL_MS,
      description: () => `${spec.label} on port ${spec.port} to answer PING; log:\n${logTail(spec.logFile)}`,
      failIf: () => {
        const exit = proc.exitInfo;
        if (exit === undefined) return undefined;
        return new RedisHarnessError(
          'HARNESS_ERR_REDIS_EXITED',
          `${spec.label} on port ${spec.port} exited (code ${String(exit.code)}, signal ${String(exit.signal)}) before answering PING; log:\n${logTail(spec.logFile)}`,
        );
      },
    });
  } catch (err) {
    await proc.terminate({ graceMs: 0 });
    throw err;
  }
  return proc;
}

function baseServerArgs(port: number, dir: string, logFile: string): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    REDIS_HOST,
    '--save',
    '',
    '--appendonly',
    'no',
    '--daemonize',
    'no',
    '--dir',
    dir,
    '--logfile',
    logFile,
  ];
}

export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Pid of the current process (changes on restart). */
  readonly pid: number;
  /** True between a successful start/restart and kill/stop/close. */
  readonly running: boolean;
  readonly dir: string;
  readonly logFile: string;
  /** A new ioredis client to this server, disconnected by close(). */
  client(options?: RedisOptions): Redis;
  /** Sends `signal` (default SIGKILL) to the process group and awaits exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** SIGSTOP: the server stays up but stops answering (a hung Redis). */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Starts again on the same port and dir (stopping first if running); resolves when PING answers. */
  restart(): Promise<void>;
  /** SIGTERM, SIGKILL after a grace period; awaits exit. The dir is kept for restart(). */
  stop(): Promise<void>;
  /** Idempotent: disconnects tracked clients, kills the process, removes the dir. */
  close(): Promise<void>;
}

interface ServerInternals {
  spec: LaunchSpec;
  /** Remove this dir on close (false when a parent handle owns it). */
  ownsDir: boolean;
}

/** Attaches a no-op 'error' listener: ioredis would otherwise print reconnect errors to the console. */
function quiet<T extends Redis | Cluster>(client: T): T {
  client.on('error', () => undefined);
  return client;
}

async function createServer(internals: ServerInternals, scope: Scope | undefined): Promise<RedisServer> {
  const { spec } = internals;
  const clients = new Set<Redis>();
  let proc: ManagedProcess | undefined;
  let closing: Promise<void> | undefined;

  const killProc = async (signal: NodeJS.Signals): Promise<void> => {
    const current = proc;
    if (current === undefined) return;
    if (signal === 'SIGKILL') await current.terminate({ graceMs: 0 });
    else {
      current.signalGroup(signal);
      await current.exited;
      await current.terminate({ graceMs: 0 });
    }
    if (proc === current) proc = undefined;
  };

  const server: RedisServer = {
    host: REDIS_HOST,
    port: spec.port,
    url: `redis://${REDIS_HOST}:${spec.port}`,
    get pid() {
      if (proc === undefined)
        throw new RedisHarnessError('HARNESS_ERR_REDIS_NOT_RUNNING', `${spec.label} on port ${spec.port} is not running`);
      return proc.pid;
    },
    get running() {
      return proc !== undefined && proc.exitInfo === undefined;
    },
    dir: spec.dir,
    logFile: spec.logFile,
    client(options = {}) {
      if (closing !== undefined) throw new RedisHarnessError('HARNESS_ERR_CLOSED', `${spec.label}: client() after close()`);
      const client = quiet(new Redis({ host: REDIS_HOST, port: spec.port, ...options }));
      clients.add(client);
      return client;
    },
    kill(signal = 'SIGKILL') {
      if (signal === 'SIGSTOP' || signal === 'SIGCONT' || signal === 'SIGTSTP') {
        throw new RedisHarnessError('HARNESS_ERR_BAD_SIGNAL', `kill(${signal}) would never see an exit; use pause()/resume()`);
      }
      return killProc(signal);
    },
    pause() {
      proc?.signalGroup('SIGSTOP');
    },
    resume() {
      proc?.signalGroup('SIGCONT');
    },
    async restart() {
      if (closing !== undefined) throw new RedisHarnessError('HARNESS_ERR_CLOSED', `${spec.label}: restart() after close()`);
      if (proc !== undefined) await server.stop();
      proc = await launch(spec);
    },
    async stop() {
      const current = proc;
      if (current === undefined) return;
      current.signalGroup('SIGCONT'); // a paused server cannot handle SIGTERM
      await current.terminate({ signal: 'SIGTERM', graceMs: STOP_GRACE_MS });
      if (proc === current) proc = undefined;
    },
    close() {
      closing ??= (async () => {
        for (const client of clients) client.disconnect();
        clients.clear();
        try {
          proc?.signalGroup('SIGCONT');
          await proc?.terminate({ signal: 'SIGTERM', graceMs: STOP_GRACE_MS });
          proc = undefined;
        } finally {
          if (internals.ownsDir) rmSync(spec.dir, { recursive: true, force: true });
        }
      })();
      return closing;
    },
  };

  scope?.add(server);
  try {
    proc = await launch(spec);
  } catch (err) {
    await server.close();
    throw err;
  }
  return server;
}

export interface StartRedisOptions {
  scope?: Scope;
  /** Default: a free port. */
  port?: number;
  /** Extra redis-server arguments, e.g. `['--maxmemory', '10mb']`. */
  args?: string[];
  /** Use this dir instead of a fresh temp dir (not removed on close). */
  dir?: string;
  /** Name used in errors. */
  label?: string;
}

/** A standalone redis-server on a free loopback port, ready (PING answered) when this resolves. */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  requireBinary('redis-server');
  const port = options.port ?? (await freePort());
  const ownsDir = options.dir === undefined;
  const dir = options.dir ?? makeTempDir(`redis-${port}`);
  const logFile = path.join(dir, 'redis.log');
  const spec: LaunchSpec = {
    label: options.label ?? 'redis-server',
    port,
    dir,
    logFile,
    args: [...baseServerArgs(port, dir, logFile), ...(options.args ?? [])],
  };
  return createServer({ spec, ownsDir }, options.scope);
}

// ---------------------------------------------------------------------------
// Cluster

export interface RedisClusterHandle {
  nodes: HostPort[];
  /** One RedisServer per master: kill/restart individual nodes. */
  servers: RedisServer[];
  /** `redis://127.0.0.1:<port>` of every node. */
  urls: string[];
  /** GATEWAY_* variables selecting this cluster, for `startGateway({ env })`. */
  gatewayEnv: Record<string, string>;
  /** A new ioredis Cluster client, disconnected by close(). */
  client(options?: ClusterOptions): Cluster;
  /** Resolves when every running node reports cluster_state:ok. */
  waitForClusterOk(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export interface StartRedisClusterOptions {
  scope?: Scope;
  /** At least 3 (a redis-cli --cluster create requirement). Default 3. */
  masters?: number;
  /** cluster-node-timeout in ms. Default 2000, so failure detection in tests is quick. */
  nodeTimeoutMs?: number;
}

async function runRedisCli(args: string[], timeoutMs: number): Promise<string> {
  const proc = await spawnManaged(requireBinary('redis-cli'), args, { stdout: 'pipe', stderr: 'pipe' });
  const chunks: Buffer[] = [];
  proc.proc.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk));
  proc.proc.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk));
  try {
    const exit = await withTimeout(proc.exited, timeoutMs, `redis-cli ${args.join(' ')}`);
    const output = Buffer.concat(chunks).toString('utf8');
    if (exit.code !== 0) {
      throw new RedisHarnessError('HARNESS_ERR_REDIS_CLI', `redis-cli ${args.join(' ')} exited with ${String(exit.code)}:\n${output}`);
    }
    return output;
  } finally {
    await proc.terminate({ graceMs: 0 });
  }
}

async function clusterStateOk(port: number): Promise<boolean> {
  const info = parseInfo(String(await redisCommand(REDIS_HOST, port, ['CLUSTER', 'INFO'], 1000)));
  return info['cluster_state'] === 'ok' && info['cluster_slots_assigned'] === '16384';
}

/** `masters` cluster-enabled redis-servers joined by `redis-cli --cluster create` (no replicas). */
export async function startRedisCluster(options: StartRedisClusterOptions = {}): Promise<RedisClusterHandle> {
  const masters = options.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new RedisHarnessError('HARNESS_ERR_CLUSTER_SIZE', `startRedisCluster: masters must be an integer >= 3, got ${masters}`);
  }
  requireBinary('redis-cli');
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 2000;
  // Client port and cluster bus port per node (cluster-port, Redis >= 7), so
  // the default port+10000 rule cannot collide or overflow.
  const ports = await freePorts(masters * 2);
  const servers: RedisServer[] = [];
  const clients = new Set<Cluster>();
  let closing: Promise<void> | undefined;

  const handle: RedisClusterHandle = {
    nodes: [],
    servers,
    urls: [],
    gatewayEnv: {},
    client(clientOptions = {}) {
      if (closing !== undefined) throw new RedisHarnessError('HARNESS_ERR_CLOSED', 'redis cluster: client() after close()');
      const client = quiet(new Cluster(handle.nodes, clientOptions));
      clients.add(client);
      return client;
    },
    async waitForClusterOk(timeoutMs = CLUSTER_READY_TIMEOUT_MS) {
      await pollUntil(
        async () => {
          for (const server of servers) {
            if (server.running && !(await clusterStateOk(server.port))) return undefined;
          }
          return true;
        },
        { timeoutMs, intervalMs: 50, description: 'every cluster node to report cluster_state:ok' },
      );
    },
    close() {
      closing ??= (async () => {
        for (const client of clients) client.disconnect();
        clients.clear();
        const results = await Promise.allSettled(servers.map((server) => server.close()));
        const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed.length > 0)
          throw new AggregateError(
            failed.map((f) => f.reason as unknown),
            'redis cluster: close failed',
          );
      })();
      return closing;
    },
  };
  options.scope?.add(handle);

  try {
    const started = await Promise.all(
      Array.from({ length: masters }, (_, i) => {
        const port = ports[i * 2];
        const busPort = ports[i * 2 + 1];
        if (port === undefined || busPort === undefined) throw new Error('freePorts returned too few ports');
        return startRedis({
          port,
          label: `redis cluster node ${i}`,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            'nodes.conf',
            '--cluster-port',
            String(busPort),
            '--cluster-node-timeout',
            String(nodeTimeoutMs),
          ],
        });
      }),
    );
    servers.push(...started);
    handle.nodes.push(...started.map((s) => ({ host: s.host, port: s.port })));
    handle.urls.push(...started.map((s) => s.url));
    Object.assign(handle.gatewayEnv, {
      GATEWAY_REDIS_MODE: 'cluster',
      GATEWAY_REDIS_URL: started[0]?.url ?? '',
      GATEWAY_REDIS_CLUSTER_NODES: handle.nodes.map((n) => `${n.host}:${n.port}`).join(','),
    });
    await runRedisCli(
      ['--cluster', 'create', ...handle.nodes.map((n) => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'],
      30_000,
    );
    await handle.waitForClusterOk();
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  }
  return handle;
}

// ---------------------------------------------------------------------------
// Sentinel

export interface RedisSentinelHandle {
  masterName: string;
  /** The initial master. */
  master: RedisServer;
  /** The initial replica (`--replicaof` the master). */
  replica: RedisServer;
  sentinel: HostPort & { server: RedisServer };
  /** For ioredis `sentinels:` options. */
  sentinels: HostPort[];
  /** GATEWAY_* variables selecting this sentinel setup, for `startGateway({ env })`. */
  gatewayEnv: Record<string, string>;
  /** A new ioredis client that finds the master through the sentinel; disconnected by close(). */
  client(options?: RedisOptions): Redis;
  /** What the sentinel currently reports as master. */
  currentMaster(): Promise<HostPort>;
  /**
   * Resolves with the new master of the next +switch-master the sentinel
   * publishes that has not been consumed by an earlier call. The subscription
   * exists from start-up, so a switch is never missed.
   */
  waitForFailover(timeoutMs?: number): Promise<HostPort>;
  close(): Promise<void>;
}

export interface StartRedisSentinelOptions {
  scope?: Scope;
  /** Default 'mymaster'. */
  masterName?: string;
}

async function replicaInSync(port: number): Promise<boolean> {
  const info = parseInfo(String(await redisCommand(REDIS_HOST, port, ['INFO', 'replication'], 1000)));
  return info['role'] === 'slave' && info['master_link_status'] === 'up';
}

async function sentinelSeesTopology(sentinelPort: number, masterName: string, replicaPort: number): Promise<boolean> {
  const master = pairsToRecord(await redisCommand(REDIS_HOST, sentinelPort, ['SENTINEL', 'MASTER', masterName], 1000));
  const masterFlags = (master['flags'] ?? '').split(',');
  if (!masterFlags.includes('master') || masterFlags.some((f) => f.endsWith('_down') || f === 'disconnected')) return false;
  const replicas = await redisCommand(REDIS_HOST, sentinelPort, ['SENTINEL', 'REPLICAS', masterName], 1000);
  if (!Array.isArray(replicas)) return false;
  return replicas.some((entry) => {
    const r = pairsToRecord(entry);
    const flags = (r['flags'] ?? '').split(',');
    return (
      r['port'] === String(replicaPort) &&
      flags.includes('slave') &&
      !flags.some((f) => f.endsWith('_down') || f === 'disconnected') &&
      r['master-link-status'] === 'ok'
    );
  });
}

/**
 * A master, one replica and one sentinel (quorum 1, down-after 1000 ms,
 * failover-timeout 3000 ms). The sentinel is started only once the replica is
 * in sync, so its first INFO of the master already lists the replica and a
 * failover is possible as soon as this resolves.
 */
export async function startRedisSentinel(options: StartRedisSentinelOptions = {}): Promise<RedisSentinelHandle> {
  const masterName = options.masterName ?? 'mymaster';
  const clients = new Set<Redis>();
  const owned: RedisServer[] = [];
  const switches: HostPort[] = [];
  const waiters: ((hp: HostPort) => void)[] = [];
  let subscriber: Redis | undefined;
  let closing: Promise<void> | undefined;

  const closeAll = async (): Promise<void> => {
    subscriber?.disconnect();
    for (const client of clients) client.disconnect();
    clients.clear();
    // Sentinel first, so it does not react to the data nodes going away.
    const results: PromiseSettledResult<void>[] = [];
    for (const server of [...owned].reverse()) {
      results.push(...(await Promise.allSettled([server.close()])));
    }
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0)
      throw new AggregateError(
        failed.map((f) => f.reason as unknown),
        'redis sentinel: close failed',
      );
  };
  const closeOnce = (): Promise<void> => {
    closing ??= closeAll();
    return closing;
  };
  options.scope?.add(closeOnce);

  try {
    // Diskless sync would otherwise wait 5 s for more replicas before the first full sync.
    const master = await startRedis({ label: 'sentinel master', args: ['--repl-diskless-sync-delay', '0'] });
    owned.push(master);
    const replica = await startRedis({ label: 'sentinel replica', args: ['--replicaof', REDIS_HOST, String(master.port)] });
    owned.push(replica);
    await pollUntil(async () => ((await replicaInSync(replica.port)) ? true : undefined), {
      timeoutMs: SENTINEL_READY_TIMEOUT_MS,
      intervalMs: 50,
      description: () => `replica ${replica.port} to sync with master ${master.port}; log:\n${logTail(replica.logFile)}`,
    });

    const sentinelPort = await freePort();
    const sentinelDir = makeTempDir(`sentinel-${sentinelPort}`);
    const sentinelLog = path.join(sentinelDir, 'sentinel.log');
    const confPath = path.join(sentinelDir, 'sentinel.conf');
    // Sentinel rewrites its config file at runtime, so it must be a writable file of our own.
    writeFileSync(
      confPath,
      [
        `port ${sentinelPort}`,
        `bind ${REDIS_HOST}`,
        'daemonize no',
        `dir ${sentinelDir}`,
        `logfile ${sentinelLog}`,
        `sentinel monitor ${masterName} ${REDIS_HOST} ${master.port} 1`,
        `sentinel down-after-milliseconds ${masterName} 1000`,
        `sentinel failover-timeout ${masterName} 3000`,
        '',
      ].join('\n'),
    );
    const sentinelServer = await createServer(
      {
        spec: { label: 'redis-sentinel', port: sentinelPort, dir: sentinelDir, logFile: sentinelLog, args: [confPath, '--sentinel'] },
        ownsDir: true,
      },
      undefined,
    );
    owned.push(sentinelServer);

    subscriber = quiet(new Redis({ host: REDIS_HOST, port: sentinelPort }));
    subscriber.on('message', (channel: string, message: string) => {
      if (channel !== '+switch-master') return;
      // "<name> <old-ip> <old-port> <new-ip> <new-port>"
      const [name, , , host, port] = message.split(' ');
      if (name !== masterName || host === undefined || port === undefined) return;
      const next = { host, port: Number(port) };
      const waiter = waiters.shift();
      if (waiter !== undefined) waiter(next);
      else switches.push(next);
    });
    await withTimeout(subscriber.subscribe('+switch-master'), 5000, 'subscribing to +switch-master on the sentinel');

    await pollUntil(async () => ((await sentinelSeesTopology(sentinelPort, masterName, replica.port)) ? true : undefined), {
      timeoutMs: SENTINEL_READY_TIMEOUT_MS,
      intervalMs: 50,
      description: () => `sentinel ${sentinelPort} to see master ${master.port} and replica ${replica.port}; log:\n${logTail(sentinelLog)}`,
    });

    const sentinelAddress = { host: REDIS_HOST, port: sentinelPort };
    return {
      masterName,
      master,
      replica,
      sentinel: { ...sentinelAddress, server: sentinelServer },
      sentinels: [sentinelAddress],
      gatewayEnv: {
        GATEWAY_REDIS_MODE: 'sentinel',
        // Only so nothing can fall back to a default redis://127.0.0.1:6379; the master is found through the sentinel.
        GATEWAY_REDIS_URL: master.url,
        GATEWAY_REDIS_SENTINELS: `${REDIS_HOST}:${sentinelPort}`,
        GATEWAY_REDIS_SENTINEL_NAME: masterName,
      },
      client(clientOptions = {}) {
        if (closing !== undefined) throw new RedisHarnessError('HARNESS_ERR_CLOSED', 'redis sentinel: client() after close()');
        const client = quiet(new Redis({ sentinels: [sentinelAddress], name: masterName, ...clientOptions }));
        clients.add(client);
        return client;
      },
      async currentMaster() {
        const reply = await redisCommand(REDIS_HOST, sentinelPort, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName], 1000);
        if (!Array.isArray(reply) || typeof reply[0] !== 'string' || reply[1] === undefined) {
          throw new RedisHarnessError('HARNESS_ERR_SENTINEL', `sentinel does not know master ${masterName}`);
        }
        return { host: reply[0], port: Number(reply[1]) };
      },
      waitForFailover(timeoutMs = 30_000) {
        const ready = switches.shift();
        if (ready !== undefined) return Promise.resolve(ready);
        let resolveWaiter: ((hp: HostPort) => void) | undefined;
        const next = new Promise<HostPort>((resolve) => {
          resolveWaiter = resolve;
          waiters.push(resolve);
        });
        return withTimeout(next, timeoutMs, () => `+switch-master for ${masterName}; sentinel log:\n${logTail(sentinelLog)}`).catch(
          (err: unknown) => {
            const index = resolveWaiter === undefined ? -1 : waiters.indexOf(resolveWaiter);
            if (index >= 0) waiters.splice(index, 1);
            throw err;
          },
        );
      },
      close: closeOnce,
    };
  } catch (err) {
    await closeOnce().catch(() => undefined);
    throw err;
  }
}

/** True if a redis-server binary is installed (lets suites skip with a clear message). */
export function redisAvailable(): boolean {
  return findExecutable('/usr/bin/redis-server', process.env['PATH']) !== undefined;
}
