import type { Namespace, Socket } from 'socket.io';
import type { Metrics } from '../metrics/metrics';
import type { PresenceStore } from '../presence/presence';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { FrappeBackend, RequestContext } from './backend';
import { SubscriptionHold } from './subscription-hold';
import { SYSTEM_USERS_ROOM, WEBSITE_ROOM, docRoom, doctypeRoom, openDocRoom, taskRoom, userRoom } from '../events/rooms';

/** What the gateway keeps on each socket (`socket.data`); also visible through fetchSockets. */
export interface SocketData {
  site: string;
  user: string;
  user_type: string;
  /** Documents this socket has open, keyed by open_doc room. */
  openDocs?: Map<string, { doctype: string; docname: string }>;
}

// Arguments are names of doctypes, documents and tasks: bounded strings.
const MAX_ARG = 512;
// No name Frappe creates holds a control character; in a room name one could
// only confuse logs and the adapter's channel names.
function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/**
 * A client argument as the name Frappe would build from it
 * (docs/protocol.md section 4), or undefined when the call is to be ignored.
 * Frappe interpolates arguments into template strings, so autoincrement
 * document names arrive as numbers: a safe integer becomes String(n), as
 * `${n}` would. NaN, Infinity and fractions would become "NaN", "Infinity"
 * or "1.5" there, never a real document name, so they are refused.
 */
export function nameArg(v: unknown): string | undefined {
  if (typeof v === 'number') return Number.isSafeInteger(v) ? String(v) : undefined;
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ARG || hasControl(v)) return undefined;
  return v;
}

/**
 * Joins rooms and resolves once broadcasts to them will reach this process
 * (in a cluster: once Redis confirmed the room subscriptions).
 */
export type JoinRooms = (socket: Socket, rooms: string[]) => Promise<void>;

export const joinLocally: JoinRooms = (socket, rooms) => {
  socket.join(rooms);
  return Promise.resolve();
};

export interface HandlerDeps {
  readonly join: JoinRooms;
  readonly backend: FrappeBackend;
  readonly presence: PresenceStore;
  readonly metrics: Metrics;
  readonly log: Logger;
  /**
   * False while this process's Redis connections are down or stalled
   * (cluster): events that would join a room or write presence are refused
   * at once instead of queueing behind the outage. Always true when omitted.
   */
  readonly redisAvailable?: () => boolean;
  /**
   * Registers a listener for Redis answering again after it was unavailable.
   * Given: the subscribe events a socket sends meanwhile are held (one per
   * socket and room, see MAX_HELD_SUBSCRIPTIONS) and run then, so a page
   * that subscribed during an outage is not left deaf to that room; omitted:
   * they are refused like `doc_open`.
   */
  readonly onRedisAvailable?: (listener: () => void) => void;
}

export { MAX_HELD_SUBSCRIPTIONS } from './subscription-hold';

/** The subscribe event an unsubscribe event cancels, with the same arguments. */
const CANCELS: Record<string, readonly string[]> = {
  doctype_unsubscribe: ['doctype_subscribe'],
  doc_unsubscribe: ['doc_subscribe'],
  task_unsubscribe: ['task_subscribe', 'progress_subscribe'],
};

/** The automatic rooms of docs/protocol.md section 3. */
export function automaticRooms(user: string, userType: string): string[] {
  const rooms = [userRoom(user), WEBSITE_ROOM];
  if (userType === 'System User') rooms.push(SYSTEM_USERS_ROOM);
  return rooms;
}

/** Listeners receive the socket as `this` (EventEmitter's contract). */
type Listener = (this: Socket, ...args: unknown[]) => void;

/**
 * The listeners of one set of deps, shared by every socket: a socket costs its
 * listener slots and one WeakMap entry, not a dozen closures. Per-socket
 * state is read from the socket (`this`, `socket.data`) and `contexts`.
 */
interface SharedHandlers {
  readonly deps: HandlerDeps;
  readonly events: readonly (readonly [string, Listener])[];
  readonly disconnect: Listener;
  /** Null when the deps give no way to learn that Redis is back (HandlerDeps.onRedisAvailable). */
  readonly hold: SubscriptionHold | null;
  notifyViewers(socket: Socket, doctype: string, docname: string, users: string[], nsp: Namespace): void;
}

const contexts = new WeakMap<Socket, RequestContext>();
// Keyed by the deps' join function (one per server); rebuilt if any other dep differs.
const shared = new WeakMap<JoinRooms, SharedHandlers>();

function sameDeps(a: HandlerDeps, b: HandlerDeps): boolean {
  return (
    a.join === b.join &&
    a.backend === b.backend &&
    a.presence === b.presence &&
    a.metrics === b.metrics &&
    a.log === b.log &&
    a.redisAvailable === b.redisAvailable &&
    a.onRedisAvailable === b.onRedisAvailable
  );
}

function sharedHandlers(deps: HandlerDeps): SharedHandlers {
  const cached = shared.get(deps.join);
  if (cached && sameDeps(cached.deps, deps)) return cached;
  const built = buildHandlers(deps);
  shared.set(deps.join, built);
  return built;
}

function buildHandlers(deps: HandlerDeps): SharedHandlers {
  const { backend, presence, metrics, log, join } = deps;
  const redisAvailable = deps.redisAvailable ?? (() => true);
  const events: [string, Listener][] = [];

  // Subscribe events held while Redis is unavailable (see SubscriptionHold).
  const hold = deps.onRedisAvailable ? new SubscriptionHold(redisAvailable, deps.onRedisAvailable) : null;

  // Frappe's client sends no acknowledgement callback. Other clients (load
  // tests, app code) may pass one as the last argument: it is called with
  // true once the subscription is effective, false when it was refused.
  // `needsRedis`: the event joins a room or writes presence (a cluster sends
  // Redis commands for it), so it is refused while Redis is unavailable,
  // unless `holdable`: then it is held and run once Redis answers again.
  const on = (
    event: string,
    arity: 1 | 2,
    fn: (socket: Socket, ctx: RequestContext, a: string, b: string) => boolean | void | Promise<boolean | void>,
    needsRedis = false,
    holdable = false,
  ): void => {
    const handle = (socket: Socket, args: unknown[]): void => {
      const last = args[args.length - 1];
      const ack = typeof last === 'function' ? (last as (ok: boolean) => void) : undefined;
      const a = nameArg(args[0]);
      const b = arity === 2 ? nameArg(args[1]) : '';
      const ctx = contexts.get(socket);
      if (a === undefined || b === undefined || !ctx) {
        metrics.clientEventsRejected.inc({ event });
        ack?.(false);
        return;
      }
      for (const cancelled of CANCELS[event] ?? []) hold?.cancel(socket, SubscriptionHold.key(cancelled, a, b));
      if (needsRedis && !redisAvailable()) {
        // Run again, acknowledged then, once Redis answers (if the socket is still there).
        if (holdable && hold?.hold(socket, SubscriptionHold.key(event, a, b), ack, () => handle(socket, args))) {
          metrics.redisDeferred.inc({ what: 'subscribe' });
          return;
        }
        metrics.clientEventsRefused.inc({ event, reason: 'redis_unavailable' });
        ack?.(false);
        return;
      }
      metrics.clientEvents.inc({ event });
      Promise.resolve()
        .then(() => fn(socket, ctx, a, b))
        .then(
          (r) => ack?.(r !== false),
          (err: unknown) => {
            log.warn({ event, err: errorMessage(err) }, 'client event failed');
            ack?.(false);
          },
        );
    };
    events.push([
      event,
      function (this: Socket, ...args: unknown[]) {
        handle(this, args);
      },
    ]);
  };

  const allowed = async (ctx: RequestContext, doctype: string, name?: string): Promise<boolean> => {
    try {
      const ok = await backend.canSubscribe(ctx, doctype, name);
      metrics.permissionChecks.inc({ result: ok ? 'allowed' : 'denied' });
      return ok;
    } catch (err) {
      metrics.permissionChecks.inc({ result: 'error' });
      log.warn({ doctype, err: errorMessage(err) }, 'permission check failed');
      return false;
    }
  };

  const notifyViewers = (socket: Socket, doctype: string, docname: string, users: string[], nsp: Namespace): void => {
    // Frappe: no update when the only viewer is the user who caused the change.
    if (users.length === 1 && users[0] === (socket.data as SocketData).user) return;
    nsp.to(openDocRoom(doctype, docname)).emit('doc_viewers', { doctype, docname, users });
  };

  const joinIfAllowed = async (socket: Socket, ctx: RequestContext, room: string, doctype: string, docname?: string): Promise<boolean> => {
    if (!(await allowed(ctx, doctype, docname)) || !socket.connected) return false;
    await join(socket, [room]);
    return true;
  };

  on('doctype_subscribe', 1, (socket, ctx, doctype) => joinIfAllowed(socket, ctx, doctypeRoom(doctype), doctype), true, true);
  on('doctype_unsubscribe', 1, (socket, _ctx, doctype) => socket.leave(doctypeRoom(doctype)));
  on(
    'doc_subscribe',
    2,
    (socket, ctx, doctype, docname) => joinIfAllowed(socket, ctx, docRoom(doctype, docname), doctype, docname),
    true,
    true,
  );
  on('doc_unsubscribe', 2, (socket, _ctx, doctype, docname) => socket.leave(docRoom(doctype, docname)));
  on('task_subscribe', 1, (socket, _ctx, id) => join(socket, [taskRoom(id)]), true, true);
  on('progress_subscribe', 1, (socket, _ctx, id) => join(socket, [taskRoom(id)]), true, true);
  on('task_unsubscribe', 1, (socket, _ctx, id) => socket.leave(taskRoom(id)));

  on(
    'doc_open',
    2,
    async (socket, ctx, doctype, docname) => {
      const data = socket.data as SocketData;
      const room = openDocRoom(doctype, docname);
      if (!(await allowed(ctx, doctype, docname)) || !socket.connected) return false;
      // Recorded before the join: joining saves the recoverable session (at
      // once, before the room's subscription is confirmed), and a session saved
      // without the document would be recovered elsewhere without its presence.
      data.openDocs ??= new Map();
      data.openDocs.set(room, { doctype, docname });
      await join(socket, [room]);
      const ref = { site: data.site, doctype, docname };
      const users = await presence.open(ref, socket.id, data.user);
      if (!socket.connected) {
        // The socket left while this open was on its way to the store: the
        // disconnect handler's close may have landed before it, which would
        // leave a ghost viewer (and the key) behind. Close again, after it.
        notifyViewers(socket, doctype, docname, await presence.close(ref, socket.id), socket.nsp);
        return false;
      }
      notifyViewers(socket, doctype, docname, users, socket.nsp);
      return true;
    },
    true,
  );
  // Never refused: the room is left at once; while Redis is unavailable the
  // presence entry's removal is recorded and applied (and doc_viewers sent)
  // when it is back, and the acknowledgement does not wait for it.
  on('doc_close', 2, async (socket, _ctx, doctype, docname) => {
    const data = socket.data as SocketData;
    const room = openDocRoom(doctype, docname);
    socket.leave(room);
    data.openDocs?.delete(room);
    const nsp = socket.nsp;
    const closed = presence
      .close({ site: data.site, doctype, docname }, socket.id)
      .then((users) => notifyViewers(socket, doctype, docname, users, nsp));
    if (redisAvailable()) return closed;
    closed.catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'deferred presence close failed'));
  });

  events.push([
    'ping',
    function (this: Socket) {
      metrics.clientEvents.inc({ event: 'ping' });
      this.emit('pong');
    },
  ]);

  // Closing the connection counts as doc_close for every document it had open.
  const closeOpenDocs = (socket: Socket): void => {
    const data = socket.data as SocketData;
    const docs = data.openDocs;
    if (!docs || docs.size === 0) return;
    const nsp = socket.nsp;
    for (const { doctype, docname } of docs.values()) {
      presence
        .close({ site: data.site, doctype, docname }, socket.id)
        .then((users) => notifyViewers(socket, doctype, docname, users, nsp))
        .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'presence close on disconnect failed'));
    }
    docs.clear();
  };
  const disconnect = function (this: Socket): void {
    hold?.drop(this);
    closeOpenDocs(this);
  };

  return { deps, events, disconnect, hold, notifyViewers };
}

/** The subscription hold of these deps' handlers (shared with `subscribe_room`), or null. */
export function subscriptionHoldOf(deps: HandlerDeps): SubscriptionHold | null {
  return sharedHandlers(deps).hold;
}

/**
 * Client events of docs/protocol.md section 4. Bad arguments are ignored and
 * counted; a failed permission check joins nothing and answers nothing.
 */
export function registerFrappeHandlers(socket: Socket, ctx: RequestContext, deps: HandlerDeps): void {
  const h = sharedHandlers(deps);
  const data = socket.data as SocketData;
  contexts.set(socket, ctx);
  for (const [event, listener] of h.events) socket.on(event, listener);

  // A session recovered on this process (after its worker or host went away):
  // its documents are open here now.
  if (socket.recovered && data.openDocs && data.openDocs.size > 0) {
    for (const { doctype, docname } of data.openDocs.values()) {
      deps.presence
        .open({ site: data.site, doctype, docname }, socket.id, data.user)
        .then((users) => h.notifyViewers(socket, doctype, docname, users, socket.nsp))
        .catch((err: unknown) => deps.log.warn({ err: errorMessage(err) }, 'presence re-open after recovery failed'));
    }
  }

  socket.on('disconnect', h.disconnect);
}
