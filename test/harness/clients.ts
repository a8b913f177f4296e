/**
 * Browser-like Socket.IO clients (the real socket.io-client) and helpers to
 * await what they receive, including negative assertions without sleeps.
 */
import { EventEmitter } from 'node:events';
import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client';
import type { FrappePublish } from './fixtures';
import { frappeJson } from './frappe-json';
import type { Scope } from './scope';
import { withTimeout } from './wait';

export { frappeJson, pyFloat, PyFloat } from './frappe-json';
export { loadFrappeFixtures, type FrappeFixture, type FrappePublish } from './fixtures';
export type { Socket } from 'socket.io-client';

const DEFAULT_TIMEOUT_MS = 5000;

/** The socket's namespace, for messages (the property is private in the client's typings). */
function nspOf(socket: Socket): string {
  return (socket as unknown as { nsp: string }).nsp;
}

export type Transport = 'polling' | 'websocket' | 'webtransport';

export interface ConnectClientOptions {
  /** Extra handshake headers (applied last, so they can override the ones below). */
  headers?: Record<string, string>;
  /** The Frappe session id: sent as `Cookie: sid=<value>`. */
  cookie?: string;
  /** Sent verbatim as the `Authorization` header (e.g. `token key:secret`). */
  authorization?: string;
  /** Origin header; default `baseUrl`'s origin; `null` sends none. */
  origin?: string | null;
  /** Default: socket.io-client's (polling, then upgrade), like the browser client. */
  transports?: Transport[];
  /** Registers `socket.disconnect()`. */
  scope?: Scope;
  /** Default false, so a failed connect settles at once instead of retrying forever. */
  reconnection?: boolean;
  /** Default true. */
  autoConnect?: boolean;
  /** Anything else for io(); applied last. */
  ioOptions?: Partial<ManagerOptions & SocketOptions>;
}

/**
 * A socket for namespace `/<site>` with the browser's handshake headers.
 * `forceNew`, so every call is its own Engine.IO connection.
 */
export function connectClient(baseUrl: string, site: string, options: ConnectClientOptions = {}): Socket {
  const headers: Record<string, string> = {};
  const origin = options.origin === undefined ? new URL(baseUrl).origin : options.origin;
  if (origin !== null) headers['Origin'] = origin;
  if (options.cookie !== undefined) headers['Cookie'] = `sid=${options.cookie}`;
  if (options.authorization !== undefined) headers['Authorization'] = options.authorization;
  Object.assign(headers, options.headers);
  const socketOptions: Partial<ManagerOptions & SocketOptions> = {
    forceNew: true,
    reconnection: options.reconnection ?? false,
    autoConnect: options.autoConnect ?? true,
    extraHeaders: headers,
    ...(options.transports === undefined ? {} : { transports: options.transports }),
    ...options.ioOptions,
  };
  const socket = io(`${baseUrl.replace(/\/+$/, '')}/${site}`, socketOptions);
  options.scope?.add(() => {
    socket.disconnect();
  });
  return socket;
}

interface ConnectErrorLike {
  message: string;
  data?: unknown;
}

/** An Error carrying the server's CONNECT_ERROR message (and `data`, if any). */
export class ConnectError extends Error {
  readonly code = 'HARNESS_ERR_CONNECT';
  readonly data: unknown;
  constructor(err: ConnectErrorLike) {
    super(err.message);
    this.name = 'ConnectError';
    this.data = err.data;
  }
}

/** Resolves on 'connect' (at once if connected); rejects with the connect_error message. */
export function waitConnect(socket: Socket, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
  if (socket.connected) return Promise.resolve();
  let cleanup = (): void => undefined;
  const settled = new Promise<void>((resolve, reject) => {
    const onConnect = (): void => resolve();
    const onError = (err: ConnectErrorLike): void => reject(new ConnectError(err));
    socket.once('connect', onConnect);
    socket.once('connect_error', onError);
    cleanup = () => {
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    };
  });
  return withTimeout(settled, timeoutMs, `socket ${nspOf(socket)} to connect`).finally(() => cleanup());
}

/** Resolves with the connect_error message; rejects if the socket connects instead. */
export function expectConnectError(socket: Socket, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string> {
  let cleanup = (): void => undefined;
  const settled = new Promise<string>((resolve, reject) => {
    const onConnect = (): void => reject(new Error(`socket ${nspOf(socket)} connected, but a connect_error was expected`));
    const onError = (err: ConnectErrorLike): void => resolve(err.message);
    if (socket.connected) onConnect();
    socket.once('connect', onConnect);
    socket.once('connect_error', onError);
    cleanup = () => {
      socket.off('connect', onConnect);
      socket.off('connect_error', onError);
    };
  });
  return withTimeout(settled, timeoutMs, `socket ${nspOf(socket)} to fail connecting`).finally(() => cleanup());
}

export interface WaitForEventOptions {
  timeoutMs?: number;
  /** Receives every argument of the event; the first match wins. */
  filter?: (...args: unknown[]) => boolean;
}

/**
 * Resolves with the first argument of the next matching `event`. Only events
 * arriving after the call count: to avoid that race, attach an EventRecorder
 * before triggering.
 */
export function waitForEvent<T = unknown>(socket: Socket, event: string, options: WaitForEventOptions = {}): Promise<T> {
  let cleanup = (): void => undefined;
  const settled = new Promise<T>((resolve) => {
    const listener = (...args: unknown[]): void => {
      if (options.filter === undefined || options.filter(...args)) resolve(args[0] as T);
    };
    socket.on(event, listener);
    cleanup = () => socket.off(event, listener);
  });
  return withTimeout(settled, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, `event ${JSON.stringify(event)} on ${nspOf(socket)}`).finally(() =>
    cleanup(),
  );
}

export interface RecordedEvent {
  /** Arrival order across every recorder in this process. */
  seq: number;
  event: string;
  args: unknown[];
  /** Date.now() at arrival. */
  at: number;
}

let sequence = 0;

export type PayloadPredicate = (payload: unknown, record: RecordedEvent) => boolean;

/** Records every event a socket receives (`socket.onAny`). Create it before the socket can receive anything. */
export class EventRecorder {
  readonly events: RecordedEvent[] = [];
  private readonly arrivals = new EventEmitter();
  private readonly listener = (event: string, ...args: unknown[]): void => {
    const record: RecordedEvent = { seq: ++sequence, event, args, at: Date.now() };
    this.events.push(record);
    this.arrivals.emit('event', record);
  };

  constructor(readonly socket: Socket) {
    this.arrivals.setMaxListeners(0);
    socket.onAny(this.listener);
  }

  /** Records of `event` (all events when omitted) matching `predicate` (applied to the first argument). */
  records(event?: string, predicate?: PayloadPredicate): RecordedEvent[] {
    return this.events.filter((r) => (event === undefined || r.event === event) && (predicate === undefined || predicate(r.args[0], r)));
  }

  /** First arguments of every `event` received so far. */
  payloads(event: string): unknown[] {
    return this.records(event).map((r) => r.args[0]);
  }

  count(event: string, predicate?: PayloadPredicate): number {
    return this.records(event, predicate).length;
  }

  /** Resolves with the first matching record, including ones already received. */
  waitForRecord(event: string, predicate?: PayloadPredicate, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RecordedEvent> {
    const matchesRecord = (r: RecordedEvent): boolean => r.event === event && (predicate === undefined || predicate(r.args[0], r));
    const existing = this.events.find(matchesRecord);
    if (existing !== undefined) return Promise.resolve(existing);
    let cleanup = (): void => undefined;
    const arrival = new Promise<RecordedEvent>((resolve) => {
      const onEvent = (r: RecordedEvent): void => {
        if (matchesRecord(r)) resolve(r);
      };
      this.arrivals.on('event', onEvent);
      cleanup = () => this.arrivals.off('event', onEvent);
    });
    return withTimeout(
      arrival,
      timeoutMs,
      () => `event ${JSON.stringify(event)} on ${nspOf(this.socket)}; received so far: ${this.summary()}`,
    ).finally(() => cleanup());
  }

  /** Resolves with the first argument of the first matching event, including ones already received. */
  async waitFor<T = unknown>(event: string, predicate?: PayloadPredicate, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<T> {
    return (await this.waitForRecord(event, predicate, timeoutMs)).args[0] as T;
  }

  /** Resolves once `n` matching events have been received. */
  async waitForCount(event: string, n: number, predicate?: PayloadPredicate, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<RecordedEvent[]> {
    if (this.count(event, predicate) >= n) return this.records(event, predicate);
    let cleanup = (): void => undefined;
    const enough = new Promise<RecordedEvent[]>((resolve) => {
      const onEvent = (): void => {
        if (this.count(event, predicate) >= n) resolve(this.records(event, predicate));
      };
      this.arrivals.on('event', onEvent);
      cleanup = () => this.arrivals.off('event', onEvent);
    });
    return withTimeout(
      enough,
      timeoutMs,
      () => `${n} x ${JSON.stringify(event)} on ${nspOf(this.socket)}, got ${this.count(event, predicate)}`,
    ).finally(() => cleanup());
  }

  clear(): void {
    this.events.splice(0, this.events.length);
  }

  /** Stops recording. */
  dispose(): void {
    this.socket.offAny(this.listener);
  }

  private summary(): string {
    const names = this.events.slice(-20).map((r) => r.event);
    return names.length === 0 ? '(nothing)' : names.join(', ');
  }
}

// ---------------------------------------------------------------------------
// Negative assertions

/** Event name of barrier markers. */
export const BARRIER_EVENT = 'harness_barrier';

export interface BarrierMarker {
  event: string;
  message: { barrier: string };
}

let barrierCounter = 0;

export interface BarrierOptions {
  /**
   * Publishes the marker event to a room every recorded socket IS in,
   * through the same path (same publish API or the same Redis channel, same
   * publisher connection) as the event that must not arrive.
   */
  sendMarker: (marker: BarrierMarker) => unknown;
  /**
   * Optional proof that the forbidden event was really broadcast: a socket
   * that IS in its room must receive it before the marker is sent. Use it when
   * "nothing arrived" could also mean "nothing was sent".
   */
  witness?: { recorder: EventRecorder; event: string; predicate?: PayloadPredicate };
  timeoutMs?: number;
}

/** A Frappe publish carrying a barrier marker, for `sendMarker` implementations. */
export function barrierPublish(namespace: string, room: string | null, marker: BarrierMarker): FrappePublish {
  return { event: marker.event, message: marker.message, namespace, room };
}

/**
 * Waits until every recorder has received a fresh marker.
 *
 * How to assert that an event does NOT arrive, without sleeping:
 *  1. publish the event that must NOT arrive;
 *  2. call barrier() (or assertNotReceived()), which publishes a marker to a
 *     room the socket IS in and waits for it;
 *  3. once the marker has arrived, the earlier event would already have
 *     arrived too, because the gateway preserves publish order (one Redis
 *     pub/sub connection, or the in-memory path), so its absence can be asserted.
 * The ordering argument holds when both messages take the same route to the
 * socket's process. If a deployment splits rooms over different channels or
 * shards, pair it with `witness` and prefer a marker room on the same route.
 */
export async function barrier(recorders: EventRecorder | EventRecorder[], options: BarrierOptions): Promise<void> {
  const list = Array.isArray(recorders) ? recorders : [recorders];
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (options.witness !== undefined) {
    await options.witness.recorder.waitForRecord(options.witness.event, options.witness.predicate, timeoutMs);
  }
  const id = `barrier-${process.pid}-${++barrierCounter}`;
  const isMarker: PayloadPredicate = (payload) =>
    payload !== null && typeof payload === 'object' && (payload as { barrier?: unknown }).barrier === id;
  const arrivals = list.map((recorder) => recorder.waitForRecord(BARRIER_EVENT, isMarker, timeoutMs));
  // Observe rejections now, so a failing sendMarker does not leave them unhandled.
  const all = Promise.all(arrivals);
  all.catch(() => undefined);
  await options.sendMarker({ event: BARRIER_EVENT, message: { barrier: id } });
  await all;
}

/**
 * barrier(), then fails if any recorder holds a matching `event`. Publish the
 * forbidden event BEFORE calling this.
 */
export async function assertNotReceived(
  recorders: EventRecorder | EventRecorder[],
  event: string,
  predicate: PayloadPredicate | undefined,
  options: BarrierOptions,
): Promise<void> {
  await barrier(recorders, options);
  const list = Array.isArray(recorders) ? recorders : [recorders];
  for (const recorder of list) {
    const found = recorder.records(event, predicate);
    if (found.length > 0) {
      throw new Error(`${nspOf(recorder.socket)} received ${JSON.stringify(event)} but must not have: ${JSON.stringify(found[0]?.args)}`);
    }
  }
}

// ---------------------------------------------------------------------------
// Publishing like Frappe

/** Anything with ioredis' publish (Redis or Cluster). */
export interface RedisPublisher {
  publish(channel: string, message: string): Promise<number>;
}

/** PUBLISH `msg` (a string as-is, anything else serialised exactly as Frappe does) and returns the receiver count. */
export function publishRedis(client: RedisPublisher, channel: string, msg: unknown): Promise<number> {
  return client.publish(channel, typeof msg === 'string' ? msg : frappeJson(msg));
}
