import { hash } from 'node:crypto';

export interface RingEntry {
  readonly raw: Buffer;
  readonly digest: string;
  /** performance.now() at receipt. */
  readonly at: number;
}

/**
 * Memory an entry costs beyond its raw bytes (the entry object, its digest
 * string, array slot), counted against the byte bound so that a flood of
 * tiny messages is bounded too.
 */
export const ENTRY_OVERHEAD_BYTES = 512;

/**
 * The first 16 base64 characters of the SHA-1 (= the base64 of its first 12
 * bytes), in one call: no Hash object per event, and a flat 16-character
 * string rather than a slice that keeps the whole digest string alive.
 */
export function digestOf(raw: Buffer): string {
  return hash('sha1', raw, 'buffer').toString('base64', 0, 12);
}

/**
 * Received messages are copied into slabs of this size (a message larger
 * than a quarter of it gets a buffer of its own): one allocation per slab
 * instead of one malloc per message, which under a flood of small messages
 * fragmented the allocator (RSS kept after the flood). Entries are trimmed
 * oldest first, so a slab is released once its last message is; at most
 * one partly used slab is held beyond the entries' own bytes.
 */
export const SLAB_BYTES = 64 * 1024;

/**
 * Every message received on the events channel, in channel order, with
 * absolute positions. All subscribers of one Redis channel see the same
 * order, so a standby can find where the previous leader stopped by matching
 * the digests of the last events it broadcast (see `align`).
 */
export class EventRing {
  private entries: RingEntry[] = [];
  /** Absolute position of entries[0]. */
  private base = 0;
  /** Bytes held: raw messages plus per-entry overhead (entries trimmed but not yet spliced included). */
  private bytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
    /** A burst of large events must not hold hundreds of MB until they age out. */
    private readonly maxBytes = Infinity,
  ) {}

  get byteSize(): number {
    return this.bytes;
  }

  get start(): number {
    return this.base;
  }

  get end(): number {
    return this.base + this.entries.length;
  }

  push(received: Buffer, at: number): number {
    // The subscriber hands out slices of its read buffers: keeping a slice
    // would keep the whole chunk it came from (measured: twice the bytes
    // under a flood of small messages). A copy holds its own bytes only.
    const raw = this.copy(received);
    this.entries.push({ raw, digest: digestOf(raw), at });
    this.bytes += raw.length + ENTRY_OVERHEAD_BYTES;
    return this.end - 1;
  }

  private slab: Buffer | null = null;
  private slabUsed = 0;

  private copy(received: Buffer): Buffer {
    const n = received.length;
    if (n > SLAB_BYTES / 4) {
      const own = Buffer.allocUnsafeSlow(n);
      received.copy(own);
      return own;
    }
    if (this.slab === null || this.slabUsed + n > SLAB_BYTES) {
      this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.slabUsed = 0;
    }
    const raw = this.slab.subarray(this.slabUsed, this.slabUsed + n);
    received.copy(raw);
    this.slabUsed += n;
    return raw;
  }

  get(pos: number): RingEntry | undefined {
    return this.entries[pos - this.base];
  }

  /**
   * Drops entries beyond the count, age and byte bounds, but never at or
   * after `keepFrom` (the leader's cursor: those are not broadcast yet).
   */
  trim(now: number, keepFrom: number): void {
    let drop = 0;
    let freed = 0;
    // Over the byte bound, drop down to 7/8 of it: memory is given back at
    // once, and the splice happens once per eighth of the bound, not per event.
    const bytesTarget = this.bytes > this.maxBytes ? this.maxBytes * 0.875 : Infinity;
    const n = this.entries.length;
    const limit = Math.min(keepFrom - this.base, n);
    while (drop < limit) {
      const e = this.entries[drop];
      if (!e) break;
      if (n - drop > this.maxEntries || now - e.at > this.maxAgeMs || this.bytes - freed > bytesTarget) {
        freed += e.raw.length + ENTRY_OVERHEAD_BYTES;
        drop++;
      } else break;
    }
    if (drop > 0) {
      // Amortise: splice only when a meaningful prefix has expired (or memory is the reason).
      if (bytesTarget !== Infinity || drop >= 1024 || drop === n || drop * 4 >= n) {
        this.entries = this.entries.slice(drop);
        this.base += drop;
        this.bytes -= freed;
      }
    }
  }

  /** Digests of the `k` entries ending at position `last` (inclusive), oldest first. */
  tail(last: number, k: number): string[] {
    const out: string[] = [];
    for (let p = Math.max(this.base, last - k + 1); p <= last; p++) {
      const e = this.get(p);
      if (e) out.push(e.digest);
    }
    return out;
  }

  /**
   * The position after the newest place where `digests` (the previous
   * leader's last broadcast events, oldest first) match consecutive entries,
   * or null when they are not in the ring. Scans newest first, so the most
   * recent occurrence of a repeated sequence wins.
   */
  align(digests: readonly string[]): number | null {
    if (digests.length === 0) return null;
    const k = digests.length;
    for (let last = this.end - 1; last >= this.base; last--) {
      let ok = true;
      let matched = 0;
      for (let j = 0; j < k; j++) {
        const p = last - j;
        if (p < this.base) break;
        if (this.get(p)?.digest !== digests[k - 1 - j]) {
          ok = false;
          break;
        }
        matched++;
      }
      // A partial match at the very start of the ring is accepted only if it
      // covers at least 2 events (or all we were given).
      if (ok && (matched === k || (matched >= Math.min(2, k) && last - matched + 1 === this.base))) return last + 1;
    }
    return null;
  }
}
