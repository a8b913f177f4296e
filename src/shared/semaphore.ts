/**
 * At most `limit` holders at once; the rest wait in arrival order. Used to
 * bound concurrent calls to the Frappe backend, so a reconnect storm queues
 * here instead of opening thousands of sockets that all time out together.
 */
export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  get pending(): number {
    return this.waiting.length;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active++;
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
