/**
 * Shared pieces of the MQTT ingress e2e suites (mqtt-*.test.ts): a cluster
 * of gateway hosts on one spawned Redis and one spawned Mosquitto, the rules
 * and custom rooms of docs/mqtt.md, and clients that follow sensor rooms.
 */
import { connect as netConnect, createServer as createNetServer, type Socket as NetSocket } from 'node:net';
import type { MqttClient } from 'mqtt';
import {
  connectClient,
  EventRecorder,
  freePort,
  pollUntil,
  startRedis,
  waitConnect,
  type FakeFrappe,
  type GatewayHandle,
  type RedisServer,
  type Scope,
  type Socket,
  type Transport,
} from '../harness';
import { startMosquitto, type MosquittoServer } from '../harness/mosquitto';
import { newKeyPrefix, OUTSIDER, SITE, sidOf, startBackend, startHost, USERS } from './cluster-support';

export { OUTSIDER, SITE, USERS };
export const STATUS_EVENT = 'sensor_status_change';
export const MACHINE_EVENT = 'machine_state';
export const statusTopic = (id: string | number, line = 'l1'): string => `factory/${line}/sensor/${id}/status`;
export const machineTopic = (id: string | number): string => `factory/l1/machine/${id}/state`;

export const RULES = [
  { name: 'sensor-status', topic: 'factory/+/sensor/+/status', site: SITE, room: 'sensor:{4}', event: STATUS_EVENT },
  { name: 'machine-state', topic: 'factory/+/machine/+/state', site: SITE, room: 'machine:{4}', event: MACHINE_EVENT },
];

/** Every message counts in the delivery suites: no conflation there (see mqtt-conflation.test.ts). */
export const CUSTOM_ROOMS = [
  { pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', latest: true },
  { pattern: 'machine:{id}', doctype: 'Machine', name: '{id}' },
];

export interface MqttCluster {
  readonly redis: RedisServer;
  readonly broker: MosquittoServer;
  readonly backend: FakeFrappe;
  readonly hosts: GatewayHandle[];
  readonly keyPrefix: string;
}

export interface MqttClusterOptions {
  scope: Scope;
  hosts?: number;
  workers?: number;
  env?: Record<string, string>;
  /** Broker URL the gateways use (default: the broker itself; a proxy in front of it for fault injection). */
  brokerUrl?: (broker: MosquittoServer) => Promise<string> | string;
  /** Extra mosquitto.conf lines. */
  brokerConfig?: string[];
  /** Runs once the broker is up, before any host starts. */
  beforeHosts?: (broker: MosquittoServer) => Promise<void>;
}

export async function startMqttCluster(o: MqttClusterOptions): Promise<MqttCluster> {
  const redis = await startRedis({ scope: o.scope });
  const broker = await startMosquitto({ scope: o.scope, extraConfig: o.brokerConfig ?? [] });
  const backend = await startBackend(o.scope);
  // Every known user may read every Sensor and Machine; the outsider none.
  for (const u of USERS) backend.allow(u, 'Sensor');
  backend.allow('*', 'Machine');
  const keyPrefix = newKeyPrefix();
  await o.beforeHosts?.(broker);
  const url = o.brokerUrl ? await o.brokerUrl(broker) : broker.url;
  const env = {
    GATEWAY_MQTT_URL: url,
    GATEWAY_MQTT_RULES: JSON.stringify(RULES),
    GATEWAY_CUSTOM_ROOMS: JSON.stringify(CUSTOM_ROOMS),
    ...o.env,
  };
  const hosts: GatewayHandle[] = [];
  // One after the other: the first host becomes the leader, deterministically.
  for (let i = 0; i < (o.hosts ?? 2); i++) {
    hosts.push(await startHost({ scope: o.scope, backend, keyPrefix, redisUrl: redis.url, env, workers: o.workers ?? 2 }));
  }
  return { redis, broker, backend, hosts, keyPrefix };
}

interface MqttCheck {
  state?: string;
}

/** The host whose primary holds the broker subscription (its /readyz reports mqtt connected). */
export async function waitMqttLeader(hosts: readonly GatewayHandle[], timeoutMs = 20_000): Promise<GatewayHandle> {
  return pollUntil(
    async () => {
      for (const h of hosts) {
        if (h.proc.exitCode !== null || h.proc.signalCode !== null) continue;
        const r = await h.readyz();
        const mqtt = (r.body as { mqtt?: MqttCheck }).mqtt;
        if (mqtt?.state === 'connected') return h;
      }
      return undefined;
    },
    { timeoutMs, intervalMs: 50, description: 'a host to report its MQTT subscription as connected in /readyz' },
  );
}

export interface Follower {
  readonly host: GatewayHandle;
  readonly user: string;
  readonly socket: Socket;
  readonly rec: EventRecorder;
}

export async function connectFollower(scope: Scope, host: GatewayHandle, user: string, transports?: Transport[]): Promise<Follower> {
  const socket = connectClient(host.url, SITE, { cookie: sidOf(user), scope, ...(transports ? { transports } : {}) });
  const rec = new EventRecorder(socket);
  await waitConnect(socket, 10_000);
  return { host, user, socket, rec };
}

/** subscribe_room with an acknowledgement: true once joined, false when refused. */
export async function subscribeRoom(f: Follower, room: string): Promise<boolean> {
  return (await f.socket.timeout(10_000).emitWithAck('subscribe_room', room)) as boolean;
}

export function publishMqtt(client: MqttClient, topic: string, payload: string | Buffer, qos: 0 | 1 = 1): Promise<void> {
  return new Promise((resolve, reject) => client.publish(topic, payload, { qos }, (err) => (err ? reject(err) : resolve())));
}

export interface SeqPayload {
  seq: number;
  sensor: string;
}

export const seqOf = (p: unknown): number => (p as SeqPayload).seq;

/**
 * A TCP proxy in front of the broker that can swallow what the gateway sends
 * (its PUBACKs) while still passing what the broker sends: the state of a
 * leader that published messages to Redis but crashed before acknowledging them.
 */
export interface AckSwallowingProxy {
  readonly url: string;
  /** From now on, bytes from the currently open connections to the broker are discarded. */
  swallowClientBytes(): void;
  close(): Promise<void>;
}

export async function startAckSwallowingProxy(scope: Scope, broker: MosquittoServer): Promise<AckSwallowingProxy> {
  const port = await freePort();
  const open = new Set<{ client: NetSocket; upstream: NetSocket; swallow: boolean }>();
  const server = createNetServer((client) => {
    const upstream = netConnect({ host: '127.0.0.1', port: broker.port });
    const conn = { client, upstream, swallow: false };
    open.add(conn);
    client.on('data', (d: Buffer) => {
      if (!conn.swallow) upstream.write(d);
    });
    upstream.pipe(client);
    const end = (): void => {
      open.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const proxy: AckSwallowingProxy = {
    url: `mqtt://127.0.0.1:${port}`,
    swallowClientBytes: () => {
      for (const c of open) c.swallow = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of open) c.client.destroy();
        server.close(() => resolve());
      }),
  };
  scope.add(proxy);
  return proxy;
}
