/**
 * The rate-step search of the capacity scenario (pure, unit-tested): a coarse
 * phase multiplies the offered rate by `factor` while steps pass, then a fine
 * phase bisects between the highest passing and the lowest failing rate until
 * they are within `resolution` of each other (or one `granularity` apart).
 *
 * A step is `pass`, `fail` (the target missed: loss, p99, disconnects) or
 * `limited` (the measurement itself could not be made: a load generator or
 * the publisher saturated or fell behind). A limited step bounds the search
 * like a failure, but the result then says that the generator, not the
 * target, was the limit there.
 */

export type StepOutcome = 'pass' | 'fail' | 'limited';

export interface StepSearchOptions {
  /** First rate offered. */
  start: number;
  /** Coarse phase: next rate = rate * factor while steps pass (and rate / factor while the first ones fail). */
  factor: number;
  /** Fine phase stops when (lowest non-pass - highest pass) <= resolution * highest pass. */
  resolution: number;
  /** Rates are rounded to multiples of this; the fine phase also stops when the two bounds are one granularity apart. */
  granularity: number;
  /** Never offer more than this; a pass at max ends the search (the result is then a lower bound). */
  max: number;
  /** Never offer less than this; a non-pass at min ends the search with no passing rate. */
  min: number;
}

export interface StepSearchResult {
  /** Highest rate that passed; null when none did. */
  highestPass: number | null;
  /** Lowest rate above highestPass that did not pass (null: none, e.g. max reached). */
  lowestNonPass: number | null;
  /** What the lowest non-passing step was: the target failing, or the generator limiting. */
  boundedBy: 'fail' | 'limited' | 'max' | null;
  steps: { rate: number; outcome: StepOutcome }[];
}

export class StepSearch {
  private readonly steps: { rate: number; outcome: StepOutcome }[] = [];
  private lo: number | null = null;
  private hi: { rate: number; outcome: 'fail' | 'limited' } | null = null;
  private pending: number | undefined;
  private done = false;

  constructor(private readonly o: StepSearchOptions) {
    if (!(o.factor > 1)) throw new Error('step search: factor must be > 1');
    if (!(o.granularity > 0)) throw new Error('step search: granularity must be > 0');
    if (!(o.min > 0 && o.min <= o.start && o.start <= o.max)) throw new Error('step search: need 0 < min <= start <= max');
    this.pending = this.round(o.start);
  }

  private round(rate: number): number {
    const g = this.o.granularity;
    return Math.min(this.o.max, Math.max(this.o.min, Math.round(rate / g) * g));
  }

  /** The next rate to offer, or undefined when the search is over. */
  next(): number | undefined {
    return this.done ? undefined : this.pending;
  }

  /** Records the outcome of the step at `rate` (must be the rate next() returned). */
  record(rate: number, outcome: StepOutcome): void {
    if (this.done || rate !== this.pending) throw new Error(`step search: unexpected step ${rate} (expected ${String(this.pending)})`);
    this.steps.push({ rate, outcome });
    if (outcome === 'pass') {
      if (this.lo === null || rate > this.lo) this.lo = rate;
    } else if (this.hi === null || rate < this.hi.rate) this.hi = { rate, outcome };
    this.pending = this.choose();
    if (this.pending === undefined) this.done = true;
  }

  private choose(): number | undefined {
    const { lo, hi } = this;
    const tried = new Set(this.steps.map((s) => s.rate));
    if (hi === null) {
      // Only passes so far: climb.
      if (lo === null || lo >= this.o.max) return undefined;
      const r = this.round(lo * this.o.factor);
      return r <= lo ? undefined : r;
    }
    if (lo === null) {
      // Only non-passes so far: descend.
      if (hi.rate <= this.o.min) return undefined;
      const r = this.round(hi.rate / this.o.factor);
      return tried.has(r) ? undefined : r;
    }
    if (hi.rate - lo <= this.o.resolution * lo || hi.rate - lo <= this.o.granularity) return undefined;
    const mid = this.round((lo + hi.rate) / 2);
    if (mid <= lo || mid >= hi.rate || tried.has(mid)) return undefined;
    return mid;
  }

  result(): StepSearchResult {
    const atMax = this.hi === null && this.lo !== null && this.lo >= this.o.max;
    return {
      highestPass: this.lo,
      lowestNonPass: this.hi?.rate ?? null,
      boundedBy: this.hi?.outcome ?? (atMax ? 'max' : null),
      steps: [...this.steps],
    };
  }
}

/** Runs a search to the end with an async step function (the scenario's measured step). */
export async function runStepSearch(o: StepSearchOptions, step: (rate: number) => Promise<StepOutcome>): Promise<StepSearchResult> {
  const s = new StepSearch(o);
  for (let rate = s.next(); rate !== undefined; rate = s.next()) s.record(rate, await step(rate));
  return s.result();
}
