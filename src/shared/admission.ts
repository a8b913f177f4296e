import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Namespace, Server as IoServer, Socket } from 'socket.io';
import { TokenBucket } from './token-bucket';

/**
 * Admission control of new connections (docs/protocol.md section 6):
 *  - GATEWAY_ADMISSION_CONCURRENCY: handshakes in flight per process (a
 *    worker; standalone: the process). A handshake is in flight from its
 *    Engine.IO request until its Socket.IO connection to a site is
 *    established, fails, or its transport closes. The bound follows what the
 *    process actually completes (backend, Redis, CPU: whichever is slow)
 *    instead of a rate fixed in advance, and it keeps the queue inside the
 *    process short: an admitted client is answered within a fraction of a
 *    second instead of waiting behind a herd past its connect timeout.
 *  - GATEWAY_ADMISSION_RATE / _BURST: a token bucket of handshakes per host.
 * A handshake beyond either is answered HTTP 503 before any worker sees it
 * (the primary routes only to a worker with a free slot), which
 * socket.io-client treats as a failed attempt and retries with its backoff
 * (unlike a namespace CONNECT_ERROR, after which it stops).
 */

/** The Socket.IO path of the public port (socket-server.ts serves it). */
export const SOCKET_IO_PATH = '/socket.io/';

/** What a refused client reads: the body of the HTTP 503 (same shape as Engine.IO's own refusals). */
export const ADMISSION_REFUSAL = {
  code: 'GW_ERR_ADMISSION',
  message: 'Service unavailable: too many new connections to this host (GATEWAY_ADMISSION_CONCURRENCY / _RATE), retry',
} as const;

/** Seconds a refused client is told to wait (socket.io-client ignores it and uses its own backoff). */
const RETRY_AFTER_S = 1;

const BODY = JSON.stringify(ADMISSION_REFUSAL);

/** The full HTTP response for a refused handshake, for a raw TCP or upgrade socket. */
export const ADMISSION_REFUSAL_RESPONSE =
  'HTTP/1.1 503 Service Unavailable\r\n' +
  'Connection: close\r\n' +
  'Content-Type: application/json\r\n' +
  `Retry-After: ${RETRY_AFTER_S}\r\n` +
  `Content-Length: ${Buffer.byteLength(BODY)}\r\n` +
  '\r\n' +
  BODY;

/** How long a refused client may take to close its side before its connection is dropped. */
const REFUSED_LINGER_MS = 5000;

/**
 * Answers a raw connection with the 503 and lets it go: what the client
 * still sends is read and discarded, so its close is seen (and nothing is
 * reset under the response); a client that never closes is dropped.
 */
export function refuseRaw(socket: Duplex): void {
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  socket.end(ADMISSION_REFUSAL_RESPONSE);
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/**
 * True for an Engine.IO handshake: a GET on the Socket.IO path without a
 * `sid` (requests of an existing session, upgrades included, carry it).
 */
export function isHandshake(method: string | undefined, target: string | undefined): boolean {
  if (method !== 'GET' || !target?.startsWith(SOCKET_IO_PATH)) return false;
  const q = target.indexOf('?');
  return q === -1 || !new URLSearchParams(target.slice(q + 1)).has('sid');
}

/** The method and target of an HTTP request line (`GET /path?x HTTP/1.1`). */
export function requestLineParts(head: string): { method: string; target: string } | undefined {
  const eol = head.indexOf('\r\n');
  const [method, target] = (eol === -1 ? head : head.slice(0, eol)).split(' ', 2);
  return method && target ? { method, target } : undefined;
}

export class Admission {
  private readonly bucket: TokenBucket | null;

  /** `ratePerSec` 0 = off: every handshake is admitted. */
  constructor(
    ratePerSec: number,
    burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.bucket = ratePerSec > 0 ? new TokenBucket(ratePerSec, burst, now()) : null;
  }

  get enabled(): boolean {
    return this.bucket !== null;
  }

  /** Takes a token for one handshake; false = refuse it. */
  admit(): boolean {
    return this.bucket?.take(this.now()) ?? true;
  }

  /** Handshakes that would be admitted at once now (gateway_admission_tokens). */
  tokens(): number {
    return this.bucket?.available(this.now()) ?? 0;
  }
}

/**
 * Handshakes in flight per process, GATEWAY_ADMISSION_CONCURRENCY (0 = no
 * bound). Keyed by process (the primary keeps one count per worker; a
 * standalone process uses one key). A slot is given back when the process
 * reports the handshake over (`HandshakeTracker`), or after `holdMs` at the
 * latest, so a report that never comes (a stalled worker) cannot keep it.
 */
export class HandshakeSlots {
  /** Per key, when each slot in use was taken, oldest first. */
  private readonly taken = new Map<number, number[]>();

  constructor(
    readonly limit: number,
    readonly holdMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.limit > 0;
  }

  /** True when `key` has a free slot (always, when off). */
  hasRoom(key: number): boolean {
    return !this.enabled || this.current(key).length < this.limit;
  }

  /** Takes a slot of `key`; false when none is free. */
  take(key: number): boolean {
    if (!this.enabled) return true;
    const q = this.current(key);
    if (q.length >= this.limit) return false;
    q.push(this.now());
    return true;
  }

  /** One handshake of `key` is over (a report for a slot that already expired frees nothing). */
  release(key: number): void {
    this.current(key).shift();
  }

  /** The process is gone: its slots with it. */
  forget(key: number): void {
    this.taken.delete(key);
  }

  /** Slots in use, every key (gateway_admission_in_flight). */
  inFlight(): number {
    let n = 0;
    for (const key of this.taken.keys()) n += this.current(key).length;
    return n;
  }

  private current(key: number): number[] {
    let q = this.taken.get(key);
    if (!q) {
      q = [];
      this.taken.set(key, q);
    }
    const oldest = this.now() - this.holdMs;
    let expired = 0;
    while (expired < q.length && (q[expired] as number) <= oldest) expired++;
    if (expired > 0) q.splice(0, expired);
    return q;
  }
}

/** What became of a handshake that waited for a slot (gateway_admission_queue_waits_total{result}). */
export type QueueResult = 'admitted' | 'expired' | 'full' | 'closed';

/**
 * Handshakes waiting for a free slot (GATEWAY_ADMISSION_QUEUE, _QUEUE_MS):
 * instead of a 503 at once when every slot is taken, a new connection is
 * held, not yet given to anyone, until a slot frees (the oldest first) or
 * `maxWaitMs` passes (then `onExpired` answers it the 503). Holding a
 * connection costs its socket and the bytes read so far; the bound `limit`
 * keeps that small, and an arrival beyond it is refused at once (`add` is
 * false). A connection that closes while waiting is `remove`d and frees
 * nothing. Keyed by the item itself: a Map keeps the arrival order, so the
 * oldest is its first entry and a removal is O(1). One timer, for the
 * oldest deadline (every item waits the same `maxWaitMs`).
 */
export class AdmissionQueue<T> {
  /** Per waiting item, when it expires; in arrival order. */
  private readonly waiting = new Map<T, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly limit: number,
    readonly maxWaitMs: number,
    private readonly onExpired: (item: T) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** Off when either bound is 0: a handshake without a slot is refused at once. */
  get enabled(): boolean {
    return this.limit > 0 && this.maxWaitMs > 0;
  }

  /** Handshakes waiting (gateway_admission_queue). */
  get length(): number {
    return this.waiting.size;
  }

  /** Puts `item` at the end of the queue; false when the queue is full (or off): refuse it. */
  add(item: T): boolean {
    if (!this.enabled || this.waiting.size >= this.limit || this.waiting.has(item)) return false;
    this.waiting.set(item, this.now() + this.maxWaitMs);
    if (this.waiting.size === 1) this.arm();
    return true;
  }

  /** `item` left while waiting (its connection closed): forgotten, nothing else happens. */
  remove(item: T): boolean {
    const had = this.waiting.delete(item);
    if (had && this.waiting.size === 0) this.disarm();
    return had;
  }

  /** The oldest waiting item, taken out of the queue (a slot freed for it), or undefined. */
  shift(): T | undefined {
    this.expire();
    const first = this.waiting.keys().next();
    if (first.done) return undefined;
    this.remove(first.value);
    return first.value;
  }

  /** Everything still waiting, taken out (the process stops: the caller answers them). */
  clear(): T[] {
    const all = [...this.waiting.keys()];
    this.waiting.clear();
    this.disarm();
    return all;
  }

  /** Hands every item whose wait is over to `onExpired`, oldest first. */
  private expire(): void {
    const now = this.now();
    for (const [item, deadline] of this.waiting) {
      if (deadline > now) break;
      this.waiting.delete(item);
      this.onExpired(item);
    }
  }

  private arm(): void {
    this.disarm();
    const first = this.waiting.values().next();
    if (first.done) return;
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.expire();
        this.arm();
      },
      Math.max(0, first.value - this.now()),
    );
    this.timer.unref();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** Something whose end is its `close` event: an HTTP response, or an upgraded connection's socket. */
interface Closable {
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Tells when each handshake a process took is over: its Engine.IO session
 * connected to a site namespace (the CONNECT was acknowledged), or the
 * request ended without a session (refused by Engine.IO), or the session
 * closed first (a refused or timed-out handshake: the gateway closes the
 * transport, and socket.io-client closes it after a CONNECT_ERROR), or
 * `holdMs` passed. `afterConnect` may name work of the connected socket that
 * still belongs to its handshake (a recovered client's replay): the
 * handshake is over once it has settled. `onDone` runs once per tracked
 * handshake.
 */
export class HandshakeTracker {
  private readonly byRequest = new WeakMap<IncomingMessage, () => void>();
  private readonly byConnection = new WeakMap<object, () => void>();

  constructor(
    io: IoServer,
    private readonly holdMs: number,
    private readonly onDone: () => void,
    afterConnect?: (socket: Socket) => Promise<unknown> | undefined,
  ) {
    io.engine.on('connection', (conn: { request: IncomingMessage; once(ev: 'close', fn: () => void): void }) => {
      const done = this.byRequest.get(conn.request);
      if (!done) return;
      this.byRequest.delete(conn.request);
      this.byConnection.set(conn, done);
      conn.once('close', done);
    });
    const connected = (socket: Socket): void => {
      const done = this.byConnection.get(socket.conn);
      if (!done) return;
      this.byConnection.delete(socket.conn);
      const after = afterConnect?.(socket);
      if (after) after.then(done, done);
      else done();
    };
    io.on('new_namespace', (nsp: Namespace) => nsp.on('connection', connected));
  }

  /** A handshake request this process took a slot for; `end` closes when its response (or upgraded socket) is done. */
  track(req: IncomingMessage, end: Closable): void {
    let over = false;
    const done = (): void => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      this.byRequest.delete(req);
      this.onDone();
    };
    const timer = setTimeout(done, this.holdMs);
    timer.unref();
    this.byRequest.set(req, done);
    // Engine.IO emits its connection before the handshake's response has
    // closed; one turn later, a request still unclaimed got no session.
    end.once('close', () => setImmediate(() => this.byRequest.get(req) === done && done()));
  }

  /** Tracks every handshake arriving at `server` (a worker: the primary took their slots). */
  watch(server: HttpServer): void {
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      if (isHandshake(req.method, req.url)) this.track(req, res);
    });
    server.prependListener('upgrade', (req: IncomingMessage, socket: Duplex) => {
      if (isHandshake(req.method, req.url)) this.track(req, socket);
    });
  }
}

/** How long a slot is held at most: twice the handshake deadline, after which the gateway has closed the connection anyway. */
export function slotHoldMs(handshakeTimeoutMs: number): number {
  return 2 * handshakeTimeoutMs;
}

/** The key of a standalone process's slots. */
const SELF = 0;

/** What a waiting handshake needs from whoever holds it (gateHandshakes). */
interface Held {
  /** A slot freed: take it and pass the request on. */
  proceed(): void;
  /** Stops watching the connection (it leaves the queue). */
  unhook(): void;
  /** The wait expired: the 503. */
  refuse(): void;
}

/**
 * Puts admission in front of everything else listening on `server`
 * (Engine.IO included): a handshake without a token gets the 503 and
 * reaches no listener; one without a free slot waits in `queue` (when on)
 * until a slot frees or its wait expires, else gets the 503 too. For a
 * server that takes clients directly (standalone); in a cluster the
 * primary does the same before routing (sticky-master.ts).
 */
export function gateHandshakes(
  server: HttpServer,
  io: IoServer,
  gate: { admission: Admission; slots: HandshakeSlots; queue?: { limit: number; maxWaitMs: number } },
  onRefused: () => void,
  onQueue?: (result: QueueResult | 'waiting', length: number) => void,
): void {
  const { admission, slots } = gate;
  if (!admission.enabled && !slots.enabled) return;
  const queue =
    slots.enabled && gate.queue
      ? new AdmissionQueue<Held>(gate.queue.limit, gate.queue.maxWaitMs, (h) => {
          h.unhook();
          onQueue?.('expired', queue?.length ?? 0);
          onRefused();
          h.refuse();
        })
      : undefined;
  const waiting = queue?.enabled ? queue : undefined;
  const drain = (): void => {
    while (waiting && waiting.length > 0 && slots.hasRoom(SELF)) {
      const h = waiting.shift();
      if (!h) return;
      h.unhook();
      onQueue?.('admitted', waiting.length);
      h.proceed();
    }
  };
  const tracker = slots.enabled
    ? new HandshakeTracker(io, slots.holdMs, () => {
        slots.release(SELF);
        drain();
      })
    : null;
  server.once('close', () => {
    for (const h of waiting?.clear() ?? []) {
      h.unhook();
      h.refuse();
    }
  });
  /** Passes a handshake on ('pass', its slot taken), refuses it, or holds it ('wait'). */
  const decide = (req: IncomingMessage, end: Closable): 'pass' | 'refuse' | 'wait' => {
    if (!isHandshake(req.method, req.url)) return 'pass';
    const noSlot = slots.enabled && ((waiting?.length ?? 0) > 0 || !slots.hasRoom(SELF));
    // Without a queue, refused before it spends a token.
    if ((noSlot && !waiting) || !admission.admit()) return 'refuse';
    if (noSlot) return 'wait';
    takeSlot(req, end);
    return 'pass';
  };
  const takeSlot = (req: IncomingMessage, end: Closable): void => {
    if (!tracker) return;
    slots.take(SELF);
    tracker.track(req, end);
  };
  /** Holds a handshake; false when the queue is full. `end` is watched for the client leaving. */
  const hold = (end: Duplex | ServerResponse, h: Omit<Held, 'unhook'>): boolean => {
    const left = (): void => {
      if (!waiting?.remove(held)) return;
      held.unhook();
      onQueue?.('closed', waiting.length);
    };
    const held: Held = {
      ...h,
      unhook: () => {
        end.off('close', left);
        end.off('end', left);
      },
    };
    if (!waiting?.add(held)) {
      onQueue?.('full', waiting?.length ?? 0);
      return false;
    }
    end.once('close', left);
    // An upgraded socket is half-open on an http.Server: the client's FIN is an 'end'.
    end.once('end', left);
    onQueue?.('waiting', waiting.length);
    return true;
  };
  const requestListeners = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  server.removeAllListeners('request');
  const refuseResponse = (res: ServerResponse): void => {
    res.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': String(RETRY_AFTER_S), Connection: 'close' });
    res.end(BODY);
  };
  const passRequest = (req: IncomingMessage, res: ServerResponse): void => {
    for (const l of requestListeners) l.call(server, req, res);
  };
  /** One handshake through the gate: passed on (`pass`), held until a slot frees, or refused (`refuseNow`). */
  const admitOr = (req: IncomingMessage, end: Duplex | ServerResponse, pass: () => void, refuseNow: () => void): void => {
    const d = decide(req, end);
    if (d === 'pass') pass();
    else if (
      d === 'wait' &&
      hold(end, {
        proceed: () => {
          takeSlot(req, end);
          pass();
        },
        refuse: refuseNow,
      })
    )
      drain();
    else {
      onRefused();
      refuseNow();
    }
  };
  server.on('request', (req: IncomingMessage, res: ServerResponse) =>
    admitOr(
      req,
      res,
      () => passRequest(req, res),
      () => refuseResponse(res),
    ),
  );
  const upgradeListeners = server.listeners('upgrade') as ((req: IncomingMessage, socket: Duplex, head: Buffer) => void)[];
  server.removeAllListeners('upgrade');
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    admitOr(
      req,
      socket,
      () => {
        for (const l of upgradeListeners) l.call(server, req, socket, head);
      },
      () => refuseRaw(socket),
    ),
  );
}
