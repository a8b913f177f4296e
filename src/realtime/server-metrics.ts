import type { Namespace, Server, Socket } from 'socket.io';
import type { Adapter } from 'socket.io-adapter';
import { KNOWN_LABELS, type Metrics } from '../metrics/metrics';

const DISCONNECT_REASONS = new Set<string>(KNOWN_LABELS.disconnectReasons);
const TRANSPORTS = new Set<string>(KNOWN_LABELS.transports);

interface EngineConn {
  transport: { name: string };
  on(e: string, f: (this: EngineConn, ...a: never[]) => void): void;
}

/**
 * Connection-level metrics from socket.io's and engine.io's own events, so
 * the socket server does not have to know about them: transports (a
 * connection moves from polling to websocket on upgrade) and disconnect
 * reasons of every site namespace.
 */
export function instrumentServer(io: Server, metrics: Metrics): void {
  const transport = (name: string): string => (TRANSPORTS.has(name) ? name : 'polling');
  // Shared listeners (the connection is `this`), not closures per connection.
  // engine.io only upgrades from polling, so an upgrade leaves polling; at
  // close, `transport` is the one the connection ended on.
  function onUpgrade(this: EngineConn, t: unknown): void {
    metrics.connectionsByTransport.dec({ transport: 'polling' });
    metrics.connectionsByTransport.inc({ transport: transport((t as { name: string }).name) });
  }
  function onClose(this: EngineConn): void {
    metrics.connectionsByTransport.dec({ transport: transport(this.transport.name) });
  }
  function onDisconnect(reason: string): void {
    metrics.disconnects.inc({ reason: DISCONNECT_REASONS.has(reason) ? reason : 'other' });
  }
  io.engine.on('connection', (conn: EngineConn) => {
    metrics.connectionsByTransport.inc({ transport: transport(conn.transport.name) });
    conn.on('upgrade', onUpgrade);
    conn.on('close', onClose);
  });
  io.on('new_namespace', (nsp: Namespace) => {
    nsp.on('connection', (socket: Socket) => {
      socket.on('disconnect', onDisconnect);
    });
  });
}

/**
 * Counts cluster-wide adapter requests that timed out (another server did not
 * answer in time): fetchSockets rejects, serverSideEmit acks with an error.
 */
export function countAdapterTimeouts(adapter: Adapter, metrics: Metrics): Adapter {
  const isTimeout = (err: unknown): boolean => err instanceof Error && /timeout reached/.test(err.message);
  const a = adapter as unknown as {
    fetchSockets: (...args: unknown[]) => Promise<unknown>;
    serverSideEmit: (packet: unknown[]) => unknown;
  };
  const fetchSockets = a.fetchSockets.bind(adapter);
  a.fetchSockets = (...args) =>
    fetchSockets(...args).catch((err: unknown) => {
      if (isTimeout(err)) metrics.adapterTimeouts.inc({ request: 'fetchSockets' });
      throw err;
    });
  const serverSideEmit = a.serverSideEmit.bind(adapter);
  a.serverSideEmit = (packet) => {
    const ack = packet[packet.length - 1];
    if (typeof ack === 'function') {
      const wrapped = [...packet];
      wrapped[wrapped.length - 1] = (err: unknown, ...rest: unknown[]) => {
        if (isTimeout(err)) metrics.adapterTimeouts.inc({ request: 'serverSideEmit' });
        return (ack as (...x: unknown[]) => unknown)(err, ...rest);
      };
      return serverSideEmit(wrapped);
    }
    return serverSideEmit(packet);
  };
  return adapter;
}
