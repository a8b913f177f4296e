import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { TokenBucket } from './token-bucket';

/**
 * Admission control of new connections per host (GATEWAY_ADMISSION_RATE,
 * GATEWAY_ADMISSION_BURST): a token bucket of Engine.IO handshakes. A
 * handshake beyond it is answered HTTP 503 before any worker sees it, which
 * socket.io-client treats as a failed attempt and retries with its backoff
 * (unlike a namespace CONNECT_ERROR, after which it stops).
 */

/** The Socket.IO path of the public port (socket-server.ts serves it). */
export const SOCKET_IO_PATH = '/socket.io/';

/** What a refused client reads: the body of the HTTP 503 (same shape as Engine.IO's own refusals). */
export const ADMISSION_REFUSAL = {
  code: 'GW_ERR_ADMISSION',
  message: 'Service unavailable: too many new connections to this host (GATEWAY_ADMISSION_RATE), retry',
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
 * Puts admission in front of everything else listening on `server`
 * (Engine.IO included): a handshake without a token gets the 503 and reaches
 * no listener. For a server that takes clients directly (standalone); in a
 * cluster the primary does the same before routing (sticky-master.ts).
 */
export function gateHandshakes(server: HttpServer, admission: Admission, onRefused: () => void): void {
  if (!admission.enabled) return;
  const refused = (req: IncomingMessage): boolean => {
    if (!isHandshake(req.method, req.url) || admission.admit()) return false;
    onRefused();
    return true;
  };
  const requestListeners = server.listeners('request') as ((req: IncomingMessage, res: ServerResponse) => void)[];
  server.removeAllListeners('request');
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (refused(req)) {
      res.writeHead(503, { 'Content-Type': 'application/json', 'Retry-After': String(RETRY_AFTER_S), Connection: 'close' });
      res.end(BODY);
      return;
    }
    for (const l of requestListeners) l.call(server, req, res);
  });
  const upgradeListeners = server.listeners('upgrade') as ((req: IncomingMessage, socket: Duplex, head: Buffer) => void)[];
  server.removeAllListeners('upgrade');
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (refused(req)) {
      refuseRaw(socket);
      return;
    }
    for (const l of upgradeListeners) l.call(server, req, socket, head);
  });
}
