/**
 * What a conformance case gets: its topology, a scope closed after the case,
 * and helpers to create backend users and connect browser-like clients.
 * Every case uses fresh credentials (and usually fresh doctypes), so the
 * gateway's auth/permission caches and earlier cases cannot influence it.
 */
import { randomBytes } from 'node:crypto';
import {
  assertNotReceived,
  barrier,
  connectClient,
  EventRecorder,
  waitConnect,
  type ConnectClientOptions,
  type FrappeUser,
  type PayloadPredicate,
  type Scope,
  type Socket,
  type Transport,
} from '../../harness';
import type { Topology, TopologyKind, Variant } from './topology';

export const SITE = 'site1.local';

export interface TestUser {
  readonly user: string;
  readonly user_type: string;
  /** A session id the fake backend knows. */
  readonly sid: string;
  readonly installed_apps: string[] | undefined;
}

export interface Client {
  readonly socket: Socket;
  readonly rec: EventRecorder;
  readonly site: string;
  readonly user: string;
  readonly variant: Variant;
}

export interface ConnectOptions {
  variant?: Variant;
  site?: string;
  /** Sends `X-Frappe-Site-Name: <site>` (default true), as the nginx in front of Frappe does. */
  siteHeader?: boolean;
  cookie?: string;
  authorization?: string;
  origin?: string | null;
  headers?: Record<string, string>;
  transports?: Transport[];
  /** The user the connection authenticates as (for the automatic rooms); default: `user.user`. */
  expectUser?: string;
}

export interface CaseContext {
  readonly topo: Topology;
  readonly kind: TopologyKind;
  readonly scope: Scope;
  /** A string unique to this case run, for doctypes, rooms and task ids. */
  readonly id: string;
  /** Reports a note in the test output (e.g. a check this machine cannot make). */
  diagnostic(message: string): void;
  uid(prefix: string): string;
  /** Registers a session in the fake backend. */
  newUser(options?: { user?: string; user_type?: string; installed_apps?: string[] }): TestUser;
  /** A client socket (not yet awaited) with a recorder attached before anything can arrive. */
  open(user: TestUser | null, options?: ConnectOptions): Client;
  /** Connects `user` and waits until its automatic `user:` room is effective. */
  connect(user: TestUser, options?: ConnectOptions): Promise<Client>;
  /**
   * Like connect(), on a different worker than every one of `peers` (cluster;
   * in standalone just connect()). Attempts that land on a peer's worker stay
   * open, which steers the least-connection balancer to the other worker.
   */
  connectElsewhere(user: TestUser, peers: Client[], options?: ConnectOptions): Promise<Client>;
  /** The index of the worker (process) holding the client, from the rooms API. */
  workerOf(client: Client): Promise<number>;
  /** Waits until every client received a fresh marker sent to its `user:` room through the variant's publish path. */
  barrier(clients: Client[]): Promise<void>;
  /** barrier(), then fails if any client received a matching `event`. Publish the forbidden event first. */
  notReceived(clients: Client[], event: string, predicate?: PayloadPredicate): Promise<void>;
}

let counter = 0;

export function makeContext(topo: Topology, scope: Scope, diagnostic: (message: string) => void = () => undefined): CaseContext {
  const id = `${++counter}${randomBytes(3).toString('hex')}`;
  let n = 0;
  const uid = (prefix: string): string => `${prefix}-${id}-${++n}`;

  const sendMarker = (clients: Client[]) => async (marker: { event: string; message: { barrier: string } }) => {
    const targets = new Map<string, Client>();
    for (const c of clients) targets.set(JSON.stringify([c.variant.name, c.site, c.user]), c);
    for (const c of targets.values()) {
      await c.variant.publish({ event: marker.event, message: marker.message, namespace: c.site, room: `user:${c.user}` });
    }
  };

  const ctx: CaseContext = {
    topo,
    kind: topo.kind,
    scope,
    id,
    diagnostic,
    uid,
    newUser(options = {}) {
      const user = options.user ?? `${uid('user')}@example.com`;
      const info: FrappeUser = { user, user_type: options.user_type ?? 'System User' };
      if (options.installed_apps) info.installed_apps = options.installed_apps;
      const sid = uid('sid');
      topo.frappe.addSession(sid, info);
      return { user, user_type: info.user_type, sid, installed_apps: options.installed_apps };
    },
    open(user, options = {}) {
      const variant = options.variant ?? topo.main;
      const site = options.site ?? SITE;
      const headers: Record<string, string> = {};
      if (options.siteHeader ?? true) headers['X-Frappe-Site-Name'] = site;
      Object.assign(headers, options.headers);
      const co: ConnectClientOptions = { scope, headers, origin: options.origin === undefined ? variant.origin : options.origin };
      const cookie = options.cookie ?? user?.sid;
      if (cookie !== undefined) co.cookie = cookie;
      if (options.authorization !== undefined) co.authorization = options.authorization;
      if (options.transports !== undefined) co.transports = options.transports;
      const socket = connectClient(variant.connectUrl(), site, co);
      const rec = new EventRecorder(socket);
      return { socket, rec, site, user: options.expectUser ?? user?.user ?? 'Guest', variant };
    },
    async connect(user, options = {}) {
      const client = ctx.open(user, options);
      await waitConnect(client.socket, 10_000);
      await client.variant.waitJoined(client.site, client.socket, `user:${client.user}`);
      return client;
    },
    async workerOf(client) {
      const perWorker = await client.variant.roomMembers(client.site, `user:${client.user}`);
      const index = perWorker.findIndex((m) => m.some((x) => x.id === client.socket.id));
      if (index === -1) throw new Error(`${client.socket.id ?? '?'} is in no worker's user:${client.user}`);
      return index;
    },
    async connectElsewhere(user, peers, options = {}) {
      const taken = new Set(await Promise.all(peers.map((p) => ctx.workerOf(p))));
      for (let attempt = 0; attempt < 6; attempt++) {
        const c = await ctx.connect(user, options);
        if (topo.kind === 'standalone' || !taken.has(await ctx.workerOf(c))) return c;
      }
      throw new Error(`could not place a connection of ${user.user} away from workers ${[...taken].join(', ')}`);
    },
    barrier: (clients) =>
      barrier(
        clients.map((c) => c.rec),
        { sendMarker: sendMarker(clients) },
      ),
    notReceived: (clients, event, predicate) =>
      assertNotReceived(
        clients.map((c) => c.rec),
        event,
        predicate,
        { sendMarker: sendMarker(clients) },
      ),
  };
  return ctx;
}

export interface ConformanceCase {
  readonly name: string;
  /** Topologies the case applies to (default: all). */
  readonly only?: readonly TopologyKind[];
  run(ctx: CaseContext): Promise<void>;
}
