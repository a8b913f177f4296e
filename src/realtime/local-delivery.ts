import type { FrappeEvent } from '../events/parse';
import type { Metrics } from '../metrics/metrics';
import type { SocketServer } from './socket-server';

/**
 * Standalone delivery: straight into this process's namespaces. A site or
 * room nobody is connected to costs a map lookup and allocates nothing.
 */
export function deliverLocally(server: SocketServer, metrics: Metrics, events: readonly FrappeEvent[]): void {
  for (const e of events) {
    if (e.room !== null && e.namespace !== null) {
      metrics.eventsRouted.inc({ target: 'room' });
      const nsp = server.existingNamespace(e.namespace);
      if (nsp && nsp.adapter.rooms.has(e.room)) nsp.to(e.room).emit(e.event, e.message);
    } else {
      metrics.eventsRouted.inc({ target: 'all_sites' });
      deliverToAllSites(server, e.event, e.message);
    }
  }
}

/** Events without a room: every site namespace of this process, without going back through the adapter. */
export function deliverToAllSites(server: SocketServer, event: string, message: unknown): void {
  for (const nsp of server.siteNamespaces()) nsp.local.emit(event, message);
}
