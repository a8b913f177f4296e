/**
 * Spawns the BUILT gateway (`node dist/main.js`) the way production runs it:
 * configured only through GATEWAY_* environment variables, none of which are
 * inherited from the test process. Each gateway runs in its own process group
 * so its workers die with it.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import readline from 'node:readline';
import type { ChildProcess } from 'node:child_process';
import { httpRequest, parseJsonBody, type HttpResponse } from './http';
import { gatewayMainPath, repoRoot } from './paths';
import { freePorts } from './ports';
import { spawnManaged, type ExitInfo, type ManagedProcess } from './processes';
import { sumMetric } from './prometheus';
import type { Scope } from './scope';
import { HarnessTimeoutError, pollUntil, withTimeout } from './wait';

const READY_TIMEOUT_MS = 20_000;
const READY_POLL_MS = 50;
/** stop(): SIGTERM, then SIGKILL to the group after this long. */
const STOP_GRACE_MS = 15_000;
/** close(): teardown should be quick; a gateway that needs longer is SIGKILLed. */
const CLOSE_GRACE_MS = 5_000;
const RUN_ONCE_TIMEOUT_MS = 10_000;
const LOG_TAIL_LINES = 30;

export class GatewayHarnessError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'GatewayHarnessError';
    this.code = code;
  }
}

/** A fresh key prefix; hosts of one gateway cluster must share one. */
export function uniqueKeyPrefix(): string {
  return `rtgwtest-${randomBytes(5).toString('hex')}`;
}

function requireMain(mainPath: string): void {
  if (!existsSync(mainPath)) {
    throw new GatewayHarnessError('HARNESS_ERR_NOT_BUILT', `${mainPath} is missing: run npm run build`);
  }
}

type EnvOverrides = Record<string, string | undefined>;

/**
 * The parent environment without any GATEWAY_* variable (and without the
 * node:test marker, which would change how a child node process behaves),
 * then `layers` applied in order; an undefined value removes a variable.
 */
function childEnv(...layers: EnvOverrides[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('GATEWAY_') || key === 'NODE_TEST_CONTEXT') continue;
    if (value !== undefined) env[key] = value;
  }
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer)) {
      if (value === undefined) delete env[key];
      else env[key] = value;
    }
  }
  return env;
}

export type LogMatcher = RegExp | ((line: string, json: Record<string, unknown> | undefined) => boolean);

/** Parses a pino JSON line; undefined for anything else. */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const value = JSON.parse(line) as unknown;
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function matches(matcher: LogMatcher, line: string): boolean {
  if (matcher instanceof RegExp) {
    matcher.lastIndex = 0;
    return matcher.test(line);
  }
  return matcher(line, parseLogLine(line));
}

export interface PublishResult {
  status: number;
  /** Parsed JSON, or the raw text when the body is not JSON. */
  body: unknown;
}

export interface GatewayHandle {
  readonly port: number;
  readonly opsPort: number;
  /** `http://127.0.0.1:<port>` (Socket.IO) */
  readonly url: string;
  /** `http://127.0.0.1:<opsPort>` (health, metrics, publish API) */
  readonly opsUrl: string;
  readonly pid: number;
  readonly proc: ChildProcess;
  /** The environment the gateway was started with (GATEWAY_* only). */
  readonly gatewayEnv: Readonly<Record<string, string>>;
  readonly keyPrefix: string;
  /** stdout and stderr lines in arrival order (pino JSON on stdout). */
  readonly logs: string[];
  /** Parsed pino lines so far. */
  jsonLogs(): Record<string, unknown>[];
  /**
   * Resolves with the first log line (from index `fromIndex`, default 0, so
   * lines logged before the call count) that matches. Rejects if the process
   * closes its output first or on timeout (default 5000 ms).
   */
  waitForLog(matcher: LogMatcher, timeoutMs?: number, options?: { fromIndex?: number }): Promise<string>;
  /** Polls GET /readyz until 200. */
  ready(timeoutMs?: number): Promise<void>;
  /** One GET /readyz. */
  readyz(): Promise<PublishResult>;
  /** GET /api/v1/cluster, parsed. */
  cluster(): Promise<any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- the shape belongs to src/, not the harness
  /** GET /metrics text. */
  metrics(): Promise<string>;
  /** Sum of the matching series (labels are a subset match); undefined when none matches. */
  metricValue(name: string, labels?: Record<string, string>): Promise<number | undefined>;
  /**
   * POST /api/v1/publish with one event or a batch. `token` defaults to the
   * gateway's publishToken; `null` sends no Authorization header.
   */
  publish(events: unknown, options?: { token?: string | null; headers?: Record<string, string> }): Promise<PublishResult>;
  /** Any request to the ops port. */
  opsRequest(path: string, options?: { method?: string; headers?: Record<string, string>; body?: string }): Promise<HttpResponse>;
  /** Sends a signal to the primary process only (as an orchestrator would). */
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM, await exit; SIGKILL to the whole group after 15 s. Anything left in the group is then SIGKILLed. */
  stop(graceMs?: number): Promise<ExitInfo>;
  /** SIGKILL to the whole process group (a host crash); awaits exit. */
  kill(): Promise<ExitInfo>;
  /** Resolves (never rejects) when the primary exits. */
  readonly exited: Promise<ExitInfo>;
  /** Idempotent: SIGTERM with a short grace period, then SIGKILL. */
  close(): Promise<void>;
}

export interface StartGatewayOptions {
  scope?: Scope;
  /** Applied after the harness defaults; an undefined value removes a variable. */
  env?: EnvOverrides;
  /** Applied last. */
  extraEnv?: EnvOverrides;
  redisUrl?: string;
  backendUrl?: string;
  /** GATEWAY_WORKERS; when omitted the gateway's own default applies. */
  workers?: number;
  defaultSite?: string;
  publishToken?: string;
  /** Default: a fresh uniqueKeyPrefix(). Pass the same value to every host of one cluster. */
  keyPrefix?: string;
  benchPath?: string;
  /** GATEWAY_LOG_LEVEL, default 'warn'. */
  logLevel?: string;
  /** Fixed ports, e.g. to restart a host on the same address. Default: free ports. */
  port?: number;
  opsPort?: number;
  /** Default true. False: resolve once spawned (for tests of a gateway that never gets ready). */
  waitReady?: boolean;
  readyTimeoutMs?: number;
  /** close(): SIGTERM grace before SIGKILL (default 5000; 0 = SIGKILL at once). */
  closeGraceMs?: number;
  /** Node flags, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** Default: <repo>/dist/main.js. */
  mainPath?: string;
}

function tail(lines: readonly string[], n = LOG_TAIL_LINES): string {
  return lines.slice(-n).join('\n');
}

export async function startGateway(options: StartGatewayOptions = {}): Promise<GatewayHandle> {
  const mainPath = options.mainPath ?? gatewayMainPath;
  requireMain(mainPath);
  const needed = (options.port === undefined ? 1 : 0) + (options.opsPort === undefined ? 1 : 0);
  const free = await freePorts(needed);
  const port = options.port ?? free.shift() ?? 0;
  const opsPort = options.opsPort ?? free.shift() ?? 0;
  const keyPrefix = options.keyPrefix ?? uniqueKeyPrefix();

  const defaults: EnvOverrides = {
    GATEWAY_PORT: String(port),
    GATEWAY_OPS_PORT: String(opsPort),
    GATEWAY_WORKERS: options.workers === undefined ? undefined : String(options.workers),
    GATEWAY_REDIS_URL: options.redisUrl,
    GATEWAY_BACKEND_URL: options.backendUrl,
    GATEWAY_DEFAULT_SITE: options.defaultSite,
    GATEWAY_PUBLISH_TOKEN: options.publishToken,
    GATEWAY_KEY_PREFIX: keyPrefix,
    GATEWAY_BENCH_PATH: options.benchPath,
    GATEWAY_LOG_LEVEL: options.logLevel ?? 'warn',
  };
  const env = childEnv(defaults, options.env ?? {}, options.extraEnv ?? {});
  const gatewayEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries(env)) if (key.startsWith('GATEWAY_') && value !== undefined) gatewayEnv[key] = value;
  const publishToken = env['GATEWAY_PUBLISH_TOKEN'];

  const managed: ManagedProcess = await spawnManaged(process.execPath, [...(options.nodeArgs ?? []), mainPath], {
    cwd: repoRoot,
    env,
    stdout: 'pipe',
    stderr: 'pipe',
  });

  const logs: string[] = [];
  const lineListeners = new Set<(line: string) => void>();
  const onLine = (line: string): void => {
    logs.push(line);
    for (const listener of lineListeners) listener(line);
  };
  // 'close' fires once both streams ended and the process exited: no more lines can come.
  let outputClosed = false;
  const outputClosedListeners = new Set<() => void>();
  const streams = [managed.proc.stdout, managed.proc.stderr].filter((s): s is NonNullable<typeof s> => s !== null);
  for (const stream of streams) readline.createInterface({ input: stream, crlfDelay: Infinity }).on('line', onLine);
  managed.proc.once('close', () => {
    outputClosed = true;
    for (const listener of outputClosedListeners) listener();
  });

  const url = `http://127.0.0.1:${port}`;
  const opsUrl = `http://127.0.0.1:${opsPort}`;
  const closeGraceMs = options.closeGraceMs ?? CLOSE_GRACE_MS;
  let closing: Promise<void> | undefined;

  const exitedError = (): Error | undefined => {
    const exit = managed.exitInfo;
    if (exit === undefined) return undefined;
    return new GatewayHarnessError(
      'HARNESS_ERR_GATEWAY_EXITED',
      `gateway exited (code ${String(exit.code)}, signal ${String(exit.signal)}) before /readyz answered 200; last log lines:\n${tail(logs)}`,
    );
  };

  const getJson = async (path: string): Promise<unknown> => {
    const headers: Record<string, string> = publishToken === undefined ? {} : { authorization: `Bearer ${publishToken}` };
    const res = await httpRequest(`${opsUrl}${path}`, { headers });
    if (res.status < 200 || res.status >= 300) {
      throw new GatewayHarnessError('HARNESS_ERR_HTTP', `GET ${path} answered ${res.status}: ${res.body.slice(0, 500)}`);
    }
    return JSON.parse(res.body) as unknown;
  };

  const handle: GatewayHandle = {
    port,
    opsPort,
    url,
    opsUrl,
    pid: managed.pid,
    proc: managed.proc,
    gatewayEnv,
    keyPrefix,
    logs,
    jsonLogs: () => logs.map(parseLogLine).filter((l): l is Record<string, unknown> => l !== undefined),
    waitForLog(matcher, timeoutMs = 5000, waitOptions = {}) {
      const fromIndex = waitOptions.fromIndex ?? 0;
      const found = logs.slice(fromIndex).find((line) => matches(matcher, line));
      if (found !== undefined) return Promise.resolve(found);
      let lineListener: ((line: string) => void) | undefined;
      let closedListener: (() => void) | undefined;
      const waiting = new Promise<string>((resolve, reject) => {
        lineListener = (line) => {
          if (matches(matcher, line)) resolve(line);
        };
        closedListener = () => {
          const exit = managed.exitInfo;
          reject(
            new GatewayHarnessError(
              'HARNESS_ERR_GATEWAY_EXITED',
              `gateway exited (code ${String(exit?.code)}, signal ${String(exit?.signal)}) without logging ${String(matcher)}; last log lines:\n${tail(logs)}`,
            ),
          );
        };
        lineListeners.add(lineListener);
        if (outputClosed) closedListener();
        else outputClosedListeners.add(closedListener);
      });
      return withTimeout(waiting, timeoutMs, () => `gateway log line matching ${String(matcher)}; last log lines:\n${tail(logs)}`).finally(
        () => {
          if (lineListener !== undefined) lineListeners.delete(lineListener);
          if (closedListener !== undefined) outputClosedListeners.delete(closedListener);
        },
      );
    },
    async ready(timeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS) {
      await pollUntil(async () => ((await httpRequest(`${opsUrl}/readyz`, { timeoutMs: 1000 })).status === 200 ? true : undefined), {
        timeoutMs,
        intervalMs: READY_POLL_MS,
        description: () => `gateway ${opsUrl}/readyz to answer 200; last log lines:\n${tail(logs)}`,
        failIf: exitedError,
      });
    },
    async readyz() {
      const res = await httpRequest(`${opsUrl}/readyz`, { timeoutMs: 2000 });
      return { status: res.status, body: parseJsonBody(res.body) };
    },
    cluster: () => getJson('/api/v1/cluster'),
    async metrics() {
      const res = await httpRequest(`${opsUrl}/metrics`);
      if (res.status !== 200)
        throw new GatewayHarnessError('HARNESS_ERR_HTTP', `GET /metrics answered ${res.status}: ${res.body.slice(0, 500)}`);
      return res.body;
    },
    async metricValue(name, labels) {
      return sumMetric(await handle.metrics(), name, labels);
    },
    async publish(events, publishOptions = {}) {
      const token = publishOptions.token === undefined ? publishToken : publishOptions.token;
      const headers: Record<string, string> = { 'content-type': 'application/json', ...publishOptions.headers };
      if (token !== null && token !== undefined) headers['authorization'] = `Bearer ${token}`;
      const res = await httpRequest(`${opsUrl}/api/v1/publish`, { method: 'POST', headers, body: JSON.stringify(events) });
      return { status: res.status, body: parseJsonBody(res.body) };
    },
    opsRequest: (path, requestOptions = {}) => httpRequest(`${opsUrl}${path}`, requestOptions),
    signal(signal) {
      managed.signal(signal);
    },
    stop: (graceMs = STOP_GRACE_MS) => managed.terminate({ signal: 'SIGTERM', graceMs }),
    kill: () => managed.terminate({ graceMs: 0 }),
    exited: managed.exited,
    close() {
      closing ??= managed.terminate({ signal: 'SIGTERM', graceMs: closeGraceMs }).then(() => undefined);
      return closing;
    },
  };
  options.scope?.add(handle);

  if (options.waitReady ?? true) {
    try {
      await handle.ready();
    } catch (err) {
      await handle.close();
      throw err;
    }
  }
  return handle;
}

export interface RunOnceResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunGatewayOnceOptions {
  /** GATEWAY_* and others; an undefined value removes a variable. GATEWAY_PORT and GATEWAY_OPS_PORT default to free ports so a valid config never binds 9000/9090. */
  env?: EnvOverrides;
  timeoutMs?: number;
  mainPath?: string;
  nodeArgs?: string[];
}

/** Runs the gateway expecting it to exit by itself (configuration errors); kills it after the timeout (default 10 s). */
export async function runGatewayOnce(options: RunGatewayOnceOptions = {}): Promise<RunOnceResult> {
  const mainPath = options.mainPath ?? gatewayMainPath;
  requireMain(mainPath);
  const [port, opsPort] = await freePorts(2);
  const env = childEnv({ GATEWAY_PORT: String(port), GATEWAY_OPS_PORT: String(opsPort) }, options.env ?? {});
  const managed = await spawnManaged(process.execPath, [...(options.nodeArgs ?? []), mainPath], {
    cwd: repoRoot,
    env,
    stdout: 'pipe',
    stderr: 'pipe',
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  managed.proc.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
  managed.proc.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
  const closed = new Promise<void>((resolve) => managed.proc.once('close', () => resolve()));
  const text = (chunks: Buffer[]): string => Buffer.concat(chunks).toString('utf8');
  const timeoutMs = options.timeoutMs ?? RUN_ONCE_TIMEOUT_MS;
  try {
    await withTimeout(closed, timeoutMs, 'gateway to exit');
  } catch (err) {
    await managed.terminate({ graceMs: 0 });
    if (err instanceof HarnessTimeoutError) {
      throw new GatewayHarnessError(
        'HARNESS_ERR_GATEWAY_DID_NOT_EXIT',
        `gateway did not exit within ${timeoutMs} ms (killed)\nstdout:\n${text(stdout)}\nstderr:\n${text(stderr)}`,
      );
    }
    throw err;
  }
  const exit = await managed.terminate({ graceMs: 0 });
  return { code: exit.code, signal: exit.signal, stdout: text(stdout), stderr: text(stderr) };
}
