import { hash } from 'node:crypto';

export interface RingEntry {
  /** A view of the held bytes, valid until the entry is trimmed; null for a message over the size bound (not held). */
  readonly raw: Buffer | null;
  /** Length of the message as received, held or not. */
  readonly size: number;
  readonly digest: string;
  /** performance.now() at receipt. */
  readonly at: number;
}

/** Digest bytes kept per entry: the base64 of 12 bytes is the 16-character digest. */
const DIGEST_BYTES = 12;

/**
 * Memory an entry costs beyond its raw bytes: its slot in the index arrays
 * (slab, offset, length, receipt time, digest, whether the digest is
 * computed). Counted, with the index arrays' whole capacity, in `byteSize`.
 */
export const ENTRY_OVERHEAD_BYTES = 4 + 4 + 4 + 8 + DIGEST_BYTES + 1;

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
 * first, so a slab is released as soon as its last message is, to the
 * spares the next slabs reuse (see `spares`).
 */
export const SLAB_BYTES = 64 * 1024;
/** Released slabs kept for reuse, at most (1 MiB). */
export const SPARE_SLABS = 16;
/**
 * Gives a released slab's memory back now instead of at V8's next full GC.
 * A slab lives for seconds, so its Buffer object is in the old space, and
 * dropping the reference frees its bytes only when a full GC finds it; a
 * leader trimming what it broadcast releases ~2 MB per 10,000-event burst:
 * at a junk flood's RSS peak its ArrayBuffers were 12-20 MB over the
 * baseline without this, 4-6 MB with it (BENCHMARKS.md, junk-memory, loaded
 * machine). Transferring the ArrayBuffer moves its
 * memory to a new, unreferenced young object that the next scavenge
 * collects (a few ms later); the old one is detached (length 0), so a view
 * kept past its trim reads nothing rather than another event's bytes.
 * ~3 µs per 64 KiB slab.
 */
function release(buf: Buffer | Int32Array | Float64Array | Uint8Array): void {
  // Never a SharedArrayBuffer: every one here is allocated by this class.
  const ab = buf.buffer as ArrayBuffer;
  structuredClone(ab, { transfer: [ab] });
}

/** `slabOf` of an entry whose bytes are not held (over the size bound). */
const NOT_HELD = -1;
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
 *
 * A message longer than `maxMessageBytes` (GATEWAY_MAX_MESSAGE_BYTES) is
 * never delivered: the leader drops it as oversized by its length alone. Its
 * bytes are not held, only its place, length and digest (computed at once,
 * as they cannot be later), so junk of that kind costs the index only.
 *
 * Digests are computed from the held bytes when first asked for (the
 * progress record's last few per batch, `align` at a takeover) and kept:
 * a push, which runs once per message inside the subscriber's socket read,
 * hashes and allocates nothing. An entry's digest is the same whenever it
 * is computed, since its bytes never change while it is held.
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
  /** 1 where `digests` holds the entry's digest, 0 where it is yet to be computed. */
  private hashed = new Uint8Array(MIN_CAPACITY);
  /** Slabs in use, oldest first; `slabs[0]` has sequence number `slabBase`. */
  private slabs: (Slab | null)[] = [];
  private slabBase = 0;
  private slabHead = 0;
  /** Bytes of the slabs held (the spares included). */
  private slabBytes = 0;
  /**
   * Released slabs kept for the next ones: a leader releases slabs about as
   * fast as it fills new ones (see `trim`'s `dropBefore`; a confirmed batch
   * of 512 events frees 2-3 at once), and a reused slab is neither
   * allocated nor released (`release`). Up to SPARE_SLABS are kept, and no
   * more than the slabs in use (none once the ring is empty); counted in
   * `byteSize`, given back first when over the byte bound.
   */
  private spares: Buffer[] = [];
  /** The most entries held since the last `compact`. */
  private highWater = 0;
  /** The positions and digests the last `tail` returned (see there). */
  private tailPos: number[] = [];
  private tailStr: string[] = [];

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
    /** A burst of large events must not hold hundreds of MB until they age out. */
    private readonly maxBytes = Infinity,
    /** Messages longer than this are not held (see the class comment). */
    private readonly maxMessageBytes = Infinity,
  ) {}

  /** Memory held: the slabs (whole, used or not, and the spares) plus the index arrays' capacity. */
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
    const n = received.length;
    this.length[slot] = n;
    this.at[slot] = at;
    this.count++;
    if (this.count > this.highWater) this.highWater = this.count;
    if (n > this.maxMessageBytes) {
      this.slabOf[slot] = NOT_HELD;
      this.offset[slot] = 0;
      this.digests.set(digestBytes(received), slot * DIGEST_BYTES);
      this.hashed[slot] = 1;
      return pos;
    }
    // The subscriber hands out slices of its read buffers: keeping a slice
    // would keep the whole chunk it came from. A copy holds its own bytes only.
    const own = n > SLAB_BYTES / 4;
    let slab = this.slabs.length > this.slabHead ? this.slabs[this.slabs.length - 1] : null;
    // A new slab for a large message (its own), or when the current one is full or someone else's.
    if (!slab || own || slab.buf.length !== SLAB_BYTES || slab.used + n > SLAB_BYTES) {
      const spare = own ? undefined : this.spares.pop();
      slab = { buf: spare ?? Buffer.allocUnsafeSlow(own ? n : SLAB_BYTES), used: 0, last: pos };
      this.slabs.push(slab);
      if (!spare) this.slabBytes += slab.buf.length;
    }
    received.copy(slab.buf, slab.used);
    this.slabOf[slot] = this.slabBase + this.slabs.length - 1;
    this.offset[slot] = slab.used;
    slab.used += n;
    slab.last = pos;
    this.hashed[slot] = 0;
    return pos;
  }

  get(pos: number): RingEntry | undefined {
    const slot = this.slot(pos);
    if (slot < 0) return undefined;
    return { raw: this.rawAt(slot) ?? null, size: this.length[slot] ?? 0, digest: this.digestAt(slot), at: this.at[slot] ?? 0 };
  }

  /** The held bytes of the entry at `pos` (a view, valid until it is trimmed), without its digest; undefined if not held. */
  raw(pos: number): Buffer | undefined {
    const slot = this.slot(pos);
    return slot < 0 ? undefined : this.rawAt(slot);
  }

  /** Length of the message at `pos` as received (also for one over the size bound, whose bytes are not held). */
  sizeOf(pos: number): number | undefined {
    const slot = this.slot(pos);
    return slot < 0 ? undefined : this.length[slot];
  }

  /** performance.now() at the receipt of the entry at `pos`. */
  receivedAt(pos: number): number | undefined {
    const slot = this.slot(pos);
    return slot < 0 ? undefined : this.at[slot];
  }

  /**
   * Drops entries beyond the count, age and byte bounds, and every entry
   * before `dropBefore`, but never at or after `keepFrom` (the leader's
   * cursor: those are not broadcast yet).
   */
  trim(now: number, keepFrom: number, dropBefore = -Infinity): void {
    // Over the byte bound, the spares go first, then down to 7/8 of the
    // bound: the next events do not each cost a trim. Each entry frees at
    // most its own bytes (its slab goes with its last entry), so the estimate
    // below never overshoots.
    while (this.spares.length > 0 && this.byteSize > this.maxBytes) this.dropSpare();
    const over = this.byteSize > this.maxBytes;
    const bytesTarget = over ? this.maxBytes * 0.875 : Infinity;
    const limit = Math.min(keepFrom - this.base, this.count);
    let drop = 0;
    let freed = 0;
    while (drop < limit) {
      const slot = (this.head + drop) & (this.capacity - 1);
      if (
        this.base + drop < dropBefore ||
        this.count - drop > this.maxEntries ||
        now - (this.at[slot] ?? 0) > this.maxAgeMs ||
        this.byteSize - freed > bytesTarget
      ) {
        freed += (this.slabOf[slot] === NOT_HELD ? 0 : (this.length[slot] ?? 0)) + ENTRY_OVERHEAD_BYTES;
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
      if (this.spares.length < SPARE_SLABS && s.buf.length === SLAB_BYTES && this.byteSize <= this.maxBytes) this.spares.push(s.buf);
      else {
        this.slabBytes -= s.buf.length;
        release(s.buf);
      }
      // Released now, not when the array is next compacted.
      this.slabs[this.slabHead++] = null;
    }
    // Over the byte bound the index is part of what must shrink (tiny events).
    if (over) this.shrinkFor(this.count);
    const inUse = this.slabs.length - this.slabHead;
    while (this.spares.length > Math.min(SPARE_SLABS, inUse)) this.dropSpare();
    if (this.slabHead >= 1024 || this.slabHead * 2 >= this.slabs.length) {
      this.slabs = this.slabs.slice(this.slabHead);
      this.slabBase += this.slabHead;
      this.slabHead = 0;
    }
  }

  /**
   * Shrinks the index arrays to fit the most entries held since the last
   * call (at least a quarter of them in use), on a timer rather than in
   * `trim`: a leader's count swings between its backlog and a handful many
   * times a second under a flood, and each shrink-and-grow would allocate
   * the index anew.
   */
  compact(): void {
    const need = Math.max(this.count, this.highWater);
    this.highWater = this.count;
    this.shrinkFor(need);
  }

  private dropSpare(): void {
    const spare = this.spares.pop();
    if (!spare) return;
    this.slabBytes -= spare.length;
    release(spare);
  }

  private shrinkFor(need: number): void {
    if (this.capacity > MIN_CAPACITY && need * 4 < this.capacity) {
      let capacity = this.capacity;
      while (capacity > MIN_CAPACITY && need * 4 < capacity) capacity /= 2;
      this.resize(capacity);
    }
  }

  /**
   * Digests of the `k` entries ending at position `last` (inclusive), oldest
   * first. The strings of the previous call are reused for the positions they
   * share (a leader's batches of 1-2 events at moderate rates ask for 8, 6-7
   * of them the same as the batch before): an entry's digest never changes.
   */
  tail(last: number, k: number): string[] {
    const out: string[] = [];
    const pos: number[] = [];
    const prevPos = this.tailPos;
    const prevStr = this.tailStr;
    const shift = prevPos.length > 0 ? (prevPos[0] as number) : 0;
    for (let p = Math.max(this.base, last - k + 1); p <= last; p++) {
      const slot = this.slot(p);
      if (slot < 0) continue;
      const i = p - shift;
      out.push(i >= 0 && i < prevPos.length && prevPos[i] === p ? (prevStr[i] as string) : this.digestAt(slot));
      pos.push(p);
    }
    this.tailPos = pos;
    this.tailStr = out;
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
      this.ensureDigest(slot);
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

  private rawAt(slot: number): Buffer | undefined {
    const index = this.slabOf[slot] ?? NOT_HELD;
    if (index === NOT_HELD) return undefined;
    const slab = this.slabs[index - this.slabBase];
    if (!slab) return undefined;
    const off = this.offset[slot] ?? 0;
    return slab.buf.subarray(off, off + (this.length[slot] ?? 0));
  }

  /** Computes and keeps the digest of a held entry the first time it is needed. */
  private ensureDigest(slot: number): void {
    if (this.hashed[slot] === 1) return;
    const raw = this.rawAt(slot);
    if (raw === undefined) return;
    this.digests.set(digestBytes(raw), slot * DIGEST_BYTES);
    this.hashed[slot] = 1;
  }

  private digestAt(slot: number): string {
    this.ensureDigest(slot);
    return Buffer.from(this.digests.buffer, this.digests.byteOffset + slot * DIGEST_BYTES, DIGEST_BYTES).toString('base64');
  }

  /** Re-lays the index arrays out at a new capacity (a power of two), oldest entry at slot 0. */
  private resize(capacity: number): void {
    // The entries are at most two runs of slots: [head, capacity) and [0, rest).
    const first = Math.min(this.count, this.capacity - this.head);
    const rest = this.count - first;
    const copy = <T extends Int32Array | Float64Array | Uint8Array>(from: T, to: T, width = 1): T => {
      to.set(from.subarray(this.head * width, (this.head + first) * width));
      if (rest > 0) to.set(from.subarray(0, rest * width), first * width);
      // The old array is as long-lived as a slab: its memory is given back now too.
      release(from);
      return to;
    };
    this.slabOf = copy(this.slabOf, new Int32Array(capacity));
    this.offset = copy(this.offset, new Int32Array(capacity));
    this.length = copy(this.length, new Int32Array(capacity));
    this.at = copy(this.at, new Float64Array(capacity));
    this.hashed = copy(this.hashed, new Uint8Array(capacity));
    this.digests = copy(this.digests, new Uint8Array(capacity * DIGEST_BYTES), DIGEST_BYTES);
    this.head = 0;
    this.capacity = capacity;
  }
}
