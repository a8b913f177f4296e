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
  withTimeout,
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
  /**
   * Resolves once the gateway's PUBACKs for `count` messages have passed the proxy and the
   * broker has read them (it answered a PINGREQ sent after them on the same connection:
   * MQTT answers a connection's packets in order). A client can see an event before the
   * proxy has passed its PUBACK, so cutting at that moment also takes acknowledgements
   * of messages the clients already have, and the broker hands those out again.
   */
  acknowledged(count: number, timeoutMs?: number): Promise<void>;
  /** From now on, bytes from the currently open connections to the broker are discarded. */
  swallowClientBytes(): void;
  close(): Promise<void>;
}

const PUBACK = 4;
const PINGREQ = 12;
const PINGRESP = 13;
const PINGREQ_BYTES = Buffer.from([PINGREQ << 4, 0]);

/**
 * Splits an MQTT byte stream into whole packets (fixed header, remaining-length varint,
 * body), so the proxy can tell PUBACKs and PINGRESPs apart from payload bytes. Written
 * here: only the framing is needed, and the bytes are forwarded as they came.
 */
class MqttFramer {
  private pending = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const packets: Buffer[] = [];
    for (;;) {
      let length = 0;
      let i = 1;
      for (let scale = 1; i < buf.length && i <= 4; i++, scale *= 128) {
        const b = buf[i] as number;
        length += (b & 127) * scale;
        if ((b & 128) === 0) break;
      }
      if (i >= buf.length || i > 4 || buf.length < i + 1 + length) break;
      packets.push(buf.subarray(0, i + 1 + length));
      buf = buf.subarray(i + 1 + length);
    }
    this.pending = Buffer.from(buf);
    return packets;
  }
}

const packetType = (packet: Buffer): number => (packet[0] as number) >> 4;

export async function startAckSwallowingProxy(scope: Scope, broker: MosquittoServer): Promise<AckSwallowingProxy> {
  const port = await freePort();
  interface Conn {
    client: NetSocket;
    upstream: NetSocket;
    swallow: boolean;
    /** Who sent each PINGREQ on its way to the broker, in order: the gateway (forward the answer) or the proxy (a barrier). */
    pings: (null | (() => void))[];
  }
  const open = new Set<Conn>();
  let pubacks = 0;
  const onPuback = new Set<() => void>();
  const server = createNetServer((client) => {
    const upstream = netConnect({ host: '127.0.0.1', port: broker.port });
    const conn: Conn = { client, upstream, swallow: false, pings: [] };
    open.add(conn);
    const fromClient = new MqttFramer();
    client.on('data', (d: Buffer) => {
      for (const packet of fromClient.push(d)) {
        if (conn.swallow) continue;
        upstream.write(packet);
        if (packetType(packet) === PINGREQ) conn.pings.push(null);
        if (packetType(packet) === PUBACK) {
          pubacks++;
          for (const f of onPuback) f();
        }
      }
    });
    const fromBroker = new MqttFramer();
    upstream.on('data', (d: Buffer) => {
      for (const packet of fromBroker.push(d)) {
        const barrier = packetType(packet) === PINGRESP ? conn.pings.shift() : null;
        if (barrier) barrier();
        else client.write(packet);
      }
    });
    const end = (): void => {
      open.delete(conn);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const brokerRead = (): Promise<unknown> =>
    Promise.all(
      [...open].map(
        (c) =>
          new Promise<void>((resolve) => {
            c.pings.push(resolve);
            c.upstream.write(PINGREQ_BYTES);
          }),
      ),
    );
  const proxy: AckSwallowingProxy = {
    url: `mqtt://127.0.0.1:${port}`,
    acknowledged: async (count, timeoutMs = 20_000) => {
      let listener: (() => void) | undefined;
      const passed = new Promise<void>((resolve) => {
        listener = () => {
          if (pubacks >= count) resolve();
        };
        onPuback.add(listener);
        listener();
      });
      try {
        await withTimeout(passed, timeoutMs, () => `${count} PUBACKs through the proxy (${pubacks} so far)`);
      } finally {
        if (listener) onPuback.delete(listener);
      }
      await withTimeout(brokerRead(), timeoutMs, 'the broker to answer a PINGREQ sent after the PUBACKs');
    },
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
