/**
 * Teardown bookkeeping. Every starter in the harness registers its resource
 * in a Scope the moment the resource exists (not once it is ready), so a
 * failed start still cleans up.
 */

/** Something that can be torn down: a function or an object with `close()`. */
export type Closer = (() => unknown) | { close(): unknown };

function runCloser(closer: Closer): Promise<unknown> {
  try {
    return Promise.resolve(typeof closer === 'function' ? closer() : closer.close());
  } catch (err) {
    return Promise.reject(err);
  }
}

export class ScopeClosedError extends Error {
  readonly code = 'HARNESS_ERR_SCOPE_CLOSED';
  constructor() {
    super('scope: add() after close(); the resource was closed immediately');
    this.name = 'ScopeClosedError';
  }
}

export class Scope {
  private readonly closers: Closer[] = [];
  private closing: Promise<void> | undefined;

  get closed(): boolean {
    return this.closing !== undefined;
  }

  /**
   * Registers a closer and returns it unchanged (so `scope.add(await start())` reads well).
   * After close() the closer runs at once and add() throws, because the test
   * that owned the scope is over and nothing may outlive it.
   */
  add<T extends Closer>(closer: T): T {
    if (this.closing !== undefined) {
      void runCloser(closer).catch(() => undefined);
      throw new ScopeClosedError();
    }
    this.closers.push(closer);
    return closer;
  }

  /**
   * Runs every closer in reverse registration order, one at a time (later
   * resources usually depend on earlier ones: clients before servers). A
   * failing closer does not stop the others; failures are reported together
   * at the end. Memoised: safe to call twice, the second call awaits the first.
   */
  close(): Promise<void> {
    this.closing ??= this.closeAll();
    return this.closing;
  }

  private async closeAll(): Promise<void> {
    const errors: unknown[] = [];
    while (this.closers.length > 0) {
      const closer = this.closers.pop();
      if (closer === undefined) break;
      try {
        await runCloser(closer);
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `scope: ${errors.length} closers failed`);
  }
}

/** The part of node:test's TestContext (or a suite's hooks) that withScope needs. */
export interface AfterHookHost {
  after(fn: () => unknown): void;
}

/** A Scope closed by the test's `after` hook: `const scope = withScope(t);`. */
export function withScope(t: AfterHookHost): Scope {
  const scope = new Scope();
  t.after(() => scope.close());
  return scope;
}
