/**
 * The topologies the conformance suite runs every case against:
 *  - standalone: one process, no Redis, events through the HTTP publish API;
 *  - cluster: one host, 2 workers behind the sticky primary, a spawned
 *    redis-server, events through `PUBLISH events <python-json>`;
 *  - two-hosts: two such hosts (1 worker each) sharing one Redis and key
 *    prefix; clients are spread over both hosts in turn, so a case's
 *    clients, its leader and its publisher sit on different hosts.
 * Each topology has two gateways sharing one fake Frappe backend:
 *  - main: GATEWAY_BACKEND_URL, v16 permissions, a socket secret (env in
 *    standalone, only the Redis key `socketio_auth_secret` in cluster), a
 *    publish token, and a bench (config files + app handlers) that supplies
 *    the default site;
 *  - alt: no backend URL (the Origin is the backend), v15 permissions, no
 *    socket secret, no publish token (loopback only), a short backend timeout.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import {
  freePorts,
  pollUntil,
  publishRedis,
  startFakeFrappe,
  startGateway,
  startRedis,
  sumMetric,
  uniqueKeyPrefix,
  type FakeFrappe,
  type FrappePublish,
  type GatewayHandle,
  type RedisServer,
  type Scope,
  type Socket,
} from '../../harness';
import { makeBench } from './bench';

export type TopologyKind = 'standalone' | 'cluster' | 'two-hosts';
export const TOPOLOGIES: readonly TopologyKind[] = ['standalone', 'cluster', 'two-hosts'];
/** Workers of the one cluster host. */
export const WORKERS = 2;
/** Workers of each host of the two-hosts topology. */
export const WORKERS_PER_HOST_OF_TWO = 1;
export const EVENTS_CHANNEL = 'events';
/** Frappe (2026) keeps the socket secret in this unprefixed Redis key. */
export const SOCKET_SECRET_KEY = 'socketio_auth_secret';
export const PUBLISH_TOKEN = 'conformance-publish-token';
/** The alt gateway's backend timeout, so a hanging backend fails fast. */
export const ALT_BACKEND_TIMEOUT_MS = 600;

export interface Member {
  id: string;
  user?: string;
}

export interface Variant {
  readonly name: 'main' | 'alt';
  readonly kind: TopologyKind;
  /** The first host: ops requests that concern one node go here. */
  readonly gw: GatewayHandle;
  /** Every host of the variant (one but in two-hosts). */
  readonly hosts: readonly GatewayHandle[];
  /** The Socket.IO URL for the next client: the hosts in turn. */
  connectUrl(): string;
  /** The variant's own Redis (cluster only). */
  readonly redis: RedisServer | undefined;
  readonly flavour: 'v15' | 'v16';
  /** X-Frappe-Socket-Secret the backend must receive; undefined = no such header. */
  readonly socketSecret: string | undefined;
  /** The Origin clients send by default (alt: the backend, since the Origin is where auth calls go). */
  readonly origin: string;
  readonly publishToken: string | undefined;
  /** Publishes like Frappe and checks the gateway took it (standalone: 202; cluster: a subscriber got it). */
  publish(msg: FrappePublish): Promise<void>;
  /** Publishes exact bytes without checking the outcome (junk, fixtures, the docs/protocol.md example). */
  publishRaw(text: string): Promise<void>;
  /** Members of `room` in namespace `/<site>`, one list per process (standalone: one). */
  roomMembers(site: string, room: string): Promise<Member[][]>;
  /** Resolves once broadcasts to `room` reach `socket` (member locally and, in a cluster, subscribed in Redis). */
  waitJoined(site: string, socket: Socket, room: string): Promise<void>;
  /** Resolves once `socket` is no longer a member of `room`. */
  waitLeft(site: string, socket: Socket, room: string): Promise<void>;
  /** Current value of a metric (sum of the matching series over every host, 0 when none). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  /** Polls /metrics until `predicate` holds for the value; returns it. */
  waitMetric(name: string, labels: Record<string, string>, predicate: (v: number) => boolean, what: string): Promise<number>;
}

export interface Topology {
  readonly kind: TopologyKind;
  readonly frappe: FakeFrappe;
  readonly main: Variant;
  readonly alt: Variant;
  readonly benchPath: string;
  /** Bench keys the environment overrides (the gateway must not use them). */
  readonly benchSocketioPort: number;
  readonly deadPort: number;
}

interface RoomsAnswer {
  members?: Member[];
  workers?: { members?: Member[] }[];
}

const POLL = { timeoutMs: 10_000, intervalMs: 25 };

function adapterChannel(keyPrefix: string, site: string, room: string): string {
  // Sharded Socket.IO Redis adapter, dynamic subscriptions: one shard channel per room.
  return `${keyPrefix}:sio#/${site}#${room}#`;
}

interface VariantSpec {
  name: 'main' | 'alt';
  kind: TopologyKind;
  gw: GatewayHandle;
  hosts: readonly GatewayHandle[];
  redis: RedisServer | undefined;
  flavour: 'v15' | 'v16';
  socketSecret: string | undefined;
  origin: string;
  publishToken: string | undefined;
}

function makeVariant(s: VariantSpec, scope: Scope): Variant {
  const { gw } = s;
  // One publisher connection per variant: publish order is delivery order.
  const pub: Redis | undefined = s.redis?.client();
  const admin: Redis | undefined = s.redis?.client();
  if (pub) scope.add(() => pub.disconnect());
  if (admin) scope.add(() => admin.disconnect());

  const postRaw = async (body: string): Promise<{ status: number; body: string }> => {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (s.publishToken !== undefined) headers['authorization'] = `Bearer ${s.publishToken}`;
    return gw.opsRequest('/api/v1/publish', { method: 'POST', headers, body });
  };

  const hostMembers = async (host: GatewayHandle, site: string, room: string): Promise<Member[][]> => {
    const res = await host.opsRequest(`/api/v1/cluster/rooms?site=${encodeURIComponent(site)}&room=${encodeURIComponent(room)}`, {
      headers: s.publishToken !== undefined ? { authorization: `Bearer ${s.publishToken}` } : {},
    });
    assert.equal(res.status, 200, `rooms API: ${res.body}`);
    const body = JSON.parse(res.body) as RoomsAnswer;
    return body.workers ? body.workers.map((w) => w.members ?? []) : [body.members ?? []];
  };
  // One list per process of every host, hosts in order.
  const roomMembers = async (site: string, room: string): Promise<Member[][]> =>
    (await Promise.all(s.hosts.map((h) => hostMembers(h, site, room)))).flat();
  let next = 0;

  const variant: Variant = {
    ...s,
    connectUrl() {
      const host = s.hosts[next++ % s.hosts.length] ?? gw;
      return host.url;
    },
    async publish(msg) {
      if (pub) {
        const receivers = await publishRedis(pub, EVENTS_CHANNEL, msg);
        assert.ok(receivers >= 1, 'nobody is subscribed to the events channel');
        return;
      }
      const res = await postRaw(JSON.stringify(msg));
      assert.equal(res.status, 202, `publish API: ${res.body}`);
    },
    async publishRaw(text) {
      if (pub) await pub.publish(EVENTS_CHANNEL, text);
      else await postRaw(text);
    },
    roomMembers,
    async waitJoined(site, socket, room) {
      await pollUntil(
        async () => {
          const perWorker = await roomMembers(site, room);
          if (!perWorker.some((m) => m.some((x) => x.id === socket.id))) return undefined;
          if (!admin) return true;
          // Every process with members must hold the room's shard subscription.
          const withMembers = perWorker.filter((m) => m.length > 0).length;
          const reply = (await admin.call('PUBSUB', 'SHARDNUMSUB', adapterChannel(gw.keyPrefix, site, room))) as [string, number];
          return Number(reply[1]) >= withMembers ? true : undefined;
        },
        { ...POLL, description: `${socket.id ?? '?'} to join ${room} on /${site}` },
      );
    },
    async waitLeft(site, socket, room) {
      await pollUntil(async () => ((await roomMembers(site, room)).some((m) => m.some((x) => x.id === socket.id)) ? undefined : true), {
        ...POLL,
        description: `${socket.id ?? '?'} to leave ${room} on /${site}`,
      });
    },
    async metric(name, labels = {}) {
      const texts = await Promise.all(s.hosts.map((h) => h.metrics()));
      return texts.reduce((sum, text) => sum + (sumMetric(text, name, labels) ?? 0), 0);
    },
    async waitMetric(name, labels, predicate, what) {
      let last = NaN;
      return pollUntil(
        async () => {
          last = await variant.metric(name, labels);
          return predicate(last) ? last : undefined;
        },
        { ...POLL, description: () => `${what} (${name}${JSON.stringify(labels)} is ${last})` },
      );
    },
  };
  return variant;
}

/** Until every worker registered and the events consumer has a leader, a cluster host is not fully usable. */
async function waitClusterSettled(gw: GatewayHandle, workers: number): Promise<void> {
  await pollUntil(
    async () => {
      const info = (await gw.cluster()) as { workers?: { nodeId: string | null }[]; leader?: unknown };
      const list = info.workers ?? [];
      return list.length === workers && list.every((w) => w.nodeId !== null) && info.leader ? true : undefined;
    },
    {
      timeoutMs: 20_000,
      intervalMs: 50,
      description: () => `${workers} workers and a leader on ${gw.url}; logs:\n${gw.logs.slice(-20).join('\n')}`,
    },
  );
}

/** How a topology's gateways run beyond its kind. */
export interface TopologyOptions {
  /** GATEWAY_FAST_PATH of both gateways; default from RTG_CONFORMANCE_FAST_PATH (else the gateway's default). */
  readonly fastPath?: 'on' | 'off';
}

/** The runs of the suite: each topology, and each again with every packet on socket.io's normal emit path. */
export const RUNS: readonly { readonly label: string; readonly kind: TopologyKind; readonly options: TopologyOptions }[] = [
  { label: 'standalone', kind: 'standalone', options: {} },
  { label: 'cluster', kind: 'cluster', options: {} },
  { label: 'two-hosts', kind: 'two-hosts', options: {} },
  { label: 'standalone, fast path off', kind: 'standalone', options: { fastPath: 'off' } },
  { label: 'cluster, fast path off', kind: 'cluster', options: { fastPath: 'off' } },
];

export async function startTopology(kind: TopologyKind, scope: Scope, options: TopologyOptions = {}): Promise<Topology> {
  const fromEnv = process.env['RTG_CONFORMANCE_FAST_PATH'];
  const fastPath = options.fastPath ?? (fromEnv === 'on' || fromEnv === 'off' ? fromEnv : undefined);
  const frappe = await startFakeFrappe({ scope });
  const [benchSocketioPort = 0, deadPort = 0] = await freePorts(2);
  const cluster = kind !== 'standalone';
  const hostCount = kind === 'two-hosts' ? 2 : 1;
  const workers = kind === 'two-hosts' ? WORKERS_PER_HOST_OF_TWO : WORKERS;
  const benchPath = makeBench({ scope, socketioPort: benchSocketioPort, deadPort, withRedisQueue: cluster });
  const secret = `socket-secret-${randomBytes(6).toString('hex')}`;

  const [mainRedis, altRedis] = cluster ? await Promise.all([startRedis({ scope }), startRedis({ scope })]) : [undefined, undefined];
  if (mainRedis) {
    // Only Redis holds the secret: the gateway must find it there (Frappe 2026).
    const c = mainRedis.client();
    await c.set(SOCKET_SECRET_KEY, secret);
    c.disconnect();
  }

  const clusterEnv = (redis: RedisServer | undefined): { redisUrl?: string; workers?: number } =>
    redis ? { redisUrl: redis.url, workers } : {};
  // The hosts of one variant share its Redis and key prefix: one cluster.
  const mainPrefix = uniqueKeyPrefix();
  const altPrefix = uniqueKeyPrefix();
  const startMain = () =>
    startGateway({
      scope,
      ...clusterEnv(mainRedis),
      backendUrl: frappe.url,
      benchPath,
      publishToken: PUBLISH_TOKEN,
      keyPrefix: mainPrefix,
      env: {
        GATEWAY_PERMISSION_FLAVOUR: 'v16',
        GATEWAY_SOCKET_SECRET: cluster ? undefined : secret,
        GATEWAY_FAST_PATH: fastPath,
      },
    });
  const startAlt = () =>
    startGateway({
      scope,
      ...clusterEnv(altRedis),
      defaultSite: 'site1.local',
      keyPrefix: altPrefix,
      env: {
        GATEWAY_PERMISSION_FLAVOUR: 'v15',
        GATEWAY_BACKEND_TIMEOUT_MS: String(ALT_BACKEND_TIMEOUT_MS),
        GATEWAY_FAST_PATH: fastPath,
      },
    });
  const range = [...Array(hostCount).keys()];
  const [mainHosts, altHosts] = await Promise.all([Promise.all(range.map(startMain)), Promise.all(range.map(startAlt))]);
  const mainGw = mainHosts[0] as GatewayHandle;
  const altGw = altHosts[0] as GatewayHandle;
  if (cluster) await Promise.all([...mainHosts, ...altHosts].map((h) => waitClusterSettled(h, workers)));

  const main = makeVariant(
    {
      name: 'main',
      kind,
      gw: mainGw,
      hosts: mainHosts,
      redis: mainRedis,
      flavour: 'v16',
      socketSecret: secret,
      origin: mainGw.url,
      publishToken: PUBLISH_TOKEN,
    },
    scope,
  );
  const alt = makeVariant(
    {
      name: 'alt',
      kind,
      gw: altGw,
      hosts: altHosts,
      redis: altRedis,
      flavour: 'v15',
      socketSecret: undefined,
      origin: frappe.url,
      publishToken: undefined,
    },
    scope,
  );
  return { kind, frappe, main, alt, benchPath, benchSocketioPort, deadPort };
}
