import type { Namespace } from 'socket.io';
import { Adapter, type BroadcastOptions } from 'socket.io-adapter';
import { PRE_ENCODED_MARK } from '../consumer/encode';
import type { Metrics } from '../ops/metrics';

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
 *    and encoding it again. The packet still goes through the in-memory
 *    adapter's local broadcast, so the WebSocket frame is built once for all
 *    the room's sockets, as for any Socket.IO broadcast.
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
      // The in-memory (local) broadcast: it must not be published again.
      Adapter.prototype.broadcast.call(a, packet as never, opts);
      return undefined;
    };
  }
  return a;
}
