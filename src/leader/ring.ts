import { hash } from 'node:crypto';

export interface RingEntry {
  /** A view of the held bytes: valid until the entry is trimmed. */
  readonly raw: Buffer;
  readonly digest: string;
  /** performance.now() at receipt. */
  readonly at: number;
}

/** Digest bytes kept per entry: the base64 of 12 bytes is the 16-character digest. */
const DIGEST_BYTES = 12;

/**
 * Memory an entry costs beyond its raw bytes: its slot in the index arrays
 * (slab, offset, length, receipt time, digest). Counted, with the index
 * arrays' whole capacity, in `byteSize`.
 */
export const ENTRY_OVERHEAD_BYTES = 4 + 4 + 4 + 8 + DIGEST_BYTES;

/**
 * The first 16 base64 characters of the SHA-1 (= the base64 of its first 12
 * bytes), computed in one call.
 */
export function digestOf(raw: Buffer): string {
  return digestBytes(raw).toString('base64');
}

function digestBytes(raw: Buffer): Buffer {
  return hash('sha1', raw, 'buffer').subarray(0, DIGEST_BYTES);
}

/**
 * Received messages are copied into slabs of this size; a message larger
 * than a quarter of it gets a buffer of its own. Entries are trimmed oldest
 * first, so a slab is released as soon as its last message is.
 */
export const SLAB_BYTES = 64 * 1024;
/** Entries the index arrays have room for at least (they double and halve from there). */
export const MIN_CAPACITY = 1024;

interface Slab {
  readonly buf: Buffer;
  used: number;
  /** Absolute position of the last entry stored in it. */
  last: number;
}

/**
 * Every message received on the events channel, in channel order, with
 * absolute positions. All subscribers of one Redis channel see the same
 * order, so a standby can find where the previous leader stopped by matching
 * the digests of the last events it broadcast (see `align`).
 *
 * Nothing per entry lives on the JS heap: the bytes are in slabs, the rest
 * in typed arrays used as a circular index. A flood of hundreds of thousands
 * of messages would otherwise leave as many objects surviving young-
 * generation collections, and V8 grows its young generation (RSS) in
 * proportion to what survives.
 */
export class EventRing {
  /** Absolute position of the oldest entry. */
  private base = 0;
  private count = 0;
  /** Index slot of the oldest entry. */
  private head = 0;
  private capacity = MIN_CAPACITY;
  private slabOf = new Int32Array(MIN_CAPACITY);
  private offset = new Int32Array(MIN_CAPACITY);
  private length = new Int32Array(MIN_CAPACITY);
  private at = new Float64Array(MIN_CAPACITY);
  private digests = new Uint8Array(MIN_CAPACITY * DIGEST_BYTES);
  /** Slabs in use, oldest first; `slabs[0]` has sequence number `slabBase`. */
  private slabs: (Slab | null)[] = [];
  private slabBase = 0;
  private slabHead = 0;
  /** Bytes of the slabs held. */
  private slabBytes = 0;

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
    /** A burst of large events must not hold hundreds of MB until they age out. */
    private readonly maxBytes = Infinity,
  ) {}

  /** Memory held: the slabs (whole, used or not) plus the index arrays' capacity. */
  get byteSize(): number {
    return this.slabBytes + this.capacity * ENTRY_OVERHEAD_BYTES;
  }

  get start(): number {
    return this.base;
  }

  get end(): number {
    return this.base + this.count;
  }

  push(received: Buffer, at: number): number {
    if (this.count === this.capacity) this.resize(this.capacity * 2);
    const slot = (this.head + this.count) & (this.capacity - 1);
    const pos = this.end;
    // The subscriber hands out slices of its read buffers: keeping a slice
    // would keep the whole chunk it came from. A copy holds its own bytes only.
    const n = received.length;
    const own = n > SLAB_BYTES / 4;
    let slab = this.slabs.length > this.slabHead ? this.slabs[this.slabs.length - 1] : null;
    // A new slab for a large message (its own), or when the current one is full or someone else's.
    if (!slab || own || slab.buf.length !== SLAB_BYTES || slab.used + n > SLAB_BYTES) {
      slab = { buf: Buffer.allocUnsafeSlow(own ? n : SLAB_BYTES), used: 0, last: pos };
      this.slabs.push(slab);
      this.slabBytes += slab.buf.length;
    }
    received.copy(slab.buf, slab.used);
    this.slabOf[slot] = this.slabBase + this.slabs.length - 1;
    this.offset[slot] = slab.used;
    this.length[slot] = n;
    slab.used += n;
    slab.last = pos;
    this.at[slot] = at;
    this.digests.set(digestBytes(received), slot * DIGEST_BYTES);
    this.count++;
    return pos;
  }

  get(pos: number): RingEntry | undefined {
    const slot = this.slot(pos);
    if (slot < 0) return undefined;
    const slab = this.slabs[(this.slabOf[slot] ?? 0) - this.slabBase];
    if (!slab) return undefined;
    const off = this.offset[slot] ?? 0;
    return {
      raw: slab.buf.subarray(off, off + (this.length[slot] ?? 0)),
      digest: this.digestAt(slot),
      at: this.at[slot] ?? 0,
    };
  }

  /**
   * Drops entries beyond the count, age and byte bounds, but never at or
   * after `keepFrom` (the leader's cursor: those are not broadcast yet).
   */
  trim(now: number, keepFrom: number): void {
    // Over the byte bound, drop down to 7/8 of it: the next events do not
    // each cost a trim. Each entry frees at most its own bytes (its slab
    // goes with its last entry), so the estimate below never overshoots.
    const over = this.byteSize > this.maxBytes;
    const bytesTarget = over ? this.maxBytes * 0.875 : Infinity;
    const limit = Math.min(keepFrom - this.base, this.count);
    let drop = 0;
    let freed = 0;
    while (drop < limit) {
      const slot = (this.head + drop) & (this.capacity - 1);
      if (this.count - drop > this.maxEntries || now - (this.at[slot] ?? 0) > this.maxAgeMs || this.byteSize - freed > bytesTarget) {
        freed += (this.length[slot] ?? 0) + ENTRY_OVERHEAD_BYTES;
        drop++;
      } else break;
    }
    if (drop === 0) return;
    this.head = (this.head + drop) & (this.capacity - 1);
    this.count -= drop;
    this.base += drop;
    // Release the slabs whose last entry is gone.
    while (this.slabHead < this.slabs.length) {
      const s = this.slabs[this.slabHead] as Slab;
      if (s.last >= this.base) break;
      this.slabBytes -= s.buf.length;
      // Released now, not when the array is next compacted.
      this.slabs[this.slabHead++] = null;
    }
    if (this.slabHead >= 1024 || this.slabHead * 2 >= this.slabs.length) {
      this.slabs = this.slabs.slice(this.slabHead);
      this.slabBase += this.slabHead;
      this.slabHead = 0;
    }
    if (this.capacity > MIN_CAPACITY && this.count * 4 < this.capacity) {
      let capacity = this.capacity;
      while (capacity > MIN_CAPACITY && this.count * 4 < capacity) capacity /= 2;
      this.resize(capacity);
    }
  }

  /** Digests of the `k` entries ending at position `last` (inclusive), oldest first. */
  tail(last: number, k: number): string[] {
    const out: string[] = [];
    for (let p = Math.max(this.base, last - k + 1); p <= last; p++) {
      const slot = this.slot(p);
      if (slot >= 0) out.push(this.digestAt(slot));
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
    const wanted = digests.map((d) => Buffer.from(d, 'base64'));
    const matches = (p: number, d: Buffer): boolean => {
      const slot = this.slot(p);
      if (slot < 0 || d.length !== DIGEST_BYTES) return false;
      return Buffer.compare(d, this.digests.subarray(slot * DIGEST_BYTES, (slot + 1) * DIGEST_BYTES)) === 0;
    };
    for (let last = this.end - 1; last >= this.base; last--) {
      let ok = true;
      let matched = 0;
      for (let j = 0; j < k; j++) {
        const p = last - j;
        if (p < this.base) break;
        if (!matches(p, wanted[k - 1 - j] as Buffer)) {
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

  private slot(pos: number): number {
    if (pos < this.base || pos >= this.end) return -1;
    return (this.head + (pos - this.base)) & (this.capacity - 1);
  }

  private digestAt(slot: number): string {
    return Buffer.from(this.digests.buffer, this.digests.byteOffset + slot * DIGEST_BYTES, DIGEST_BYTES).toString('base64');
  }

  /** Re-lays the index arrays out at a new capacity (a power of two), oldest entry at slot 0. */
  private resize(capacity: number): void {
    const copy = <T extends Int32Array | Float64Array>(from: T, to: T): T => {
      for (let i = 0; i < this.count; i++) to[i] = from[(this.head + i) & (this.capacity - 1)] as number;
      return to;
    };
    this.slabOf = copy(this.slabOf, new Int32Array(capacity));
    this.offset = copy(this.offset, new Int32Array(capacity));
    this.length = copy(this.length, new Int32Array(capacity));
    this.at = copy(this.at, new Float64Array(capacity));
    const digests = new Uint8Array(capacity * DIGEST_BYTES);
    for (let i = 0; i < this.count; i++) {
      const s = (this.head + i) & (this.capacity - 1);
      digests.set(this.digests.subarray(s * DIGEST_BYTES, (s + 1) * DIGEST_BYTES), i * DIGEST_BYTES);
    }
    this.digests = digests;
    this.head = 0;
    this.capacity = capacity;
  }
}
