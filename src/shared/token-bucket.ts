/**
 * Token bucket: `ratePerSec` tokens a second, at most `burst` saved up.
 * Refilled lazily from the clock, so an idle bucket costs nothing.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.ratePerSec) / 1000);
      this.at = now;
    }
  }

  take(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Tokens saved up at `now` (fractional while refilling). */
  available(now: number): number {
    this.refill(now);
    return this.tokens;
  }
}
