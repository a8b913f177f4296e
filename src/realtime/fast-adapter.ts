import type { Namespace, Socket } from 'socket.io';
import type { Adapter, BroadcastOptions } from 'socket.io-adapter';
import { PRE_ENCODED_MARK } from '../events/encode';
import type { Metrics } from '../metrics/metrics';
import { conflateIfBackedUp } from './conflation';

interface EngineConn {
  readyState: string;
  upgrading: boolean;
  writeBuffer: unknown[];
  transport: {
    name: string;
    writable: boolean;
    perMessageDeflate?: unknown;
    socket?: { readyState: number; _sender?: { sendFrame(frame: unknown, cb?: () => void): void } };
  };
}

/**
 * Writes a broadcast's pre-built WebSocket frame straight to the socket's
 * ws connection, skipping Engine.IO's per-packet bookkeeping (packet object,
 * write buffer, flush and drain events) that dominates the cost of large
 * rooms. Only when Engine.IO itself would write it at once: open, on
 * WebSocket, not upgrading, nothing queued, the transport writable, no
 * compression. Anything else takes the normal path, so order is kept: every
 * earlier frame already went through the same ws sender.
 */
function writeDirect(socket: Socket, frame: unknown): boolean {
  const conn = socket.conn as unknown as EngineConn;
  const t = conn.transport;
  const ws = t.socket;
  if (
    conn.readyState !== 'open' ||
    conn.upgrading ||
    conn.writeBuffer.length > 0 ||
    t.name !== 'websocket' ||
    !t.writable ||
    t.perMessageDeflate ||
    ws?.readyState !== 1 ||
    typeof ws._sender?.sendFrame !== 'function'
  ) {
    return false;
  }
  ws._sender.sendFrame(frame);
  return true;
}

/** Marks a packet whose Socket.IO encoding is already known (see `withWorkerHooks`). */
const PRE_ENCODED = Symbol('preEncoded');

interface PreEncodedPacket {
  type: number;
  data: unknown[];
  nsp: string;
  [PRE_ENCODED]?: string;
}

interface HookableAdapter {
  encoder: { encode(packet: unknown): unknown[] };
  _encode(packet: unknown, packetOpts: Record<string, unknown>): unknown[];
  apply(opts: BroadcastOptions, callback: (socket: Socket) => void): void;
  channel?: string;
  onRawMessage?: (raw: Buffer, channel: Buffer | string) => unknown;
  onMessage?: (message: unknown, offset?: string) => unknown;
}

/**
 * Instruments one namespace's Redis adapter in a worker:
 *  - counts the broadcasts it receives from Redis (with dynamic shard
 *    channels, only traffic for rooms that have members on this worker);
 *  - delivers the leader's pre-encoded broadcasts (`!` + Socket.IO packet,
 *    `consumer/encode.ts`) to the room's sockets without decoding the JSON
 *    and encoding it again; the WebSocket frame is built once for the whole
 *    room and written straight to each idle WebSocket connection
 *    (`writeDirect`).
 */
export function withWorkerHooks(a: Adapter, nsp: Namespace, metrics: Metrics): Adapter {
  const h = a as unknown as HookableAdapter;
  const encoder = h.encoder;
  h.encoder = {
    encode: (packet: unknown) => {
      const pre = (packet as PreEncodedPacket)[PRE_ENCODED];
      return pre !== undefined ? [pre] : encoder.encode(packet);
    },
  };
  if (typeof h.onMessage === 'function') {
    const onMessage = h.onMessage.bind(a);
    h.onMessage = (message, offset) => {
      metrics.broadcastsReceived.inc({ kind: 'adapter' });
      return onMessage(message, offset);
    };
  }
  if (typeof h.onRawMessage === 'function' && typeof h.channel === 'string') {
    const onRawMessage = h.onRawMessage.bind(a);
    const prefix = h.channel;
    h.onRawMessage = (raw, channel) => {
      if (raw[0] !== PRE_ENCODED_MARK) return onRawMessage(raw, channel);
      const ch = channel.toString();
      if (!ch.startsWith(prefix) || ch.length <= prefix.length) return undefined;
      metrics.broadcastsReceived.inc({ kind: 'adapter' });
      const room = ch.slice(prefix.length, -1);
      const packet: PreEncodedPacket = { type: 2, data: [], nsp: nsp.name, [PRE_ENCODED]: raw.toString('utf8', 1) };
      const opts: BroadcastOptions = { rooms: new Set([room]), except: new Set(), flags: {} };
      // Local delivery only (it must not be published again): what the
      // in-memory adapter's broadcast does, with the direct write added.
      const packetOpts: Record<string, unknown> = { preEncoded: true };
      const encoded = h._encode(packet, packetOpts);
      const frame = packetOpts.wsPreEncodedFrame;
      h.apply(opts, (socket) => {
        if (conflateIfBackedUp(socket, room, encoded, packetOpts, metrics)) return;
        if (frame === undefined || !writeDirect(socket, frame)) {
          (socket.client as unknown as { writeToEngine(p: unknown, o: unknown): void }).writeToEngine(encoded, packetOpts);
        }
      });
      return undefined;
    };
  }
  return a;
}
