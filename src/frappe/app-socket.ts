/**
 * The view of a socket an app handler gets (docs/protocol.md section 7): the
 * whole Socket.IO API, except that every listener registered through it is
 * guarded, so that an app's bug costs a log line rather than the process and
 * every connection on it.
 */

type Fn = (...args: unknown[]) => unknown;

/** Methods whose listener is the last argument (`on(event, fn)`, `onAny(fn)`). */
const REGISTER = new Set([
  'on',
  'once',
  'addListener',
  'prependListener',
  'prependOnceListener',
  'onAny',
  'prependAny',
  'onAnyOutgoing',
  'prependAnyOutgoing',
]);
/** Methods that take a listener to remove: they must find the wrapper registered for it. */
const UNREGISTER = new Set(['off', 'removeListener', 'offAny', 'offAnyOutgoing']);

/**
 * A Proxy over `socket` whose registration methods wrap listeners. Listeners
 * registered later (inside other listeners, after an await) go through the
 * same view, since the handler only ever holds the proxy; listeners run with
 * `this` = the proxy for the same reason. Other methods run on the real
 * socket (`this` = socket), and a method returning the socket itself
 * (chaining: `on().on()`, `compress()`, `volatile`) returns the proxy.
 */
export function guardedSocket<T extends object>(socket: T, onError: (err: unknown) => void): T {
  // One wrapper per original listener, so off(event, original) finds it.
  const wrappers = new WeakMap<Fn, Fn>();
  const methods = new Map<PropertyKey, Fn>();

  const wrap = (fn: Fn): Fn => {
    let w = wrappers.get(fn);
    if (!w) {
      w = function guarded(...args: unknown[]): void {
        try {
          const r = fn.apply(proxy, args);
          if (r && typeof (r as Promise<unknown>).then === 'function') (r as Promise<unknown>).then(undefined, onError);
        } catch (err) {
          onError(err);
        }
      };
      wrappers.set(fn, w);
    }
    return w;
  };

  const method = (prop: PropertyKey, fn: Fn): Fn => {
    let m = methods.get(prop);
    if (m && (m as { original?: Fn }).original === fn) return m;
    const register = typeof prop === 'string' && REGISTER.has(prop);
    const unregister = typeof prop === 'string' && UNREGISTER.has(prop);
    m = (...args: unknown[]): unknown => {
      const last = args.length - 1;
      const listener = args[last];
      if (typeof listener === 'function') {
        if (register) args[last] = wrap(listener as Fn);
        else if (unregister) args[last] = wrappers.get(listener as Fn) ?? listener;
      }
      const r = fn.apply(socket, args);
      return r === socket ? proxy : r;
    };
    (m as { original?: Fn }).original = fn;
    methods.set(prop, m);
    return m;
  };

  const proxy: T = new Proxy(socket, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (value === target) return proxy;
      return typeof value === 'function' ? method(prop, value as Fn) : value;
    },
    set(target, prop, value) {
      return Reflect.set(target, prop, value, target);
    },
  });
  return proxy;
}
