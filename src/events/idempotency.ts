import { performance } from 'node:perf_hooks';

/**
 * Standalone mode's idempotency keys (cluster mode keeps them in Redis,
 * recorded by the leader's broadcast script): a key claimed within the
 * window is a duplicate. Every key lives exactly `windowMs`, so insertion
 * order is expiry order: expired keys are taken off the front of the Map, and
 * past `maxKeys` the oldest is forgotten early (counted through `onEvict`).
 */
export class MemoryIdempotency {
  private readonly seen = new Map<string, number>();

  constructor(
    private readonly windowMs: number,
    private readonly maxKeys: number,
    private readonly onEvict: () => void,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** True when the key is new for this scope (it is recorded now); false for a duplicate within the window. */
  claim(scope: string, key: string): boolean {
    const now = this.now();
    for (const [k, expires] of this.seen) {
      if (expires > now) break;
      this.seen.delete(k);
    }
    const id = `${scope}/${key}`;
    if (this.seen.has(id)) return false;
    if (this.seen.size >= this.maxKeys) {
      const oldest = this.seen.keys().next();
      if (!oldest.done) this.seen.delete(oldest.value);
      this.onEvict();
    }
    this.seen.set(id, now + this.windowMs);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}
