/** One metric as prom-client's `registry.getMetricsAsJSON()` describes it. */
export interface MetricJson {
  name: string;
  help: string;
  type: string;
  aggregator?: string;
  values: { value: number; labels: Record<string, string | number>; metricName?: string }[];
}

const isMonotonic = (m: MetricJson): boolean =>
  (m.type === 'counter' || m.type === 'histogram') && (m.aggregator === undefined || m.aggregator === 'sum');

const seriesKey = (v: MetricJson['values'][number]): string =>
  `${v.metricName ?? ''}\u0000${JSON.stringify(Object.entries(v.labels).sort(([a], [b]) => (a < b ? -1 : 1)))}`;

/**
 * Keeps host counters monotonic while workers come and go. A host counter is
 * the sum over its workers; when a worker dies, its share would vanish and
 * the sum go backwards (a counter reset to Prometheus, which rate() then
 * over-counts). So the last counter values each worker reported are kept,
 * added to a `retired` baseline when it exits, and also stand in for a live
 * worker that misses a scrape.
 */
export class CounterBaseline {
  private readonly last = new Map<number, MetricJson[]>();
  private readonly retired = new Map<string, { meta: MetricJson; series: Map<string, MetricJson['values'][number]> }>();

  /** A worker's answer to a scrape: only its monotonic metrics are kept. */
  remember(workerId: number, metrics: readonly MetricJson[]): void {
    this.last.set(
      workerId,
      metrics.filter(isMonotonic).map((m) => ({ ...m, values: m.values.map((v) => ({ ...v })) })),
    );
  }

  /** The worker exited: what it counted becomes part of the baseline for good. */
  retire(workerId: number): void {
    const metrics = this.last.get(workerId);
    this.last.delete(workerId);
    for (const m of metrics ?? []) {
      let entry = this.retired.get(m.name);
      if (!entry) {
        entry = { meta: { ...m, values: [] }, series: new Map() };
        this.retired.set(m.name, entry);
      }
      for (const v of m.values) {
        const k = seriesKey(v);
        const prev = entry.series.get(k);
        if (prev) prev.value += v.value;
        else entry.series.set(k, { ...v });
      }
    }
  }

  /**
   * Registries (in getMetricsAsJSON form) to aggregate with the live answers:
   * the retired baseline, and the last counters of live workers that did not
   * answer this time.
   */
  parts(answered: ReadonlySet<number>, alive: readonly number[]): MetricJson[][] {
    const out: MetricJson[][] = [];
    if (this.retired.size > 0) {
      out.push([...this.retired.values()].map((e) => ({ ...e.meta, values: [...e.series.values()].map((v) => ({ ...v })) })));
    }
    for (const id of alive) {
      const m = this.last.get(id);
      if (!answered.has(id) && m) out.push(m);
    }
    return out;
  }
}
