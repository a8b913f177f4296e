import { Socket, type Server } from 'socket.io';
import type { FrappeBackend, RequestContext } from '../frappe/backend';
import type { SocketData } from '../frappe/handlers';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

/**
 * The functions app handlers find on a socket (docs/protocol.md section 7):
 * `has_permission`, `frappe_request`, `gateway`. Creating them for every
 * socket at connect time cost four closures and an object per connection,
 * for an API most sockets never touch. They are accessors on socket.io's
 * Socket prototype instead: the first read on a socket creates the bound
 * function and stores it on that socket (so it stays the same function, and
 * may be called detached, as before); an assignment simply replaces it.
 * A socket that was never decorated reads undefined, as before.
 */

interface ServerDeps {
  readonly backend: FrappeBackend;
  readonly log: Logger;
}

const contexts = new WeakMap<Socket, RequestContext>();
const servers = new WeakMap<Server, ServerDeps>();

type Builder = (socket: Socket, ctx: RequestContext, deps: ServerDeps) => unknown;

const builders: Record<string, Builder> = {
  // Frappe's contract: resolves when allowed and never settles otherwise, so
  // handlers written as `has_permission(...).then(join)` cannot crash on denial.
  has_permission:
    (_socket, ctx, { backend, log }) =>
    (doctype: string, name?: string) =>
      new Promise<void>((resolve) => {
        backend.canSubscribe(ctx, doctype, name ?? '').then(
          (ok) => {
            if (ok) resolve();
          },
          (err: unknown) => log.warn({ doctype, err: errorMessage(err) }, "can't check permissions"),
        );
      }),
  frappe_request:
    (_socket, ctx, { backend }) =>
    (path: string, args?: Record<string, unknown>, opts?: { method?: string; headers?: Record<string, string>; body?: string }) =>
      backend.request(ctx, path, args, opts),
  gateway: (socket) => ({
    /** Sockets in a room across every worker and host. */
    roomSockets: async (room: string) => {
      const sockets = await socket.nsp.in(room).fetchSockets();
      return sockets.map((r) => ({ id: r.id, user: (r.data as SocketData).user }));
    },
    /** Users in a room across every worker and host, de-duplicated. */
    roomUsers: async (room: string) => {
      const sockets = await socket.nsp.in(room).fetchSockets();
      return [...new Set(sockets.map((r) => (r.data as SocketData).user))];
    },
  }),
};

function own(socket: Socket, name: string, value: unknown): void {
  Object.defineProperty(socket, name, { value, writable: true, enumerable: true, configurable: true });
}

let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  for (const [name, build] of Object.entries(builders)) {
    Object.defineProperty(Socket.prototype, name, {
      configurable: true,
      enumerable: false,
      get(this: Socket): unknown {
        const ctx = contexts.get(this);
        const deps = servers.get(this.nsp.server);
        if (!ctx || !deps) return undefined;
        const value = build(this, ctx, deps);
        own(this, name, value);
        return value;
      },
      set(this: Socket, value: unknown) {
        own(this, name, value);
      },
    });
  }
}

/** Makes the app-handler API of `io`'s sockets use this backend and logger. */
export function registerSocketApiServer(io: Server, deps: ServerDeps): void {
  install();
  servers.set(io, deps);
}

/** Gives `socket` the app-handler API, authorised as `ctx` (again on a recovered session: the new credential counts). */
export function setSocketApiContext(socket: Socket, ctx: RequestContext): void {
  contexts.set(socket, ctx);
  // Functions bound to an earlier context must not survive a re-decoration.
  for (const name of Object.keys(builders))
    if (Object.prototype.hasOwnProperty.call(socket, name)) delete (socket as unknown as Record<string, unknown>)[name];
}
