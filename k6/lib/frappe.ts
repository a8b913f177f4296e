/**
 * A Frappe browser client, as far as the gateway can tell: a websocket-only
 * Socket.IO connection to `/<site>` with Frappe's handshake headers, the
 * client events Frappe's desk emits, and metrics for everything that can go
 * wrong. Built on `k6/websockets` (the stable module; k6/experimental/websockets
 * is deprecated) and the pure codec.
 *
 * Everything is asynchronous on the VU's event loop: the k6 iteration ends
 * once the websocket is closed and no timer registered here is pending, so
 * every timer is cleared when the socket finishes.
 */
import { WebSocket } from 'k6/websockets';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'k6/timers';
import { SocketIoSession } from './codec.ts';
import type { CodecError, DisconnectReason } from './codec.ts';
import { credentialsFor, handshakeHeaders } from './config.ts';
import type { GatewayTarget, Subscriptions } from './config.ts';
import * as metrics from './metrics.ts';

/** Why a socket ended. `client` is the only expected one. */
export type CloseCause =
  'client' | 'connect_error' | 'connect_timeout' | 'ws_error' | 'server_disconnect' | 'transport_close' | 'ping_timeout';

export interface SocketOutcome {
  connected: boolean;
  cause: CloseCause;
  /** CONNECT_ERROR message, e.g. `Invalid origin`. */
  connectErrorMessage?: string;
  /** Websocket error text, for `ws_error`. */
  error?: string;
  /** Time to connect, when it did. */
  connectMs?: number;
  /** Creation until close, ms. */
  lifetimeMs: number;
  /** Engine.IO pings answered. */
  pings: number;
  /** Socket.IO events received. */
  events: number;
  /** The server's pingInterval from the Engine.IO handshake. */
  pingIntervalMs?: number;
}

export interface FrappeSocketOptions {
  target: GatewayTarget;
  /** 1-based VU number: picks the credential (round-robin over SIDS). */
  vu: number;
  /** Extra tags on k6's built-in ws_* metrics of this connection. */
  tags?: Record<string, string>;
  onConnected?: (socket: FrappeSocket) => void;
  onEvent?: (name: string, args: unknown[], socket: FrappeSocket) => void;
  onClose?: (outcome: SocketOutcome) => void;
}

const MAX_LOGS_PER_VU = 3;
let logsWritten = 0;

/** Logs the first few problems of a VU; a storm of identical lines helps nobody. */
function logLimited(message: string): void {
  if (logsWritten >= MAX_LOGS_PER_VU) return;
  logsWritten += 1;
  console.warn(logsWritten === MAX_LOGS_PER_VU ? `${message} (further messages of this VU suppressed)` : message);
}

/** readyState values (numbers, in case a k6 build lacks the static constants). */
const WS_CONNECTING = 0;
const WS_OPEN = 1;

const DISCONNECT_CAUSES: Readonly<Record<DisconnectReason, CloseCause>> = {
  'io server disconnect': 'server_disconnect',
  'io client disconnect': 'client',
  'transport close': 'transport_close',
  'ping timeout': 'ping_timeout',
};

export class FrappeSocket {
  readonly session: SocketIoSession;
  private readonly ws: WebSocket;
  private readonly options: FrappeSocketOptions;
  private readonly startedAt: number;
  private readonly timeouts: number[] = [];
  private readonly intervals: number[] = [];
  private connectTimer: number | undefined;
  private pingWatchdog: number | undefined;
  private connectedAt: number | undefined;
  private finished = false;
  private closeRequested = false;
  private cause: CloseCause | undefined;
  private connectErrorMessage: string | undefined;
  private wsError: string | undefined;
  private events = 0;
  private pendingFrappePingAt: number | undefined;

  constructor(options: FrappeSocketOptions) {
    this.options = options;
    const target = options.target;
    this.startedAt = Date.now();
    this.session = new SocketIoSession({ namespace: target.namespace });
    this.wireSession();
    this.ws = new WebSocket(target.socketUrl, null, {
      headers: handshakeHeaders(target, credentialsFor(target, options.vu)),
      tags: options.tags ?? {},
    });
    this.ws.onmessage = (event) => {
      if (event === undefined) return;
      for (const frame of this.session.receive(event.data)) this.send(frame);
    };
    this.ws.onerror = (event) => {
      this.wsError = event?.error ?? 'websocket error';
      this.finish('ws_error');
    };
    this.ws.onclose = () => {
      // Decide the cause before the session reports `transport close`.
      this.finish(this.closeRequested ? 'client' : 'transport_close');
      this.session.transportClosed();
    };
    this.connectTimer = setTimeout(() => {
      this.connectTimer = undefined;
      if (this.connectedAt === undefined) this.finish('connect_timeout');
    }, target.connectTimeoutMs);
  }

  get connected(): boolean {
    return this.session.state === 'connected' && !this.finished;
  }

  /** Emits a client event (buffered until the namespace is connected). */
  emit(name: string, ...args: unknown[]): void {
    for (const frame of this.session.emit(name, ...args)) this.send(frame);
  }

  doctypeSubscribe(doctype: string): void {
    this.emit('doctype_subscribe', doctype);
  }

  doctypeUnsubscribe(doctype: string): void {
    this.emit('doctype_unsubscribe', doctype);
  }

  docSubscribe(doctype: string, name: string): void {
    this.emit('doc_subscribe', doctype, name);
  }

  docUnsubscribe(doctype: string, name: string): void {
    this.emit('doc_unsubscribe', doctype, name);
  }

  docOpen(doctype: string, name: string): void {
    this.emit('doc_open', doctype, name);
  }

  docClose(doctype: string, name: string): void {
    this.emit('doc_close', doctype, name);
  }

  taskSubscribe(taskId: string): void {
    this.emit('task_subscribe', taskId);
  }

  /**
   * Frappe's health ping: the gateway answers `pong`. One outstanding at a
   * time; a ping still unanswered when the next is sent counts as lost.
   */
  frappePing(): void {
    if (!this.connected) return;
    if (this.pendingFrappePingAt !== undefined) metrics.pongReceived.add(false);
    this.pendingFrappePingAt = Date.now();
    this.emit('ping');
  }

  /** What a Frappe desk page subscribes to on load. */
  subscribe(subs: Subscriptions): void {
    for (const doctype of subs.doctypes) this.doctypeSubscribe(doctype);
    for (const [doctype, name] of subs.docs) {
      this.docSubscribe(doctype, name);
      if (subs.openDocs) this.docOpen(doctype, name);
    }
    if (subs.task) this.taskSubscribe(`k6-task-${this.options.vu}`);
  }

  /** Runs `fn` once after `ms`, unless the socket has finished by then. */
  after(ms: number, fn: () => void): void {
    if (this.finished) return;
    const id = setTimeout(
      () => {
        if (!this.finished) fn();
      },
      Math.max(0, ms),
    );
    this.timeouts.push(id);
  }

  /** Runs `fn` every `ms` while the socket lives. */
  every(ms: number, fn: () => void): void {
    if (this.finished || ms <= 0) return;
    const id = setInterval(() => {
      if (!this.finished) fn();
    }, ms);
    this.intervals.push(id);
  }

  /**
   * Ends the connection. Graceful sends the Socket.IO DISCONNECT first (what
   * `socket.disconnect()` does in the browser); otherwise the websocket just
   * closes, as when a tab goes away.
   */
  close(graceful = true): void {
    if (this.finished || this.closeRequested) return;
    this.closeRequested = true;
    if (graceful) {
      for (const frame of this.session.disconnect()) this.send(frame);
    }
    this.ws.close();
  }

  private send(frame: string): void {
    if (this.ws.readyState === WS_OPEN) this.ws.send(frame);
  }

  private wireSession(): void {
    const session = this.session;
    session.on('open', () => this.armPingWatchdog());
    session.on('ping', () => {
      metrics.pingsAnswered.add(1);
      this.armPingWatchdog();
    });
    session.on('connected', () => {
      this.connectedAt = Date.now();
      this.clearConnectTimer();
      metrics.connectDuration.add(this.connectedAt - this.startedAt);
      metrics.connectErrors.add(false);
      this.options.onConnected?.(this);
    });
    session.on('connectError', (message) => {
      this.connectErrorMessage = message;
      this.finish('connect_error');
    });
    session.on('event', (name, args) => {
      this.events += 1;
      metrics.eventsReceived.add(1);
      if (name === 'pong' && this.pendingFrappePingAt !== undefined) {
        metrics.pongLatency.add(Date.now() - this.pendingFrappePingAt);
        metrics.pongReceived.add(true);
        this.pendingFrappePingAt = undefined;
      }
      this.options.onEvent?.(name, args, this);
    });
    session.on('disconnected', (reason) => {
      if (reason !== 'io client disconnect') this.finish(DISCONNECT_CAUSES[reason]);
    });
    session.on('protocolError', (error: CodecError) => {
      metrics.protocolErrors.add(1, { code: error.code });
      logLimited(`socket.io protocol error (${error.code}): ${error.message}`);
    });
  }

  private armPingWatchdog(): void {
    if (this.pingWatchdog !== undefined) clearTimeout(this.pingWatchdog);
    const left = this.session.msUntilPingTimeout();
    if (left === undefined || this.finished) return;
    this.pingWatchdog = setTimeout(
      () => {
        this.pingWatchdog = undefined;
        if (this.session.checkPingTimeout()) metrics.pingTimeouts.add(1);
        else this.armPingWatchdog();
      },
      Math.max(0, left) + 50,
    );
  }

  private clearConnectTimer(): void {
    if (this.connectTimer !== undefined) {
      clearTimeout(this.connectTimer);
      this.connectTimer = undefined;
    }
  }

  /** Records the outcome exactly once and releases every timer. */
  private finish(cause: CloseCause): void {
    if (this.finished) return;
    this.finished = true;
    this.cause = cause;
    const now = Date.now();
    this.clearConnectTimer();
    if (this.pingWatchdog !== undefined) clearTimeout(this.pingWatchdog);
    for (const id of this.timeouts) clearTimeout(id);
    for (const id of this.intervals) clearInterval(id);

    const wasConnected = this.connectedAt !== undefined;
    if (!wasConnected) {
      metrics.connectErrors.add(true);
      metrics.connectFailures.add(1, { reason: cause });
      const detail = this.connectErrorMessage ?? this.wsError ?? '';
      logLimited(`socket.io connect failed (${cause})${detail === '' ? '' : `: ${detail}`}`);
    } else {
      metrics.sessionDuration.add(now - (this.connectedAt ?? now));
      if (cause !== 'client') {
        metrics.unexpectedDisconnects.add(1, { reason: cause });
        if (this.pendingFrappePingAt !== undefined) metrics.pongReceived.add(false);
      }
    }
    if (this.ws.readyState === WS_OPEN || this.ws.readyState === WS_CONNECTING) {
      try {
        this.ws.close();
      } catch (err) {
        // Closing a socket that is still connecting may be refused; the
        // outcome is recorded either way.
        logLimited(`closing the websocket failed: ${String(err)}`);
      }
    }

    const outcome: SocketOutcome = {
      connected: wasConnected,
      cause,
      lifetimeMs: now - this.startedAt,
      pings: this.session.pingsReceived,
      events: this.events,
    };
    if (this.connectErrorMessage !== undefined) outcome.connectErrorMessage = this.connectErrorMessage;
    if (this.wsError !== undefined) outcome.error = this.wsError;
    if (this.connectedAt !== undefined) outcome.connectMs = this.connectedAt - this.startedAt;
    const handshake = this.session.handshake;
    if (handshake !== undefined) outcome.pingIntervalMs = handshake.pingInterval;
    this.options.onClose?.(outcome);
  }

  /** Why it ended, once it has. */
  get closeCause(): CloseCause | undefined {
    return this.cause;
  }
}

/** Opens a Frappe realtime connection; see FrappeSocketOptions. */
export function openFrappeSocket(options: FrappeSocketOptions): FrappeSocket {
  return new FrappeSocket(options);
}
