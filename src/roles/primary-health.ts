import { AggregatorRegistry, type Registry } from 'prom-client';
import type { Supervisor } from '../cluster/supervisor';
import type { LeaderConsumer } from '../leader/leader-consumer';
import type { Metrics } from '../metrics/metrics';
import type { Readiness } from '../ops/ops-server';
import type { RedisClient } from '../redis/connect';
import { errorMessage } from '../shared/errors';

const HEALTH_PING_TIMEOUT_MS = 1000;

export interface PrimaryHealthDeps {
  /** A fail-fast connection: a ping must not wait for an outage to end. */
  readonly fast: RedisClient;
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
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      d.fast.ping(),
      new Promise((_r, rej) => (timer = setTimeout(() => rej(new Error('ping timed out')), HEALTH_PING_TIMEOUT_MS))),
    ]);
    redis = true;
  } catch (err) {
    redisError = errorMessage(err);
  } finally {
    clearTimeout(timer);
  }
  d.metrics.redisUp.set(redis ? 1 : 0);
  const draining = d.draining();
  const workersUp = d.supervisor.upCount();
  // Workers whose Redis connections are up. At least one must be, so the
  // host can serve; requiring all would take a host out of rotation while
  // one respawned worker connects, so the count is reported instead.
  const workersRedis = d.supervisor.list().filter((w) => w.nodeId !== null && w.redis).length;
  const ready = redis && workersRedis > 0 && !draining;
  const reason = draining
    ? 'draining'
    : !redis
      ? `redis unreachable: ${redisError ?? ''}`
      : workersUp === 0
        ? 'no worker is up'
        : workersRedis === 0
          ? 'no worker is connected to redis yet'
          : undefined;
  return {
    ready,
    checks: {
      mode: 'cluster',
      redis,
      workersUp,
      workersRedis,
      workersExpected: d.workersExpected,
      draining,
      leader: d.consumer.state().leader,
      ...(reason ? { reason } : {}),
    },
  };
}

/** Prometheus text for the whole host: every worker's registry aggregated with the primary's. */
export async function hostMetrics(d: Pick<PrimaryHealthDeps, 'supervisor' | 'registry'>): Promise<{ contentType: string; body: string }> {
  const parts: object[] = (await d.supervisor.ask((id) => ({ type: 'gw:metrics', id }))).filter(Array.isArray);
  parts.push(await d.registry.getMetricsAsJSON());
  const agg = AggregatorRegistry.aggregate(parts);
  return { contentType: agg.contentType, body: await agg.metrics() };
}
