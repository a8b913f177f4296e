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
  | { type: 'report'; full: boolean };

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
}
