/**
 * Bookkeeping for the fan-out scenario, pure so it can be unit-tested.
 *
 * The publisher stamps every message with the run id, a sequence number
 * (0..total-1) and its publish time in ms. When it is done it publishes an
 * end marker through the gateway itself, carrying how many it attempted and
 * which sequence numbers the publish API rejected, so every subscriber knows
 * exactly what it should have received without any shared state between k6
 * VUs.
 */

export interface FanoutMessage {
  k6_run: string;
  k6_seq: number;
  /** Publish time, ms since the epoch, taken just before the POST. */
  k6_published_at: number;
  /** Filler to reach a realistic payload size. */
  k6_padding?: string;
}

export interface FanoutEndMarker {
  k6_run: string;
  k6_end: true;
  /** Sequence numbers 0..k6_total-1 were attempted. */
  k6_total: number;
  /** Sequence numbers the publish API did not accept (capped). */
  k6_failed: number[];
  /** True when more failed than `k6_failed` lists. */
  k6_failed_truncated: boolean;
}

/** Cap on failed sequence numbers carried by the end marker. */
export const MAX_FAILED_LISTED = 5000;

export function fanoutMessage(runId: string, seq: number, publishedAt: number, paddingBytes: number): FanoutMessage {
  const message: FanoutMessage = { k6_run: runId, k6_seq: seq, k6_published_at: publishedAt };
  if (paddingBytes > 0) message.k6_padding = 'x'.repeat(paddingBytes);
  return message;
}

export function fanoutEndMarker(runId: string, total: number, failed: readonly number[]): FanoutEndMarker {
  return {
    k6_run: runId,
    k6_end: true,
    k6_total: total,
    k6_failed: failed.slice(0, MAX_FAILED_LISTED),
    k6_failed_truncated: failed.length > MAX_FAILED_LISTED,
  };
}

export type FanoutReceipt =
  | { kind: 'message'; seq: number; latencyMs: number; duplicate: boolean }
  | { kind: 'end' }
  /** Not ours: another run, another app's event, or malformed. */
  | { kind: 'foreign' };

export interface FanoutOutcome {
  /** Sequence numbers this subscriber should have received. */
  expected: number;
  /** Of those, how many it received (duplicates counted once). */
  delivered: number;
  /** Whether the end marker arrived (else `expected` is the planned count). */
  endSeen: boolean;
  /** A few missing sequence numbers, for the log. */
  missingSample: number[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export class FanoutTracker {
  private readonly runId: string;
  private readonly received = new Set<number>();
  private end: FanoutEndMarker | undefined;

  constructor(runId: string) {
    this.runId = runId;
  }

  get endSeen(): boolean {
    return this.end !== undefined;
  }

  get receivedCount(): number {
    return this.received.size;
  }

  /** Handles the arguments of one fan-out event; `now` in ms since the epoch. */
  receive(args: readonly unknown[], now: number): FanoutReceipt {
    const payload = args[0];
    if (!isRecord(payload) || payload['k6_run'] !== this.runId) return { kind: 'foreign' };
    if (payload['k6_end'] === true) {
      const total = payload['k6_total'];
      const failed = payload['k6_failed'];
      if (typeof total !== 'number' || !Array.isArray(failed)) return { kind: 'foreign' };
      this.end = {
        k6_run: this.runId,
        k6_end: true,
        k6_total: total,
        k6_failed: failed.filter((n): n is number => typeof n === 'number'),
        k6_failed_truncated: payload['k6_failed_truncated'] === true,
      };
      return { kind: 'end' };
    }
    const seq = payload['k6_seq'];
    const publishedAt = payload['k6_published_at'];
    if (typeof seq !== 'number' || typeof publishedAt !== 'number') return { kind: 'foreign' };
    const duplicate = this.received.has(seq);
    this.received.add(seq);
    return { kind: 'message', seq, latencyMs: Math.max(0, now - publishedAt), duplicate };
  }

  /**
   * What this subscriber should have seen: every attempted sequence number
   * the publish API accepted, per the end marker; without the marker, the
   * planned count (a lost marker then shows up as lost messages too).
   */
  outcome(plannedTotal: number): FanoutOutcome {
    const total = this.end?.k6_total ?? plannedTotal;
    const rejected = new Set<number>(this.end !== undefined && !this.end.k6_failed_truncated ? this.end.k6_failed : []);
    let expected = 0;
    let delivered = 0;
    const missingSample: number[] = [];
    for (let seq = 0; seq < total; seq += 1) {
      if (rejected.has(seq)) continue;
      expected += 1;
      if (this.received.has(seq)) delivered += 1;
      else if (missingSample.length < 10) missingSample.push(seq);
    }
    return { expected, delivered, endSeen: this.end !== undefined, missingSample };
  }
}
