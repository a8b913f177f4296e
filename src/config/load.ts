import { cpus } from 'node:os';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { readBenchConfig, type BenchConfig } from './bench';
import { OPTIONS, type GatewayConfig, type HostPort, type OptionKind, type OptionName, type OptionSpec, type RedisConfig } from './schema';

export type LoadResult =
  | { readonly ok: true; readonly config: GatewayConfig; readonly notes: readonly string[] }
  | { readonly ok: false; readonly errors: readonly string[] };

type Parsed = number | string | readonly string[] | readonly HostPort[];

function parseValue(env: string, raw: string, type: OptionKind): { value?: Parsed; error?: string } {
  const value = raw.trim();
  switch (type.kind) {
    case 'port': {
      if (!/^\d+$/.test(value)) return { error: `${env} must be a port number (1-65535), got "${raw}"` };
      const n = Number(value);
      if (n < 1 || n > 65535) return { error: `${env} must be a port number (1-65535), got "${raw}"` };
      return { value: n };
    }
    case 'int': {
      if (!/^-?\d+$/.test(value)) return { error: `${env} must be an integer between ${type.min} and ${type.max}, got "${raw}"` };
      const n = Number(value);
      if (n < type.min || n > type.max) return { error: `${env} must be an integer between ${type.min} and ${type.max}, got "${raw}"` };
      return { value: n };
    }
    case 'string':
      if (value === '') return { error: `${env} must not be empty` };
      return { value };
    case 'url': {
      let url: URL;
      try {
        url = new URL(value);
      } catch {
        return { error: `${env} must be a URL (${type.protocols.join(' or ')}//...), got "${raw}"` };
      }
      if (!type.protocols.includes(url.protocol)) {
        return { error: `${env} must use ${type.protocols.join(' or ')}, got "${url.protocol}" in "${raw}"` };
      }
      return { value: value.replace(/\/+$/, '') };
    }
    case 'enum':
      if (!type.values.includes(value)) return { error: `${env} must be one of ${type.values.join(', ')}, got "${raw}"` };
      return { value };
    case 'list':
      return {
        value: value
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== ''),
      };
    case 'hostports': {
      const out: HostPort[] = [];
      for (const item of value
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '')) {
        const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(item);
        const port = m ? Number(m[2]) : NaN;
        if (!m || !m[1] || port < 1 || port > 65535) {
          return { error: `${env} must be a comma-separated list of host:port, got "${item}"` };
        }
        out.push({ host: m[1].replace(/^\[|\]$/g, ''), port });
      }
      if (out.length === 0) return { error: `${env} must list at least one host:port` };
      return { value: out };
    }
  }
}

/** Maps bench config keys onto our environment spelling, so one parser validates both. */
function benchToEnv(bench: BenchConfig): Record<string, string> {
  const out: Record<string, string> = {};
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : undefined);
  const port = str(bench.socketio_port);
  if (port !== undefined) out[OPTIONS.port.env] = port;
  // v14 benches name the events Redis `redis_socketio`; v15+ publish on redis_queue.
  const redis = str(bench.redis_queue) ?? str(bench.redis_socketio);
  if (redis !== undefined) out[OPTIONS.redisUrl.env] = redis;
  const site = str(bench.default_site);
  if (site !== undefined) out[OPTIONS.defaultSite.env] = site;
  const wport = str(bench.webserver_port);
  if (wport !== undefined) {
    const whost = str(bench.webserver_host) ?? '127.0.0.1';
    out[OPTIONS.backendUrl.env] = `http://${whost}:${wport}`;
  }
  return out;
}

/**
 * Parses the whole configuration, reporting every problem at once. Only this
 * module reads the environment (callers pass `process.env`).
 */
export function loadConfig(env: NodeJS.ProcessEnv): LoadResult {
  const errors: string[] = [];
  const notes: string[] = [];
  const get = (name: OptionName): string | undefined => {
    const v = env[OPTIONS[name].env];
    return v === undefined || v === '' ? undefined : v;
  };

  let benchEnv: Record<string, string> = {};
  let appsPath: string | null = null;
  const benchPath = get('benchPath');
  if (benchPath !== undefined) {
    if (!existsSync(benchPath) || !statSync(benchPath).isDirectory()) {
      errors.push(`GATEWAY_BENCH_PATH must be a Frappe bench directory, "${benchPath}" is not a directory`);
    } else {
      const bench = readBenchConfig(benchPath);
      errors.push(...bench.problems);
      benchEnv = benchToEnv(bench.values);
      appsPath = join(benchPath, 'apps');
      if (Object.keys(benchEnv).length > 0) notes.push(`read bench config from ${benchPath}: ${Object.keys(benchEnv).join(', ')}`);
    }
  }

  const values: Partial<Record<OptionName, Parsed>> = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const spec: OptionSpec = OPTIONS[name];
    const fromEnv = get(name);
    const raw = fromEnv ?? benchEnv[spec.env] ?? spec.default;
    if (raw === undefined) continue;
    if (raw === '' && spec.type.kind === 'list') {
      values[name] = [];
      continue;
    }
    const source =
      fromEnv !== undefined ? spec.env : benchEnv[spec.env] !== undefined ? `${spec.env} (from bench ${spec.benchKey ?? ''})` : spec.env;
    const r = parseValue(source, raw, spec.type);
    if (r.error) errors.push(r.error);
    else if (r.value !== undefined) values[name] = r.value;
  }

  const num = (n: OptionName): number => values[n] as number;
  const str = (n: OptionName): string | null => (values[n] as string | undefined) ?? null;
  const list = (n: OptionName): readonly string[] => (values[n] as readonly string[] | undefined) ?? [];
  const hosts = (n: OptionName): readonly HostPort[] => (values[n] as readonly HostPort[] | undefined) ?? [];

  let redis: RedisConfig | null = null;
  const redisUrl = str('redisUrl');
  const mode = (str('redisMode') ?? 'standalone') as RedisConfig['mode'];
  if (redisUrl !== null || mode !== 'standalone') {
    let clusterNodes = hosts('redisClusterNodes');
    if (mode === 'sentinel' && hosts('redisSentinels').length === 0) {
      errors.push('GATEWAY_REDIS_SENTINELS is required when GATEWAY_REDIS_MODE=sentinel');
    }
    if (mode === 'cluster' && clusterNodes.length === 0 && redisUrl !== null) {
      const u = new URL(redisUrl);
      clusterNodes = [{ host: u.hostname, port: Number(u.port || 6379) }];
    }
    if (mode === 'cluster' && clusterNodes.length === 0) {
      errors.push('GATEWAY_REDIS_CLUSTER_NODES (or GATEWAY_REDIS_URL) is required when GATEWAY_REDIS_MODE=cluster');
    }
    redis = {
      mode,
      url: redisUrl ?? 'redis://127.0.0.1:6379',
      sentinels: hosts('redisSentinels'),
      sentinelName: str('redisSentinelName') ?? 'mymaster',
      clusterNodes,
    };
  }

  if (values.port !== undefined && values.port === values.opsPort) {
    errors.push(`GATEWAY_PORT and GATEWAY_OPS_PORT must differ, both are ${String(values.port)}`);
  }
  if (values.leaderRenewMs !== undefined && values.leaderLeaseMs !== undefined && num('leaderRenewMs') * 3 > num('leaderLeaseMs')) {
    errors.push(
      `GATEWAY_LEADER_RENEW_MS (${num('leaderRenewMs')}) must be at most a third of GATEWAY_LEADER_LEASE_MS (${num('leaderLeaseMs')}) so a leader renews several times per lease`,
    );
  }
  if (values.drainMs !== undefined && values.shutdownGraceMs !== undefined && num('drainMs') >= num('shutdownGraceMs')) {
    errors.push(`GATEWAY_DRAIN_MS (${num('drainMs')}) must be shorter than GATEWAY_SHUTDOWN_GRACE_MS (${num('shutdownGraceMs')})`);
  }

  if (errors.length > 0) return { ok: false, errors };

  const config: GatewayConfig = {
    port: num('port'),
    opsPort: num('opsPort'),
    host: str('host') ?? '0.0.0.0',
    workers: redis === null ? 1 : ((values.workers as number | undefined) ?? Math.max(1, cpus().length)),
    redis,
    adapterMode: str('adapterMode') as GatewayConfig['adapterMode'],
    eventsChannel: str('eventsChannel') ?? 'events',
    keyPrefix: str('keyPrefix') ?? 'rtg',
    backendUrl: str('backendUrl'),
    defaultSite: str('defaultSite'),
    publishToken: str('publishToken'),
    benchPath: benchPath ?? null,
    appsPath,
    permissionFlavour: str('permissionFlavour') as GatewayConfig['permissionFlavour'],
    socketSecret: str('socketSecret'),
    allowedOrigins: list('allowedOrigins'),
    corsOrigins: list('corsOrigins'),
    maxMessageBytes: num('maxMessageBytes'),
    maxHttpBufferBytes: num('maxHttpBufferBytes'),
    backendTimeoutMs: num('backendTimeoutMs'),
    backendConcurrency: num('backendConcurrency'),
    authCacheTtlMs: num('authCacheTtlMs'),
    pingIntervalMs: num('pingIntervalMs'),
    pingTimeoutMs: num('pingTimeoutMs'),
    leaderLeaseMs: num('leaderLeaseMs'),
    leaderRenewMs: num('leaderRenewMs'),
    standbyBufferEvents: num('standbyBufferEvents'),
    standbyBufferMs: num('standbyBufferMs'),
    presenceTtlMs: num('presenceTtlMs'),
    recoveryWindowMs: num('recoveryWindowMs'),
    shutdownGraceMs: num('shutdownGraceMs'),
    drainMs: num('drainMs'),
    workerRespawnMaxBackoffMs: num('workerRespawnMaxBackoffMs'),
    logLevel: str('logLevel') as GatewayConfig['logLevel'],
    dropLogIntervalMs: num('dropLogIntervalMs'),
    clientEventsPerSec: num('clientEventsPerSec'),
    clientEventsBurst: num('clientEventsBurst'),
    maxRoomsPerSocket: num('maxRoomsPerSocket'),
    backendQueue: num('backendQueue'),
    maxOutboundBytes: num('maxOutboundBytes'),
    maxOutboundPackets: num('maxOutboundPackets'),
    maxConnectionsPerIp: num('maxConnectionsPerIp'),
    trustProxy: str('trustProxy') === 'true',
    handshakeTimeoutMs: num('handshakeTimeoutMs'),
    backendCircuitFailures: num('backendCircuitFailures'),
    backendCircuitOpenMs: num('backendCircuitOpenMs'),
    standbyBufferBytes: num('standbyBufferBytes'),
    maxConnectionsPerUser: num('maxConnectionsPerUser'),
  };
  if (redis === null && values.workers !== undefined && num('workers') > 1) {
    notes.push('GATEWAY_WORKERS is ignored without GATEWAY_REDIS_URL: standalone mode runs one process');
  }
  return { ok: true, config: deepFreeze(config), notes };
}

function deepFreeze<T>(obj: T): T {
  if (obj !== null && typeof obj === 'object' && !Object.isFrozen(obj)) {
    Object.freeze(obj);
    for (const v of Object.values(obj as Record<string, unknown>)) deepFreeze(v);
  }
  return obj;
}

/** Environment variable carrying the parsed configuration to workers (they never re-read the environment). */
export const WORKER_CONFIG_ENV = 'GATEWAY_INTERNAL_CONFIG';
/** The worker's slot (0-based) on its host, set by the supervisor. */
export const WORKER_SLOT_ENV = 'GATEWAY_INTERNAL_SLOT';

/** The environment a worker is forked with: the parsed configuration, so workers never parse it again. */
export function workerEnv(config: GatewayConfig, slot: number): Record<string, string> {
  return { [WORKER_CONFIG_ENV]: JSON.stringify(config), [WORKER_SLOT_ENV]: String(slot) };
}

/** A worker's configuration, as its primary handed it over (see `workerEnv`). */
export function workerConfigFromEnv(env: NodeJS.ProcessEnv): GatewayConfig {
  const json = env[WORKER_CONFIG_ENV];
  if (!json) throw new Error(`worker started without ${WORKER_CONFIG_ENV}`);
  return deepFreeze(JSON.parse(json) as GatewayConfig);
}
