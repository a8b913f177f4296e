/** Timeouts and readiness polling. Polling is only for external processes with no event to await. */

export class HarnessTimeoutError extends Error {
  readonly code = 'HARNESS_ERR_TIMEOUT';
  constructor(message: string) {
    super(message);
    this.name = 'HarnessTimeoutError';
  }
}

type Described = string | (() => string);

function describe(what: Described): string {
  return typeof what === 'function' ? what() : what;
}

/** Rejects with HarnessTimeoutError after `ms`; the timer never outlives the promise. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: Described): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new HarnessTimeoutError(`timed out after ${ms} ms: ${describe(what)}`));
    }, ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Resolves true if `promise` settles within `ms`, false otherwise; never rejects. */
export function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    const done = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    promise.then(done, done);
  });
}

export interface PollOptions {
  timeoutMs: number;
  intervalMs: number;
  /** Appears in the timeout error. */
  description: Described;
  /** Checked before every attempt; a returned error aborts the wait at once (e.g. the process died). */
  failIf?: () => Error | undefined;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `probe` until it returns something other than undefined. A throwing
 * probe counts as "not yet"; its last error is quoted on timeout.
 */
export async function pollUntil<T>(probe: () => Promise<T | undefined> | T | undefined, options: PollOptions): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  let lastError: unknown;
  for (;;) {
    const failure = options.failIf?.();
    if (failure !== undefined) throw failure;
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new HarnessTimeoutError(`timed out after ${options.timeoutMs} ms: ${describe(options.description)}${reason}`);
    }
    await pause(Math.min(options.intervalMs, Math.max(0, deadline - Date.now())));
  }
}
