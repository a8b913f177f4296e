import { AggregatorRegistry, type Registry } from 'prom-client';
import type { MetricJson } from '../cluster/metrics-baseline';
import type { Supervisor } from '../cluster/supervisor';
import type { LeaderConsumer } from '../leader/leader-consumer';
import type { Metrics } from '../metrics/metrics';
import type { Readiness } from '../ops/ops-server';
import { plainRedisError, withDeadline } from '../redis/connect';
import type { RateLimitedLog } from '../shared/logger';
import { capSites } from '../metrics/metrics';

const HEALTH_PING_TIMEOUT_MS = 1000;

export interface PrimaryHealthDeps {
  /**
   * PING on a fail-fast connection (a ping must not wait for an outage to
   * end), single-flight: readiness polled during a partition must not queue
   * one ping per poll.
   */
  readonly ping: () => Promise<unknown>;
  readonly supervisor: Supervisor;
  readonly consumer: LeaderConsumer;
  readonly metrics: Metrics;
  readonly registry: Registry;
  readonly workersExpected: number;
  readonly draining: () => boolean;
}

/** Readiness of a cluster host: Redis reachable, a worker connected to it, not draining. */
export async function primaryReadiness(d: PrimaryHealthDeps): Promise<Readiness> {
  let redis = false;
  let redisError: string | undefined;
  try {
    await withDeadline(d.ping(), HEALTH_PING_TIMEOUT_MS, 'ping timed out');
    redis = true;
  } catch (err) {
    redisError = plainRedisError(err);
  }
  const draining = d.draining();
  const workersUp = d.supervisor.upCount();
  // Workers whose Redis connections are up. At least one must be, so the
  // host can serve; requiring all would take a host out of rotation while
  // one respawned worker connects, so the count is reported instead.
  const workersRedis = d.supervisor.list().filter((w) => w.nodeId !== null && w.redis).length;
  // A stopped or stalled worker keeps its Redis flag: only responsive ones can serve.
  const workersServing = d.supervisor.list().filter((w) => w.nodeId !== null && w.redis && w.responsive).length;
  const workersUnresponsive = d.supervisor.list().filter((w) => !w.responsive).length;
  const ready = redis && workersServing > 0 && !draining;
  const reason = draining
    ? 'draining'
    : !redis
      ? `redis unreachable: ${redisError ?? ''}`
      : workersUp === 0
        ? 'no worker is up'
        : workersRedis === 0
          ? 'no worker is connected to redis yet'
          : workersServing === 0
            ? 'no worker is responsive (stopped or event loop stalled)'
            : undefined;
  return {
    ready,
    checks: {
      mode: 'cluster',
      redis,
      workersUp,
      workersRedis,
      workersUnresponsive,
      workersExpected: d.workersExpected,
      draining,
      leader: d.consumer.state().leader,
      ...(reason ? { reason } : {}),
    },
  };
}

/**
 * How each default metric combines across the processes of a host, where
 * prom-client's default is wrong for an operator: lag is the worst process
 * (an average dilutes one stuck worker), the fd limit is per process (a sum
 * is meaningless), and the start time is the primary's (the earliest), which
 * prom-client would omit.
 */
const AGGREGATORS: [RegExp, string][] = [
  [/^nodejs_eventloop_lag_/, 'max'],
  [/^process_max_fds$/, 'max'],
  [/^process_start_time_seconds$/, 'min'],
];

/** Per-process copies of these, labelled `process`, so the stuck process can be named. */
const PER_PROCESS: Record<string, { name: string; help: string }> = {
  nodejs_eventloop_lag_seconds: { name: 'gateway_eventloop_lag_seconds', help: 'Event loop lag of each process of the host' },
  nodejs_eventloop_lag_p99_seconds: {
    name: 'gateway_eventloop_lag_p99_seconds',
    help: '99th percentile event loop lag of each process of the host',
  },
};

export interface HostMetricsDeps {
  readonly supervisor: Supervisor;
  readonly registry: Registry;
  readonly metrics: Metrics;
  /** Top sites with their own `namespace` label on gateway_connections. */
  readonly maxSites: number;
  /** Where a scrape that missed workers is reported (rate-limited). */
  readonly missingLog: RateLimitedLog;
  /** Before the primary's registry is read: gauges that are computed on demand. */
  readonly refresh?: () => void;
}

/** Prometheus text for the whole host: every worker's registry aggregated with the primary's. */
export async function hostMetrics(d: HostMetricsDeps): Promise<{ contentType: string; body: string }> {
  const { answers, missing } = await d.supervisor.askEach((id) => ({ type: 'gw:metrics', id }));
  d.metrics.metricsWorkersMissing.set(missing.length);
  if (missing.length > 0) {
    d.missingLog.warn(
      'metrics-missing',
      { workers: missing },
      `${missing.length} worker(s) did not answer the metrics scrape in time: their gauges are left out, their counters carried over`,
    );
  }
  d.refresh?.();
  const processes: { process: string; metrics: MetricJson[] }[] = [];
  for (const a of answers) {
    if (!Array.isArray(a.body)) continue;
    const metrics = a.body as MetricJson[];
    d.supervisor.counters.remember(a.worker, metrics);
    processes.push({ process: `worker-${a.worker}`, metrics });
  }
  processes.push({ process: 'primary', metrics: (await d.registry.getMetricsAsJSON()) as unknown as MetricJson[] });
  const answered = new Set(answers.map((a) => a.worker));
  const carried = d.supervisor.counters.parts(
    answered,
    d.supervisor.list().map((w) => w.id),
  );
  const parts: MetricJson[][] = [...processes.map((p) => p.metrics), ...carried];
  for (const part of parts) {
    for (const m of part) {
      const rule = AGGREGATORS.find(([re]) => re.test(m.name));
      if (rule) m.aggregator = rule[1];
    }
  }
  parts.push(perProcessSeries(processes));
  capSiteSeries(parts, d.maxSites);
  const agg = AggregatorRegistry.aggregate(parts);
  return { contentType: agg.contentType, body: await agg.metrics() };
}

function perProcessSeries(processes: readonly { process: string; metrics: MetricJson[] }[]): MetricJson[] {
  const out: MetricJson[] = [];
  for (const [source, target] of Object.entries(PER_PROCESS)) {
    const values: MetricJson['values'] = [];
    for (const p of processes) {
      const v = p.metrics.find((m) => m.name === source)?.values[0]?.value;
      if (v !== undefined) values.push({ value: v, labels: { process: p.process } });
    }
    if (values.length > 0) out.push({ name: target.name, help: target.help, type: 'gauge', aggregator: 'sum', values });
  }
  return out;
}

/** The site cap applies to the host total: workers report every site, the primary keeps the top ones. */
function capSiteSeries(parts: MetricJson[][], maxSites: number): void {
  const totals = new Map<string, number>();
  const holders: MetricJson[] = [];
  for (const part of parts) {
    for (const m of part) {
      if (m.name !== 'gateway_connections') continue;
      holders.push(m);
      for (const v of m.values) {
        const site = String(v.labels['namespace'] ?? '');
        totals.set(site, (totals.get(site) ?? 0) + v.value);
      }
    }
  }
  const [first, ...rest] = holders;
  if (!first) return;
  first.values = [...capSites(totals, maxSites)].map(([namespace, value]) => ({ value, labels: { namespace } }));
  for (const m of rest) m.values = [];
}
