/** IPC between the bench and its socket.io-client generator process (sio-clients-child.ts). */
import type { LedgerJson } from './recovery-accounting';

export type SioChildCommand =
  | {
      type: 'connect';
      url: string;
      site: string;
      origin: string;
      clients: { sid: string }[];
      /** Omitted: socket.io-client's default reconnection settings. */
      reconnectionDelayMs?: number;
      timeoutMs: number;
    }
  | { type: 'jitter'; meanMs: number; spread: number }
  | { type: 'stop-jitter'; timeoutMs: number }
  | { type: 'reset-warm' }
  | { type: 'reset' }
  | { type: 'report'; full: boolean }
  /** Publish-to-receive latency of the clients that stayed connected through each window (epoch ms), over the events published from `eventsFrom` to its end. */
  | { type: 'latency'; windows: { from: number; to: number; eventsFrom: number }[] };

/** Latency of the clients connected all through one window, over the events published in it. */
export interface WindowLatency {
  /** Clients without a disconnect in the window. */
  clients: number;
  events: number;
  p50: number;
  p99: number;
  max: number;
}

export interface SioChildReport {
  type: 'report';
  connected: number;
  warm: number;
  /** Unique bench events received, all clients. */
  received: number;
  drops: number;
  reconnects: number;
  /** Reconnections the server reported as recovered (socket.recovered). */
  recovered: number;
  /** rtg_missed_updates by reason. */
  missed: Record<string, number>;
  /** Failed (re)connection attempts (connect_error). */
  connectErrors: number;
  /** Per reconnection: disconnect to next connect, and the disconnect's wall-clock time (epoch ms). */
  reconnectMs: number[];
  reconnectAt: number[];
  /** Per reconnection: its successful attempt alone (TCP + Engine.IO + Socket.IO CONNECT, after the backoff wait). */
  handshakeMs: number[];
  ledgers: LedgerJson[];
  /** Per client (full reports): rtg_missed_updates received and recovered reconnections. */
  told: number[];
  recoveredPer: number[];
  /** Per client (full reports): connected at the time of the report. */
  connectedPer?: boolean[];
  /** Only for a `latency` command, one per window. */
  latency?: WindowLatency[];
}
