import { GatewayError } from './errors';

/**
 * At most `limit` holders at once; the rest wait in arrival order, at most
 * `maxWaiting` of them. Used to bound concurrent calls to the Frappe backend,
 * so a reconnect storm queues here instead of opening thousands of sockets
 * that all time out together, and a flood of requests fails fast instead of
 * growing the queue (and the memory behind it) without end.
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly limit: number,
    private readonly maxWaiting = Infinity,
  ) {}

  get pending(): number {
    return this.waiting.length;
  }

  /** True when a call made now would be refused. */
  get full(): boolean {
    return this.active >= this.limit && this.waiting.length >= this.maxWaiting;
  }

  /** Rejects with GW_ERR_BACKEND_QUEUE_FULL, without running `fn`, when `maxWaiting` calls already wait. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new GatewayError('GW_ERR_BACKEND_QUEUE_FULL', `${this.waiting.length} backend calls already waiting`);
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // Hand the slot over directly, so a newcomer cannot overtake the queue.
      if (next) next();
      else this.active--;
    }
  }
}
