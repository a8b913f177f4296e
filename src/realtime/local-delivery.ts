import { encodeEventPacket, encodeOrNull } from '../events/encode';
import type { FrappeEvent } from '../events/parse';
import type { Metrics } from '../metrics/metrics';
import { deliverPreEncoded } from './fast-adapter';
import type { SocketServer } from './socket-server';

/**
 * Standalone delivery: straight into this process's namespaces, with the
 * packet encoder and writer the cluster's workers use. A site or room nobody
 * is connected to costs a map lookup and allocates nothing.
 */
export function deliverLocally(server: SocketServer, metrics: Metrics, events: readonly FrappeEvent[], fastPath = true): void {
  for (const e of events) {
    try {
      deliverOne(server, metrics, e, fastPath);
    } catch {
      // Parsed JSON always re-encodes; this guards the encoder itself.
      metrics.eventsDropped.inc({ reason: 'unencodable' });
    }
  }
}

function deliverOne(server: SocketServer, metrics: Metrics, e: FrappeEvent, fastPath: boolean): void {
  if (e.room !== null && e.namespace !== null) {
    metrics.eventsRouted.inc({ target: 'room' });
    const nsp = server.existingNamespace(e.namespace);
    if (nsp && nsp.adapter.rooms.has(e.room))
      deliverPreEncoded(nsp, e.room, encodeEventPacket(e.namespace, e.event, [e.message]), fastPath, null);
    return;
  }
  metrics.eventsRouted.inc({ target: 'all_sites' });
  for (const nsp of server.siteNamespaces()) {
    deliverPreEncoded(nsp, null, encodeEventPacket(nsp.name.slice(1), e.event, [e.message]), fastPath, null);
  }
}

/**
 * Classic adapter mode, events without a room: every site namespace of this
 * process, without going back through the adapter. An event socket.io-parser
 * cannot encode is dropped and counted (socket.io encodes once per namespace,
 * so the first failure stops it).
 */
export function deliverToAllSites(server: SocketServer, event: string, message: unknown, metrics: Metrics): void {
  for (const nsp of server.siteNamespaces()) {
    if (encodeOrNull(() => nsp.local.emit(event, message)) === null) {
      metrics.eventsDropped.inc({ reason: 'unencodable' });
      return;
    }
  }
}
