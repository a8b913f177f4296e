import type { Namespace } from 'socket.io';
import type { SocketData } from '../frappe/handlers';

/** Local room inspection for debugging (standalone and per worker). */
export function roomReport(
  server: { existingNamespace(site: string): Namespace | undefined },
  site: string,
  room: string | undefined,
): unknown {
  const nsp = server.existingNamespace(site);
  if (!nsp) return { site, sockets: 0, rooms: {} };
  if (room !== undefined) {
    const ids = nsp.adapter.rooms.get(room) ?? new Set<string>();
    const members = [...ids].map((id) => ({ id, user: (nsp.sockets.get(id)?.data as SocketData | undefined)?.user }));
    return { site, room, members };
  }
  const rooms: Record<string, number> = {};
  for (const [name, ids] of nsp.adapter.rooms) if (!nsp.sockets.has(name)) rooms[name] = ids.size;
  return { site, sockets: nsp.sockets.size, rooms };
}
