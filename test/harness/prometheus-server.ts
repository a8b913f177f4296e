/**
 * A real Prometheus server (the distribution's `prometheus` binary) scraping
 * targets the test started, with rule files loaded, queried through its HTTP
 * API. Runs in its own process group and temp dir (config + TSDB), both gone
 * after close(). A missing binary is an error, never a skip: CI (.ci/run)
 * installs the package, so a test that silently skipped would hide a broken
 * machine.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { httpRequest } from './http';
import { findExecutable } from './paths';
import { freePort } from './ports';
import { spawnManaged, type ManagedProcess } from './processes';
import type { Scope } from './scope';
import { pollUntil } from './wait';

const READY_TIMEOUT_MS = 15_000;
const POLL_MS = 100;
const STOP_GRACE_MS = 5_000;
const LOG_TAIL_LINES = 30;
const DEFAULT_JOB = 'realtime-gateway';

export class PrometheusHarnessError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'PrometheusHarnessError';
    this.code = code;
  }
}

export interface ScrapeTarget {
  /** host:port of the /metrics endpoint. */
  address: string;
  /** Target labels (static_configs labels), e.g. namespace and pod as Kubernetes service discovery would set them. */
  labels?: Record<string, string>;
}

export interface StartPrometheusOptions {
  scope?: Scope;
  /** scrape_configs job_name; default 'realtime-gateway' (what the alerts and dashboards select). */
  jobName?: string;
  targets: readonly ScrapeTarget[];
  /** Absolute paths for rule_files. */
  ruleFiles?: readonly string[];
  /** scrape_interval and evaluation_interval in seconds; default 1. */
  intervalSeconds?: number;
  metricsPath?: string;
  readyTimeoutMs?: number;
  /** Default: /usr/bin/prometheus, else PATH. */
  binary?: string;
}

export interface PromTarget {
  labels: Record<string, string>;
  scrapeUrl: string;
  health: 'up' | 'down' | 'unknown';
  lastError: string;
}

export interface PromRule {
  name: string;
  query: string;
  health: 'ok' | 'err' | 'unknown';
  lastError?: string;
  type: 'alerting' | 'recording';
  state?: string;
}

export interface PromVectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** An /api/v1/query answer, whatever its status. */
export interface PromQueryResult {
  httpStatus: number;
  status: 'success' | 'error';
  resultType?: 'vector' | 'matrix' | 'scalar' | 'string';
  /** vector samples; a scalar becomes one sample without labels. */
  samples: PromVectorSample[];
  error?: string;
  errorType?: string;
  warnings: string[];
}

export interface PrometheusServer {
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly dir: string;
  readonly configFile: string;
  readonly pid: number;
  /** stderr/stdout lines (Prometheus logs logfmt on stderr). */
  readonly logs: string[];
  /** Instant query; `time` in Unix seconds (default: the server's now). */
  query(expr: string, time?: number): Promise<PromQueryResult>;
  /** Like query() but throws unless status is success; returns the samples. */
  querySamples(expr: string, time?: number): Promise<PromVectorSample[]>;
  /** Active targets of /api/v1/targets. */
  targets(): Promise<PromTarget[]>;
  /** Resolves once `count` active targets are all up; rejects on timeout quoting their lastError. */
  waitTargetsUp(count: number, timeoutMs?: number): Promise<PromTarget[]>;
  /**
   * Resolves once every target has a scrape that started after this call,
   * stored and queryable: whatever the targets exported before the call is
   * then in the TSDB.
   */
  waitNextScrape(timeoutMs?: number): Promise<void>;
  /** Every rule of /api/v1/rules, flattened over groups. */
  rules(): Promise<PromRule[]>;
  /** Metric names in the TSDB (/api/v1/label/__name__/values). */
  metricNames(): Promise<string[]>;
  /** Idempotent: SIGTERM, SIGKILL after a grace period, removes the temp dir. */
  close(): Promise<void>;
}

/** The prometheus executable; throws HARNESS_ERR_PROMETHEUS_MISSING with the install command when there is none. */
export function requirePrometheus(preferred?: string): string {
  const found = findExecutable(preferred ?? '/usr/bin/prometheus', process.env['PATH']);
  if (found === undefined) {
    throw new PrometheusHarnessError(
      'HARNESS_ERR_PROMETHEUS_MISSING',
      'prometheus not found (looked in /usr/bin and PATH). Install it with: apt-get install -y prometheus (.ci/run does this on CI)',
    );
  }
  return found;
}

/** JSON is YAML: no YAML serializer, and no quoting surprises in label values. */
export function prometheusConfig(options: StartPrometheusOptions): string {
  const interval = `${options.intervalSeconds ?? 1}s`;
  return `${JSON.stringify(
    {
      global: { scrape_interval: interval, evaluation_interval: interval, scrape_timeout: interval },
      rule_files: [...(options.ruleFiles ?? [])],
      scrape_configs: [
        {
          job_name: options.jobName ?? DEFAULT_JOB,
          metrics_path: options.metricsPath ?? '/metrics',
          static_configs: options.targets.map((t) => ({ targets: [t.address], labels: t.labels ?? {} })),
        },
      ],
    },
    null,
    2,
  )}\n`;
}

interface ApiEnvelope {
  status?: string;
  data?: unknown;
  error?: string;
  errorType?: string;
  warnings?: string[];
}

export async function startPrometheus(options: StartPrometheusOptions): Promise<PrometheusServer> {
  const binary = requirePrometheus(options.binary);
  const jobName = options.jobName ?? DEFAULT_JOB;
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-prometheus-'));
  const configFile = path.join(dir, 'prometheus.yml');
  writeFileSync(configFile, prometheusConfig(options));
  const url = `http://127.0.0.1:${port}`;
  const logs: string[] = [];
  const tail = (): string => logs.slice(-LOG_TAIL_LINES).join('\n');

  let managed: ManagedProcess | undefined;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      try {
        if (managed !== undefined) await managed.terminate({ signal: 'SIGTERM', graceMs: STOP_GRACE_MS });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    })();
    return closing;
  };
  // Registered before the spawn so even a failed start removes the temp dir.
  options.scope?.add({ close });

  try {
    managed = await spawnManaged(
      binary,
      [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--web.enable-lifecycle',
      ],
      { cwd: dir, stdout: 'pipe', stderr: 'pipe' },
    );
  } catch (err) {
    await close();
    throw err;
  }
  const proc = managed;
  for (const stream of [proc.proc.stdout, proc.proc.stderr]) {
    if (stream !== null) readline.createInterface({ input: stream, crlfDelay: Infinity }).on('line', (line) => logs.push(line));
  }

  const api = async (apiPath: string, body?: URLSearchParams): Promise<{ httpStatus: number; envelope: ApiEnvelope }> => {
    const res = await httpRequest(
      `${url}${apiPath}`,
      body === undefined ? {} : { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: body.toString() },
    );
    let envelope: ApiEnvelope;
    try {
      envelope = JSON.parse(res.body) as ApiEnvelope;
    } catch {
      throw new PrometheusHarnessError(
        'HARNESS_ERR_PROMETHEUS_HTTP',
        `${apiPath} answered ${res.status} with non-JSON: ${res.body.slice(0, 300)}`,
      );
    }
    return { httpStatus: res.status, envelope };
  };

  const getData = async <T>(apiPath: string): Promise<T> => {
    const { httpStatus, envelope } = await api(apiPath);
    if (envelope.status !== 'success') {
      throw new PrometheusHarnessError(
        'HARNESS_ERR_PROMETHEUS_HTTP',
        `${apiPath} answered ${httpStatus}: ${envelope.error ?? 'no error text'}`,
      );
    }
    return envelope.data as T;
  };

  const server: PrometheusServer = {
    port,
    url,
    dir,
    configFile,
    pid: proc.pid,
    logs,
    async query(expr, time) {
      const params = new URLSearchParams({ query: expr });
      if (time !== undefined) params.set('time', time.toFixed(3));
      const { httpStatus, envelope } = await api('/api/v1/query', params);
      const data = (envelope.data ?? {}) as { resultType?: PromQueryResult['resultType']; result?: unknown };
      let samples: PromVectorSample[] = [];
      if (data.resultType === 'vector') samples = data.result as PromVectorSample[];
      else if (data.resultType === 'scalar') samples = [{ metric: {}, value: data.result as [number, string] }];
      const out: PromQueryResult = {
        httpStatus,
        status: envelope.status === 'success' ? 'success' : 'error',
        samples,
        warnings: envelope.warnings ?? [],
      };
      if (data.resultType !== undefined) out.resultType = data.resultType;
      if (envelope.error !== undefined) out.error = envelope.error;
      if (envelope.errorType !== undefined) out.errorType = envelope.errorType;
      return out;
    },
    async querySamples(expr, time) {
      const res = await server.query(expr, time);
      if (res.status !== 'success') {
        throw new PrometheusHarnessError('HARNESS_ERR_PROMETHEUS_QUERY', `${expr}: ${res.errorType ?? ''} ${res.error ?? ''}`);
      }
      return res.samples;
    },
    async targets() {
      return (await getData<{ activeTargets: PromTarget[] }>('/api/v1/targets?state=active')).activeTargets;
    },
    waitTargetsUp(count, timeoutMs = 15_000) {
      let last: PromTarget[] = [];
      return pollUntil(
        async () => {
          last = await server.targets();
          return last.length === count && last.every((t) => t.health === 'up') ? last : undefined;
        },
        {
          timeoutMs,
          intervalMs: POLL_MS,
          description: () =>
            `${count} Prometheus targets up; now: ${JSON.stringify(last.map((t) => ({ url: t.scrapeUrl, health: t.health, lastError: t.lastError })))}`,
          failIf: exitedError,
        },
      );
    },
    async waitNextScrape(timeoutMs = 10_000) {
      // `up` is committed with the scrape's samples and carries its start
      // time, which Prometheus may align by up to 2 ms (ScrapeTimestampTolerance).
      const after = Date.now() / 1000 + 0.01;
      let last: number[] = [];
      await pollUntil(
        async () => {
          last = (await server.querySamples(`timestamp(up{job="${jobName}"})`)).map((s) => Number(s.value[1]));
          return last.length === options.targets.length && last.every((ts) => ts > after) ? true : undefined;
        },
        {
          timeoutMs,
          intervalMs: POLL_MS,
          description: () => `a scrape of all ${options.targets.length} targets after ${after}; last scrapes at ${JSON.stringify(last)}`,
          failIf: exitedError,
        },
      );
    },
    async rules() {
      const data = await getData<{ groups: { rules: PromRule[] }[] }>('/api/v1/rules');
      return data.groups.flatMap((g) => g.rules);
    },
    metricNames: () => getData<string[]>('/api/v1/label/__name__/values'),
    close,
  };

  function exitedError(): Error | undefined {
    const exit = proc.exitInfo;
    if (exit === undefined) return undefined;
    return new PrometheusHarnessError(
      'HARNESS_ERR_PROMETHEUS_EXITED',
      `prometheus exited (code ${String(exit.code)}, signal ${String(exit.signal)}); config ${configFile}; log:\n${tail()}`,
    );
  }

  try {
    await pollUntil(async () => ((await httpRequest(`${url}/-/ready`, { timeoutMs: 1000 })).status === 200 ? true : undefined), {
      timeoutMs: options.readyTimeoutMs ?? READY_TIMEOUT_MS,
      intervalMs: POLL_MS,
      description: () => `prometheus ${url}/-/ready to answer 200; log:\n${tail()}`,
      failIf: exitedError,
    });
  } catch (err) {
    await close();
    throw err;
  }
  return server;
}
