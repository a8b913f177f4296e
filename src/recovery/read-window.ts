import { compareOffsets } from '../events/encode';

/** One event of the history stream, as the leader's script wrote it (`leader/publisher.ts`). */
export interface HistoryEntry {
  /** Stream id = the offset the live packet carried. */
  readonly id: string;
  /** Site; '' for events without a room (every site). */
  readonly namespace: string;
  readonly room: string;
  /** The event's argument list without its closing bracket (`openEventArgs`). */
  readonly args: string;
}

/**
 * The stretch of the history stream a worker read last, kept in memory for a
 * short while so that the replays of many clients recovering at once (a
 * host's clients landing on this worker during a rolling restart) share one
 * read of the stream instead of each reading everything after its own
 * offset: without it a burst of N recoveries reads N times the same
 * thousands of entries (N x events per second x seconds offline).
 *
 * Invariant: every stream entry with an id in (from, to] that has a payload
 * is in `entries`, in id order. Pure (no I/O); `history.ts` does the reads.
 */
export class ReadWindow {
  private entries: HistoryEntry[] = [];
  /** Exclusive lower bound of what the window covers; null = empty window. */
  private lo: string | null = null;
  /** Inclusive upper bound: the last stream id read. */
  private hi: string | null = null;
  /** The stream the entries came from (its genesis id), to notice a replaced stream. */
  genesis: string | null = null;

  constructor(
    private readonly maxEntries: number,
    private readonly retainMs: number,
  ) {}

  get from(): string | null {
    return this.lo;
  }

  get to(): string | null {
    return this.hi;
  }

  get size(): number {
    return this.entries.length;
  }

  /** True when every entry after `offset` up to `to` is in the window. */
  covers(offset: string): boolean {
    return this.lo !== null && this.hi !== null && compareOffsets(offset, this.lo) >= 0 && compareOffsets(offset, this.hi) <= 0;
  }

  /** Starts over with what a read of (from, to] returned. */
  seed(from: string, entries: readonly HistoryEntry[], to: string, genesis: string | null): void {
    this.lo = from;
    this.hi = compareOffsets(to, from) >= 0 ? to : from;
    this.entries = entries.filter((e) => compareOffsets(e.id, from) > 0 && compareOffsets(e.id, this.hi as string) <= 0);
    this.genesis = genesis;
    this.evict();
  }

  /** What a read of (to, newTo] returned. Ignored on an empty window. */
  append(entries: readonly HistoryEntry[], newTo: string): void {
    if (this.hi === null) return;
    const hi = this.hi;
    for (const e of entries) if (compareOffsets(e.id, hi) > 0 && compareOffsets(e.id, newTo) <= 0) this.entries.push(e);
    if (compareOffsets(newTo, hi) > 0) this.hi = newTo;
    this.evict();
  }

  /** What a read of (from, this.from] returned: the window now starts at `from`. */
  prepend(from: string, entries: readonly HistoryEntry[]): void {
    const lo = this.lo;
    if (lo === null || compareOffsets(from, lo) >= 0) return;
    const older = entries.filter((e) => compareOffsets(e.id, from) > 0 && compareOffsets(e.id, lo) <= 0);
    this.entries = older.concat(this.entries);
    this.lo = from;
    this.evict();
  }

  reset(): void {
    this.entries = [];
    this.lo = null;
    this.hi = null;
    this.genesis = null;
  }

  /** Visits, in order, the entries after `offset` (which the window must cover); returns the last id covered. */
  visitAfter(offset: string, visit: (e: HistoryEntry) => void): string {
    let a = 0;
    let b = this.entries.length;
    while (a < b) {
      const m = (a + b) >>> 1;
      if (compareOffsets((this.entries[m] as HistoryEntry).id, offset) <= 0) a = m + 1;
      else b = m;
    }
    // A copy: a visitor that leads to another read must not see the array change under it.
    const after = this.entries.slice(a);
    for (const e of after) visit(e);
    return this.hi ?? offset;
  }

  /** Bounds: at most maxEntries, none older than retainMs before the newest id read. */
  private evict(): void {
    if (this.hi === null) return;
    const newestMs = Number(this.hi.slice(0, this.hi.indexOf('-')));
    let drop = Math.max(0, this.entries.length - this.maxEntries);
    while (drop < this.entries.length) {
      const id = (this.entries[drop] as HistoryEntry).id;
      if (Number(id.slice(0, id.indexOf('-'))) >= newestMs - this.retainMs) break;
      drop++;
    }
    if (drop === 0) return;
    this.lo = (this.entries[drop - 1] as HistoryEntry).id;
    this.entries = this.entries.slice(drop);
  }
}
