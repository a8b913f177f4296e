/**
 * The whole real client path for one test file:
 *
 *   Chromium ──► nginx (deploy/nginx snippet) ──► gateway host(s) ──► Redis ◄── PUBLISH events (Frappe format)
 *                 └──── location / ──► fake Frappe site ◄── auth/permission calls from the gateway
 *
 * Topologies: one host with several workers behind frappe-single-host.conf,
 * or two hosts (sharing Redis and a key prefix) behind frappe-multi-host.conf.
 * Every resource registers its teardown in the given scope as it is created.
 */
import type { Browser } from 'playwright-core';
import { frappeJson } from '../harness/frappe-json';
import type { FrappePublish } from '../harness/fixtures';
import { startFakeFrappe, type FakeFrappe } from '../harness/fake-frappe';
import { startGateway, uniqueKeyPrefix, type GatewayHandle, type StartGatewayOptions } from '../harness/gateway';
import { startRedis, type RedisServer } from '../harness/redis';
import type { Scope } from '../harness/scope';
import { pollUntil } from '../harness/wait';
import { launchChromium } from './chromium';
import { startFrappeSite, type FrappeSite, type SiteUser } from './frappe-site';
import { startNginx, type NginxHandle } from './nginx';

export type Topology = 'one-host' | 'two-hosts';

export const SITE_NAME = 'site1.local';
const EVENTS_CHANNEL = 'events';
const WORKERS_ONE_HOST = 3;
const WORKERS_PER_HOST_TWO_HOSTS = 2;
const LEADER_TIMEOUT_MS = 15_000;
const ROOMS_TIMEOUT_MS = 10_000;
const ROOMS_POLL_MS = 50;

export interface BrowserStack {
  readonly topology: Topology;
  readonly siteName: string;
  /** The page origin the browser uses: http://site1.local:<nginx port>. */
  readonly origin: string;
  readonly redis: RedisServer;
  readonly frappe: FakeFrappe;
  readonly site: FrappeSite;
  readonly nginx: NginxHandle;
  readonly browser: Browser;
  readonly keyPrefix: string;
  /** Current gateway hosts (a restarted host replaces its entry). */
  readonly gateways: GatewayHandle[];
  /** Registers a user that can log in, with read permission on everything `allow` lists. */
  addUser(user: SiteUser, allow?: readonly string[]): void;
  /** What Frappe does: PUBLISH events <json.dumps(indent=1, sort_keys=True)>. Resolves with the subscriber count. */
  publish(event: FrappePublish): Promise<number>;
  /** Where `socketId` is a member of `room`: host index and worker index (as the host's rooms API lists workers), or undefined. */
  locate(socketId: string, room: string): Promise<SocketLocation | undefined>;
  /**
   * Polls the ops rooms API of every host until `socketId` is in every room
   * (a server-side join has no client-visible event); resolves with its location.
   */
  waitInRooms(socketId: string, rooms: readonly string[], timeoutMs?: number): Promise<SocketLocation>;
  /** Rooms API: is `socketId` in `room` on any host? */
  inRoom(socketId: string, room: string): Promise<boolean>;
  /** SIGTERM host `index` and await its exit (the drain disconnects its clients). */
  stopHost(index: number): Promise<void>;
  /** Starts host `index` again on the same ports, cluster and configuration; resolves once ready. */
  startHost(index: number): Promise<GatewayHandle>;
}

export interface SocketLocation {
  host: number;
  worker: number;
}

interface RoomsReport {
  workers?: ({ members?: { id: string }[] } | null)[];
}

function isRunning(g: GatewayHandle): boolean {
  return g.proc.exitCode === null && g.proc.signalCode === null;
}

/** Index of the worker (in the report's order) that has `socketId` in the room, or -1. */
function workerWith(report: unknown, socketId: string): number {
  return ((report as RoomsReport).workers ?? []).findIndex((w) => (w?.members ?? []).some((m) => m.id === socketId));
}

export async function startBrowserStack(scope: Scope, topology: Topology): Promise<BrowserStack> {
  const redis = await startRedis({ scope, label: `redis (browser ${topology})` });
  const frappe = await startFakeFrappe({ scope });
  const site = await startFrappeSite({ scope, siteName: SITE_NAME, frappe });
  const keyPrefix = uniqueKeyPrefix();

  const hostCount = topology === 'one-host' ? 1 : 2;
  const gateways: GatewayHandle[] = [];
  // A restarted host keeps its ports: nginx's upstream list names them.
  const gatewayOptions = (index: number): StartGatewayOptions => ({
    scope,
    redisUrl: redis.url,
    backendUrl: site.url,
    keyPrefix,
    workers: topology === 'one-host' ? WORKERS_ONE_HOST : WORKERS_PER_HOST_TWO_HOSTS,
    extraEnv: { GATEWAY_EVENTS_CHANNEL: EVENTS_CHANNEL, GATEWAY_HOST: '127.0.0.1' },
    ...(index < gateways.length ? { port: gateways[index]?.port, opsPort: gateways[index]?.opsPort } : {}),
  });
  for (let i = 0; i < hostCount; i++) gateways.push(await startGateway(gatewayOptions(i)));

  const nginx = await startNginx({
    scope,
    variant: topology === 'one-host' ? 'single' : 'multi',
    gatewayPorts: gateways.map((g) => g.port),
    siteUrl: site.url,
    serverName: SITE_NAME,
  });
  const browser = await launchChromium({ scope, hosts: [SITE_NAME] });

  const publisher = redis.client();
  scope.add(() => publisher.disconnect());

  const waitForLeader = async (): Promise<void> => {
    // Events published before any host holds the lease would only reach standby buffers.
    await pollUntil(
      async () => {
        for (const g of gateways) if (isRunning(g) && ((await g.cluster()) as { leader?: unknown }).leader) return true;
        return undefined;
      },
      { timeoutMs: LEADER_TIMEOUT_MS, intervalMs: ROOMS_POLL_MS, description: 'a gateway host to hold the events leader lease' },
    );
  };
  await waitForLeader();

  const locate = async (socketId: string, room: string): Promise<SocketLocation | undefined> => {
    for (const [host, g] of gateways.entries()) {
      if (!isRunning(g)) continue;
      const res = await g.opsRequest(`/api/v1/cluster/rooms?site=${encodeURIComponent(SITE_NAME)}&room=${encodeURIComponent(room)}`);
      if (res.status !== 200) continue;
      const worker = workerWith(JSON.parse(res.body), socketId);
      if (worker >= 0) return { host, worker };
    }
    return undefined;
  };

  const stack: BrowserStack = {
    topology,
    siteName: SITE_NAME,
    origin: `http://${SITE_NAME}:${nginx.port}`,
    redis,
    frappe,
    site,
    nginx,
    browser,
    keyPrefix,
    gateways,
    addUser(user, allow = []) {
      site.addUser(user);
      for (const doctype of allow) frappe.allow(user.user, doctype);
    },
    publish: (event) => publisher.publish(EVENTS_CHANNEL, frappeJson(event)),
    locate,
    inRoom: async (socketId, room) => (await locate(socketId, room)) !== undefined,
    waitInRooms: (socketId, rooms, timeoutMs = ROOMS_TIMEOUT_MS) =>
      pollUntil(
        async () => {
          let where: SocketLocation | undefined;
          for (const room of rooms) {
            where = await locate(socketId, room);
            if (where === undefined) return undefined;
          }
          return where;
        },
        {
          timeoutMs,
          intervalMs: ROOMS_POLL_MS,
          description: () => `socket ${socketId} to be in rooms ${rooms.join(', ')} on some gateway host`,
        },
      ),
    async stopHost(index) {
      const g = gateways[index];
      if (g === undefined) throw new Error(`no gateway host ${index}`);
      await g.stop();
    },
    async startHost(index) {
      const g = await startGateway(gatewayOptions(index));
      gateways[index] = g;
      return g;
    },
  };
  return stack;
}
