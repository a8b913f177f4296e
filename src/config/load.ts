import { cpus } from 'node:os';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { readBenchConfig, type BenchConfig } from './bench';
import { maskValue } from './mask';
import { normaliseAllowedOrigin } from './origins';
import { parseCustomRooms, parseMqttRules, type CustomRoomSpec, type MqttConfig } from './mqtt-config';
import { OPTIONS, type GatewayConfig, type HostPort, type OptionKind, type OptionName, type OptionSpec, type RedisConfig } from './schema';
import { unknownVariableWarnings } from './suggest';

/** Where an option's effective value came from (check-config prints it). */
export type ValueSource = 'env' | 'file' | 'bench' | 'default';

export interface EffectiveOption {
  readonly env: string;
  /** As printable: secrets masked. */
  readonly value: string;
  readonly source: ValueSource;
}

export type LoadResult =
  | {
      readonly ok: true;
      readonly config: GatewayConfig;
      readonly notes: readonly string[];
      /** Worth an operator's attention but not fatal (unknown GATEWAY_* variables). */
      readonly warnings: readonly string[];
      readonly effective: readonly EffectiveOption[];
    }
  | { readonly ok: false; readonly errors: readonly string[] };

/**
 * An option's raw value from the environment: `<VAR>` or, for secrets,
 * `<VAR>_FILE` (Docker/Kubernetes secrets mounted as files). The file's
 * trailing newline is not part of the value.
 */
function readRaw(env: NodeJS.ProcessEnv, spec: OptionSpec, errors: string[]): { raw?: string; fromFile?: boolean } {
  const direct = env[spec.env];
  const has = direct !== undefined && direct !== '';
  if (!spec.secret) return has ? { raw: direct } : {};
  const fileVar = `${spec.env}_FILE`;
  const file = env[fileVar];
  if (file === undefined || file === '') return has ? { raw: direct } : {};
  if (has) {
    errors.push(`${spec.env} and ${fileVar} are both set: set one of them`);
    return {};
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    errors.push(`${fileVar}: cannot read ${file}: ${(err as Error).message}`);
    return {};
  }
  const value = text.replace(/\r?\n$/, '');
  if (value === '') {
    errors.push(`${fileVar}: ${file} is empty`);
    return {};
  }
  return { raw: value, fromFile: true };
}

/** A bench directory holds sites/ and apps/; the usual mistakes get a hint. */
function benchProblem(benchPath: string): string | undefined {
  const isDir = (p: string): boolean => existsSync(p) && statSync(p).isDirectory();
  if (!isDir(benchPath)) return `GATEWAY_BENCH_PATH must be a Frappe bench directory, "${benchPath}" is not a directory`;
  const hasSites = isDir(join(benchPath, 'sites'));
  const hasApps = isDir(join(benchPath, 'apps'));
  if (hasSites && hasApps) return undefined;
  const trimmed = benchPath.replace(/\/+$/, '');
  if (basename(trimmed) === 'sites' || existsSync(join(benchPath, 'common_site_config.json'))) {
    return `GATEWAY_BENCH_PATH must be the bench directory (containing sites/ and apps/), "${benchPath}" looks like its sites/ directory: use its parent "${dirname(trimmed)}"`;
  }
  const missing = [hasSites ? null : 'sites/', hasApps ? null : 'apps/'].filter((x) => x !== null).join(' and ');
  return `GATEWAY_BENCH_PATH must be a Frappe bench directory (containing sites/ and apps/), "${benchPath}" has no ${missing}`;
}

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
  const fromFile = new Set<OptionName>();
  const rawEnv: Partial<Record<OptionName, string>> = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const r = readRaw(env, OPTIONS[name], errors);
    if (r.raw !== undefined) rawEnv[name] = r.raw;
    if (r.fromFile) fromFile.add(name);
  }
  const get = (name: OptionName): string | undefined => rawEnv[name];

  let benchEnv: Record<string, string> = {};
  let appsPath: string | null = null;
  const benchPath = get('benchPath');
  if (benchPath !== undefined) {
    const problem = benchProblem(benchPath);
    if (problem !== undefined) {
      errors.push(problem);
    } else {
      const bench = readBenchConfig(benchPath);
      errors.push(...bench.problems);
      benchEnv = benchToEnv(bench.values);
      appsPath = join(benchPath, 'apps');
      const specByEnv = new Map((Object.values(OPTIONS) as OptionSpec[]).map((o) => [o.env, o]));
      const applied = Object.entries(benchEnv).map(([k, v]) => {
        const spec = specByEnv.get(k);
        const overridden = env[k] !== undefined && env[k] !== '' ? ` (overridden by the environment)` : '';
        return `${k}=${spec ? maskValue(spec, v) : v}${overridden}`;
      });
      if (applied.length > 0) notes.push(`read bench config from ${benchPath}: ${applied.join(', ')}`);
    }
  }

  const effective: EffectiveOption[] = [];
  const values: Partial<Record<OptionName, Parsed>> = {};
  for (const name of Object.keys(OPTIONS) as OptionName[]) {
    const spec: OptionSpec = OPTIONS[name];
    const fromEnv = get(name);
    const raw = fromEnv ?? benchEnv[spec.env] ?? spec.default;
    if (raw === undefined) continue;
    effective.push({
      env: spec.env,
      value: maskValue(spec, raw),
      source: fromEnv !== undefined ? (fromFile.has(name) ? 'file' : 'env') : benchEnv[spec.env] !== undefined ? 'bench' : 'default',
    });
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
      sentinelUsername: str('redisSentinelUsername'),
      sentinelPassword: str('redisSentinelPassword'),
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

  const allowedOrigins: string[] = [];
  for (const entry of list('allowedOrigins')) {
    const r = normaliseAllowedOrigin(entry);
    if (r.error) errors.push(r.error);
    else if (r.value !== undefined) allowedOrigins.push(r.value);
  }
  const { mqtt, customRooms } = loadIot(str, redis !== null, errors);

  if (errors.length > 0) return { ok: false, errors };

  const config: GatewayConfig = {
    port: num('port'),
    opsPort: num('opsPort'),
    host: str('host') ?? '0.0.0.0',
    opsHost: str('opsHost') ?? str('host') ?? '0.0.0.0',
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
    allowedOrigins,
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
    leaderCoalesceMs: num('leaderCoalesceMs'),
    standbyBufferEvents: num('standbyBufferEvents'),
    standbyBufferMs: num('standbyBufferMs'),
    presenceTtlMs: num('presenceTtlMs'),
    recoveryWindowMs: num('recoveryWindowMs'),
    history: str('history') === 'on',
    historyMs: num('historyMs'),
    historyMaxEvents: num('historyMaxEvents'),
    fastPath: str('fastPath') === 'on',
    idleCompactMs: num('idleCompactMs'),
    idleCompactConnections: num('idleCompactConnections'),
    shutdownGraceMs: num('shutdownGraceMs'),
    drainMs: num('drainMs'),
    drainRate: num('drainRate'),
    workerRespawnMaxBackoffMs: num('workerRespawnMaxBackoffMs'),
    workerKillMs: num('workerKillMs'),
    workerBootMs: num('workerBootMs'),
    logLevel: str('logLevel') as GatewayConfig['logLevel'],
    logFormat: str('logFormat') as GatewayConfig['logFormat'],
    dropLogIntervalMs: num('dropLogIntervalMs'),
    clientEventsPerSec: num('clientEventsPerSec'),
    clientEventsBurst: num('clientEventsBurst'),
    maxRoomsPerSocket: num('maxRoomsPerSocket'),
    backendQueue: num('backendQueue'),
    maxOutboundBytes: num('maxOutboundBytes'),
    maxOutboundPackets: num('maxOutboundPackets'),
    maxConnectionsPerIp: num('maxConnectionsPerIp'),
    trustProxy: str('trustProxy') === 'true',
    admissionRate: num('admissionRate'),
    admissionBurst: num('admissionBurst'),
    admissionConcurrency: num('admissionConcurrency'),
    admissionQueue: num('admissionQueue'),
    admissionQueueMs: num('admissionQueueMs'),
    handshakeTimeoutMs: num('handshakeTimeoutMs'),
    publishTimeoutMs: num('publishTimeoutMs'),
    idempotencyWindowMs: num('idempotencyWindowMs'),
    idempotencyMaxKeys: num('idempotencyMaxKeys'),
    opsTimeoutMs: num('opsTimeoutMs'),
    metricsMaxSites: num('metricsMaxSites'),
    mqtt,
    customRooms,
    latestTtlMs: num('latestTtlMs'),
    conflateBacklog: num('conflateBacklog'),
    backendCircuitFailures: num('backendCircuitFailures'),
    backendCircuitOpenMs: num('backendCircuitOpenMs'),
    standbyBufferBytes: num('standbyBufferBytes'),
    leaderGarbageBytes: num('leaderGarbageBytes'),
    maxConnectionsPerUser: num('maxConnectionsPerUser'),
  };
  if (redis === null && values.workers !== undefined && num('workers') > 1) {
    notes.push('GATEWAY_WORKERS is ignored without GATEWAY_REDIS_URL: standalone mode runs one process');
  }
  return { ok: true, config: deepFreeze(config), notes, warnings: unknownVariableWarnings(env), effective };
}

/** The MQTT ingress and custom rooms (docs/mqtt.md): JSON options validated here so start-up reports every problem. */
function loadIot(
  str: (n: OptionName) => string | null,
  clustered: boolean,
  errors: string[],
): { mqtt: MqttConfig | null; customRooms: readonly CustomRoomSpec[] } {
  const roomsJson = str('customRooms');
  const customRooms = roomsJson === null ? [] : parseCustomRooms(OPTIONS.customRooms.env, roomsJson, errors);
  const url = str('mqttUrl');
  const inline = str('mqttRules');
  const file = str('mqttRulesFile');
  if (url === null) {
    if (inline !== null || file !== null) errors.push('GATEWAY_MQTT_RULES/GATEWAY_MQTT_RULES_FILE are set but GATEWAY_MQTT_URL is not');
    return { mqtt: null, customRooms };
  }
  if (!clustered) errors.push('GATEWAY_MQTT_URL needs GATEWAY_REDIS_URL: MQTT messages enter through the events channel');
  let source: string = OPTIONS.mqttRules.env;
  let text = inline;
  if (inline !== null && file !== null) errors.push('set GATEWAY_MQTT_RULES or GATEWAY_MQTT_RULES_FILE, not both');
  else if (file !== null) {
    source = `${OPTIONS.mqttRulesFile.env} (${file})`;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      errors.push(`GATEWAY_MQTT_RULES_FILE "${file}" cannot be read: ${err instanceof Error ? err.message : String(err)}`);
    }
  } else if (inline === null) errors.push('GATEWAY_MQTT_URL is set but neither GATEWAY_MQTT_RULES nor GATEWAY_MQTT_RULES_FILE is');
  const qos = str('mqttQos') === '0' ? 0 : 1;
  const rules = text === null ? [] : parseMqttRules(source, text, qos, errors);
  return {
    mqtt: {
      url,
      username: str('mqttUsername'),
      password: str('mqttPassword'),
      clientId: str('mqttClientId') ?? `${str('keyPrefix') ?? 'rtg'}-gateway-leader`,
      cleanSession: str('mqttCleanSession') === 'true',
      qos,
      rules,
    },
    customRooms,
  };
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
