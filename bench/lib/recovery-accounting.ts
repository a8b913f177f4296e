/**
 * Delivery accounting for the recovery scenarios (jitter, rolling-restart).
 * Pure, unit-tested. The publisher cycles its targets, so with n clients in n
 * user rooms event `s` belongs to client `s % n`: what a client should have
 * received follows from the count of events sent, without a per-event log.
 */
import { percentileSorted } from './stats';

/** What one client saw, updated per arrival. */
export class ClientLedger {
  private readonly seen = new Set<number>();
  private maxSeq = -1;
  duplicates = 0;
  /** Arrivals with a sequence number below one already received (a replay that came after newer live events, or a reordering). */
  outOfOrder = 0;

  record(seq: number): void {
    if (!Number.isInteger(seq) || seq < 0) return;
    if (this.seen.has(seq)) {
      this.duplicates++;
      return;
    }
    this.seen.add(seq);
    if (seq < this.maxSeq) this.outOfOrder++;
    else this.maxSeq = seq;
  }

  get unique(): number {
    return this.seen.size;
  }

  /** Unique arrivals among the sequence numbers below `sent` (late strays from an earlier window are not counted). */
  uniqueBelow(sent: number): number {
    let c = 0;
    for (const s of this.seen) if (s < sent) c++;
    return c;
  }

  toJSON(): LedgerJson {
    return { unique: this.unique, duplicates: this.duplicates, outOfOrder: this.outOfOrder, seqs: [...this.seen] };
  }
}

export interface LedgerJson {
  unique: number;
  duplicates: number;
  outOfOrder: number;
  /** Every distinct sequence number received. */
  seqs: number[];
}

/** Events of `sent` (sequence numbers 0..sent-1, cycling over `clients` targets) addressed to client `index`. */
export function expectedFor(index: number, clients: number, sent: number): number {
  if (clients <= 0 || index < 0 || index >= clients || sent <= index) return 0;
  return Math.floor((sent - 1 - index) / clients) + 1;
}

export interface DeliverySummary {
  /** Unique events received / events published to the client's room, all clients together. */
  overallRatio: number;
  /** Per-client ratios: the worst client, the median, and how many got everything. */
  minClientRatio: number;
  medianClientRatio: number;
  clientsComplete: number;
  expected: number;
  unique: number;
  lost: number;
  duplicates: number;
  outOfOrder: number;
  /** Sequence numbers received by a client they were not addressed to (must be 0: a routing bug otherwise). */
  misrouted: number;
}

/** `ledgers[i]` belongs to client i (the i-th target of the publisher). */
export function summarizeDelivery(ledgers: readonly LedgerJson[], sent: number): DeliverySummary {
  const n = ledgers.length;
  let expected = 0;
  let unique = 0;
  let duplicates = 0;
  let outOfOrder = 0;
  let misrouted = 0;
  let complete = 0;
  const ratios: number[] = [];
  ledgers.forEach((l, i) => {
    const e = expectedFor(i, n, sent);
    let u = 0;
    for (const s of l.seqs) {
      if (s % n !== i) misrouted++;
      else if (s < sent) u++;
    }
    expected += e;
    unique += u;
    duplicates += l.duplicates;
    outOfOrder += l.outOfOrder;
    if (e > 0) {
      ratios.push(u / e);
      if (u >= e) complete++;
    }
  });
  ratios.sort((a, b) => a - b);
  const mid = Math.floor(ratios.length / 2);
  const median =
    ratios.length === 0
      ? NaN
      : ratios.length % 2 === 1
        ? (ratios[mid] as number)
        : ((ratios[mid - 1] as number) + (ratios[mid] as number)) / 2;
  return {
    overallRatio: expected > 0 ? unique / expected : NaN,
    minClientRatio: ratios.length ? (ratios[0] as number) : NaN,
    medianClientRatio: median,
    clientsComplete: complete,
    expected,
    unique,
    lost: expected - unique,
    duplicates,
    outOfOrder,
    misrouted,
  };
}

/** Next force-close delay: uniform in [mean * (1 - spread), mean * (1 + spread)]; `rnd` in [0, 1). */
export function jitterDelay(meanMs: number, spread: number, rnd: number): number {
  const s = Math.min(1, Math.max(0, spread));
  return Math.max(0, meanMs * (1 - s + 2 * s * rnd));
}

export interface ReconnectSummary {
  n: number;
  p50: number;
  p95: number;
  max: number;
}

/** p50/p95/max (nearest rank) of reconnect times; NaN fields when there are none. */
export function summarizeReconnects(ms: readonly number[]): ReconnectSummary {
  const v = [...ms].sort((a, b) => a - b);
  return { n: v.length, p50: percentileSorted(v, 50), p95: percentileSorted(v, 95), max: percentileSorted(v, 100) };
}

/**
 * Splits reconnections by the restart they belong to: reconnection j (its
 * disconnect at `at[j]`, wall-clock ms) goes to the last phase started at or
 * before it (`phaseStarts` ascending, e.g. each host's SIGTERM). Disconnects
 * before the first phase are returned apart (`before`): nothing restarted
 * then, they are stray drops.
 */
export function reconnectsByPhase(
  at: readonly number[],
  ms: readonly number[],
  phaseStarts: readonly number[],
): { phases: ReconnectSummary[]; before: ReconnectSummary } {
  const buckets: number[][] = phaseStarts.map(() => []);
  const before: number[] = [];
  at.forEach((t, j) => {
    let k = -1;
    for (let i = 0; i < phaseStarts.length; i++) if ((phaseStarts[i] as number) <= t) k = i;
    const v = ms[j];
    if (v === undefined) return;
    if (k < 0) before.push(v);
    else (buckets[k] as number[]).push(v);
  });
  return { phases: buckets.map(summarizeReconnects), before: summarizeReconnects(before) };
}

/** Per second since `start` (wall-clock ms), the p95 of `ms` for the reconnections whose disconnect fell in it. */
export function p95BySecond(at: readonly number[], ms: readonly number[], start: number, seconds: number): number[] {
  const buckets: number[][] = Array.from({ length: seconds }, () => []);
  at.forEach((t, j) => {
    const s = Math.floor((t - start) / 1000);
    const v = ms[j];
    if (s >= 0 && s < seconds && v !== undefined && Number.isFinite(v)) (buckets[s] as number[]).push(v);
  });
  return buckets.map((b) => summarizeReconnects(b).p95);
}
