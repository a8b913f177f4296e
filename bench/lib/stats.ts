/** Pure statistics for the bench: percentiles, medians with spread, a log-bucket latency histogram. */

/** Nearest-rank percentile of an ascending array (p in [0, 100]); NaN when empty. */
export function percentileSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  if (p <= 0) return sorted[0] as number;
  if (p >= 100) return sorted[sorted.length - 1] as number;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.max(0, rank - 1)] as number;
}

export function percentile(values: readonly number[], p: number): number {
  return percentileSorted(
    [...values].sort((a, b) => a - b),
    p,
  );
}

export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

/** Median (mean of the two middle values for an even count) with min and max; NaN fields when empty. Non-finite values are ignored. */
export function spread(values: readonly number[]): Spread {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  return { median, min: v[0] as number, max: v[v.length - 1] as number, n: v.length };
}

/**
 * Latency histogram with logarithmic buckets: bucket i covers
 * [MIN * GROWTH^i, MIN * GROWTH^(i+1)), so any percentile is reported within
 * 1% of the true sample. Values below MIN land in bucket 0. Mergeable and
 * serialisable (sparse) so load-generator processes can send it over IPC.
 */
export class LogHistogram {
  static readonly MIN = 0.01; // ms
  static readonly GROWTH = 1.01;
  private static readonly LOG_GROWTH = Math.log(LogHistogram.GROWTH);
  counts = new Map<number, number>();
  count = 0;
  max = 0;
  min = Infinity;
  sum = 0;

  static bucketOf(v: number): number {
    if (!(v > LogHistogram.MIN)) return 0;
    return Math.floor(Math.log(v / LogHistogram.MIN) / LogHistogram.LOG_GROWTH);
  }

  /** Upper edge of bucket i: what a percentile falling into it reports (never below the true value). */
  static upperEdge(i: number): number {
    return LogHistogram.MIN * Math.pow(LogHistogram.GROWTH, i + 1);
  }

  record(v: number): void {
    const b = LogHistogram.bucketOf(v);
    this.counts.set(b, (this.counts.get(b) ?? 0) + 1);
    this.count++;
    this.sum += v;
    if (v > this.max) this.max = v;
    if (v < this.min) this.min = v;
  }

  merge(other: LogHistogram | HistogramJson): void {
    const h = other instanceof LogHistogram ? other.toJSON() : other;
    for (const [b, c] of h.buckets) this.counts.set(b, (this.counts.get(b) ?? 0) + c);
    this.count += h.count;
    this.sum += h.sum;
    if (h.count > 0) {
      this.max = Math.max(this.max, h.max);
      this.min = Math.min(this.min, h.min);
    }
  }

  /** p in (0, 100]; the exact max for p = 100; NaN when empty. Capped at the observed max. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    if (p >= 100) return this.max;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    const keys = [...this.counts.keys()].sort((a, b) => a - b);
    let seen = 0;
    for (const k of keys) {
      seen += this.counts.get(k) as number;
      if (seen >= rank) return Math.min(this.max, LogHistogram.upperEdge(k));
    }
    return this.max;
  }

  toJSON(): HistogramJson {
    return { buckets: [...this.counts.entries()], count: this.count, sum: this.sum, max: this.max, min: this.count > 0 ? this.min : 0 };
  }

  static fromJSON(j: HistogramJson): LogHistogram {
    const h = new LogHistogram();
    h.merge(j);
    return h;
  }
}

export interface HistogramJson {
  buckets: [number, number][];
  count: number;
  sum: number;
  max: number;
  min: number;
}

/** Longest interval between consecutive finite timestamps (any order); 0 for fewer than two. Returns the gap and where it starts. */
export function longestGap(timestamps: readonly number[]): { gap: number; from: number } {
  const t = timestamps.filter((x) => Number.isFinite(x) && x > 0).sort((a, b) => a - b);
  let gap = 0;
  let from = NaN;
  for (let i = 1; i < t.length; i++) {
    const d = (t[i] as number) - (t[i - 1] as number);
    if (d > gap) {
      gap = d;
      from = t[i - 1] as number;
    }
  }
  return { gap, from };
}

/** Lost = sequence numbers never delivered, duplicated = deliveries beyond the expected count per sequence number. */
export function lossAndDuplicates(counts: ArrayLike<number>, expectedPerSeq = 1): { lost: number; duplicated: number; delivered: number } {
  let lost = 0;
  let duplicated = 0;
  let delivered = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] as number;
    delivered += c;
    if (c < expectedPerSeq) lost += expectedPerSeq - c;
    else if (c > expectedPerSeq) duplicated += c - expectedPerSeq;
  }
  return { lost, duplicated, delivered };
}
