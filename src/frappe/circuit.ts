/** 0 = closed (calls go out), 1 = half-open (one probe in flight), 2 = open (calls fail fast). */
export const CIRCUIT_STATE = { closed: 0, half_open: 1, open: 2 } as const;
export type CircuitState = keyof typeof CIRCUIT_STATE;

/**
 * Consecutive-failure circuit breaker for one backend. A backend that is down
 * or hanging would otherwise hold every handshake for the full timeout and
 * fill the queues; once `threshold` calls in a row failed, calls fail at once
 * for `openMs`, then a single probe decides whether the backend is back.
 */
export class CircuitBreaker {
  private state: CircuitState = 'closed';
  private failures = 0;
  private openedAt = 0;

  constructor(
    private readonly threshold: number,
    private readonly openMs: number,
    private readonly onChange: (state: CircuitState) => void = () => undefined,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get current(): CircuitState {
    return this.state;
  }

  /** True while calls fail fast and no probe is due yet (handshakes can be refused before any work). */
  get rejecting(): boolean {
    return this.state === 'half_open' || (this.state === 'open' && this.now() - this.openedAt < this.openMs);
  }

  /** Whether a call may go out now; in half-open state only the one probe may. */
  tryAcquire(): boolean {
    if (this.threshold <= 0 || this.state === 'closed') return true;
    if (this.state === 'open' && this.now() - this.openedAt >= this.openMs) {
      this.set('half_open');
      return true;
    }
    return false;
  }

  success(): void {
    this.failures = 0;
    if (this.state !== 'closed') this.set('closed');
  }

  failure(): void {
    if (this.threshold <= 0) return;
    this.failures++;
    if (this.state === 'half_open' || (this.state === 'closed' && this.failures >= this.threshold)) {
      this.openedAt = this.now();
      this.set('open');
    }
  }

  private set(state: CircuitState): void {
    this.state = state;
    this.onChange(state);
  }
}
