import type { IncomingMessage } from 'node:http';
import { Socket as SocketClass, type Server, type Socket } from 'socket.io';
import type { GatewayConfig } from '../config';
import type { Metrics } from '../metrics/metrics';
import type { Logger, RateLimitedLog } from '../shared/logger';
import { engineClients } from '../shared/io-internals';
import { TokenBucket } from '../shared/token-bucket';
import type { QueueResult } from '../shared/admission';

/** Limits on what one client may cost (SECURITY.md); each refusal is counted in gateway_limit_exceeded_total{limit}. */
export type LimitName =
  | 'admission'
  | 'client_events'
  | 'rooms_per_socket'
  | 'backend_queue'
  | 'outbound_buffer'
  | 'connections_per_ip'
  | 'connections_per_user'
  | 'handshake_timeout';

/**
 * Counts a handshake refused by admission control (GATEWAY_ADMISSION_CONCURRENCY or _RATE),
 * logged at most once per interval: a herd is one line, not thousands.
 */
export function admissionRefused(
  metrics: Metrics,
  log: RateLimitedLog,
  config: Pick<GatewayConfig, 'admissionRate' | 'admissionBurst' | 'admissionConcurrency'>,
): void {
  metrics.limitExceeded.inc({ limit: 'admission' });
  metrics.connectErrors.inc({ reason: 'admission' });
  log.warn(
    'admission',
    { concurrency: config.admissionConcurrency, rate: config.admissionRate, burst: config.admissionBurst },
    'new connections refused with HTTP 503 by admission control (GATEWAY_ADMISSION_CONCURRENCY, _RATE/_BURST); clients retry',
  );
}

/** A handshake joined or left the admission queue (GATEWAY_ADMISSION_QUEUE): the gauge, and how it left. */
export function queueChanged(metrics: Metrics, result: QueueResult | 'waiting', length: number): void {
  metrics.admissionQueue.set(length);
  if (result !== 'waiting') metrics.admissionQueueWaits.inc({ result });
}

/**
 * A CONNECT_ERROR the client may retry (the gateway was busy, not the
 * credentials wrong): `data.retryable` tells a client's reconnect logic so.
 */
export function retryableError(code: string, message: string): Error & { data: { code: string; retryable: true } } {
  return Object.assign(new Error(message), { data: { code, retryable: true as const } });
}

/**
 * Socket middleware (`socket.use`): client events beyond the socket's rate are
 * ignored, counted, and acknowledged with `false` when the client asked for an
 * acknowledgement. Covers Frappe's events and app handlers alike, since it
 * runs before any listener.
 */
export function rateLimitEvents(
  socket: Socket,
  config: Pick<GatewayConfig, 'clientEventsPerSec' | 'clientEventsBurst'>,
  metrics: Metrics,
  now: () => number = Date.now,
): void {
  if (config.clientEventsPerSec <= 0) return;
  const bucket = new TokenBucket(config.clientEventsPerSec, config.clientEventsBurst, now());
  socket.use((packet, next) => {
    if (bucket.take(now())) {
      next();
      return;
    }
    metrics.limitExceeded.inc({ limit: 'client_events' });
    const last = packet[packet.length - 1];
    if (typeof last === 'function') (last as (ok: boolean) => void)(false);
  });
}

/** Non-socket rooms a socket is in (its own id room does not count). */
function roomCount(socket: Socket): number {
  return socket.rooms.size - (socket.rooms.has(socket.id) ? 1 : 0);
}

/** True when joining `rooms` keeps the socket within GATEWAY_MAX_ROOMS_PER_SOCKET; counted when not. */
export function mayJoin(socket: Socket, rooms: readonly string[], max: number, metrics: Metrics): boolean {
  if (max <= 0) return true;
  let added = 0;
  for (const r of rooms) if (!socket.rooms.has(r)) added++;
  if (roomCount(socket) + added <= max) return true;
  metrics.limitExceeded.inc({ limit: 'rooms_per_socket' });
  return false;
}

type JoinFn = (this: Socket, rooms: string | string[]) => void | Promise<void>;
/** One bounded join per (metrics, limit): shared by every socket of a server. */
const boundJoinFns = new WeakMap<Metrics, Map<number, JoinFn>>();

/**
 * `socket.join` that refuses rooms beyond the limit, for app handlers that
 * join directly. Frappe's own events go through the gateway's join, which
 * checks first and answers the client. The replacement is one function
 * shared by every socket (the socket is `this`, as for socket.io's own
 * `join`), not a bound copy and a closure per socket.
 */
export function boundJoins(socket: Socket, max: number, metrics: Metrics): void {
  if (max <= 0) return;
  let perMax = boundJoinFns.get(metrics);
  if (!perMax) boundJoinFns.set(metrics, (perMax = new Map()));
  let fn = perMax.get(max);
  if (!fn) {
    const join = SocketClass.prototype.join;
    fn = function (this: Socket, rooms: string | string[]) {
      const list = Array.isArray(rooms) ? rooms : [rooms];
      if (!mayJoin(this, list, max, metrics)) return undefined;
      return join.call(this, rooms);
    };
    perMax.set(max, fn);
  }
  socket.join = fn;
}

/** The client address used for per-IP limits: X-Forwarded-For's first hop only behind a trusted proxy. */
export function clientIp(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const xff = req.headers['x-forwarded-for'];
    const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim();
    if (first) return first;
  }
  return req.socket.remoteAddress ?? 'unknown';
}

/** What a slow-reader check reads of an Engine.IO connection (engine.io Socket, ws WebSocket). */
interface EngineConnection {
  writeBuffer: unknown[];
  transport?: { name?: string; socket?: { bufferedAmount?: number; terminate?: () => void } };
  close(discard?: boolean): void;
}

/**
 * Disconnects clients that stopped reading: packets queued by Engine.IO
 * (polling: nothing was fetched; any transport while not writable) beyond
 * `maxPackets`, or bytes the WebSocket could not hand to the kernel beyond
 * `maxBytes`. Both are O(1) per connection, checked on a timer rather than on
 * every write. The client reconnects (and recovers its session) if it is merely
 * slow; one that is hostile stops costing memory.
 */
export function watchSlowReaders(
  io: Server,
  opts: { maxBytes: number; maxPackets: number; intervalMs: number },
  metrics: Metrics,
  log: Logger,
): () => void {
  if (opts.maxBytes <= 0 && opts.maxPackets <= 0) return () => undefined;
  const timer = setInterval(() => {
    for (const conn of engineClients<EngineConnection>(io)) {
      const packets = conn.writeBuffer.length;
      const bytes = conn.transport?.name === 'websocket' ? (conn.transport.socket?.bufferedAmount ?? 0) : 0;
      if ((opts.maxPackets > 0 && packets > opts.maxPackets) || (opts.maxBytes > 0 && bytes > opts.maxBytes)) {
        metrics.limitExceeded.inc({ limit: 'outbound_buffer' });
        log.warn({ packets, bytes }, 'slow client disconnected: outbound buffer over the limit');
        // Discard: a plain close waits for the very buffer that does not drain.
        conn.close(true);
        // A WebSocket close handshake would wait for the peer to read our
        // close frame, behind everything it is not reading: up to ws's 30 s
        // close timeout with the buffer held. Drop the TCP connection now.
        conn.transport?.socket?.terminate?.();
      }
    }
  }, opts.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
