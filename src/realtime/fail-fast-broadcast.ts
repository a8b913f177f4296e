import type { Adapter, BroadcastOptions } from 'socket.io-adapter';
import type { Metrics } from '../metrics/metrics';

/**
 * Broadcasts a worker makes itself (an app handler's `socket.to(room).emit`,
 * `doc_viewers`) go through the adapter, which publishes them to Redis for
 * the other workers and delivers them to its own sockets only once Redis
 * answered the publish. While this worker's Redis connections are down or
 * stalled that would queue every emit, its packet included, behind the
 * outage. Instead they are delivered to this worker's sockets at once and not
 * published; each is counted in `gateway_broadcasts_unpublished_total`. The
 * other workers' clients do not get them (they are not in the history
 * either).
 */
export function localWhileRedisUnavailable(adapter: Adapter, redisAvailable: () => boolean, metrics: Metrics): Adapter {
  const broadcast = adapter.broadcast.bind(adapter);
  adapter.broadcast = (packet: unknown, opts: BroadcastOptions) => {
    if (opts.flags?.local !== true && !redisAvailable()) {
      metrics.broadcastsUnpublished.inc();
      return broadcast(packet as never, { ...opts, flags: { ...opts.flags, local: true } });
    }
    return broadcast(packet as never, opts);
  };
  return adapter;
}
