import { encodeOrNull } from '../events/encode';
import type { FrappeEvent } from '../events/parse';
import type { Metrics } from '../metrics/metrics';
import type { SocketServer } from './socket-server';

/**
 * Standalone delivery: straight into this process's namespaces. A site or
 * room nobody is connected to costs a map lookup and allocates nothing. An
 * event socket.io-parser cannot encode (see `encodeOrNull`) is dropped and
 * counted; the rest of the batch is delivered.
 */
export function deliverLocally(server: SocketServer, metrics: Metrics, events: readonly FrappeEvent[]): void {
  for (const e of events) {
    if (e.room !== null && e.namespace !== null) {
      const room = e.room;
      const nsp = server.existingNamespace(e.namespace);
      const ok = nsp && nsp.adapter.rooms.has(room) ? encodeOrNull(() => nsp.to(room).emit(e.event, e.message)) !== null : true;
      if (ok) metrics.eventsRouted.inc({ target: 'room' });
      else metrics.eventsDropped.inc({ reason: 'unencodable' });
    } else {
      if (deliverToAllSites(server, e.event, e.message, metrics)) metrics.eventsRouted.inc({ target: 'all_sites' });
    }
  }
}

/**
 * Events without a room: every site namespace of this process, without going
 * back through the adapter. False (and counted) when the event could not be
 * encoded; socket.io encodes once per namespace, so the first failure stops it.
 */
export function deliverToAllSites(server: SocketServer, event: string, message: unknown, metrics: Metrics): boolean {
  for (const nsp of server.siteNamespaces()) {
    if (encodeOrNull(() => nsp.local.emit(event, message)) === null) {
      metrics.eventsDropped.inc({ reason: 'unencodable' });
      return false;
    }
  }
  return true;
}
