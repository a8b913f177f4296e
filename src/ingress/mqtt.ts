/**
 * MQTT ingress (docs/mqtt.md). Only the events leader holds the broker
 * subscription; every message it maps to a Frappe event is published on the
 * Redis events channel, so it is sequenced, fenced, kept for replay and
 * broadcast exactly like Frappe's own events. A QoS 1 message is acknowledged
 * to the broker only after that publish succeeded; the broker session (one
 * client id for the whole cluster, clean session off) moves to the next
 * leader, which receives what was not acknowledged. A redelivery of a message
 * that was published but not acknowledged (leader crash in between) is
 * recognised by a Redis marker set atomically with the publish.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { connect, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { GatewayConfig, MqttConfig } from '../config';
import { compileRoomPattern, findRoomPattern, latestKey, type RoomPattern } from '../events/room-patterns';
import type { Metrics } from '../metrics/metrics';
import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import { errorMessage } from '../shared/errors';
import { RateLimitedLog, type Logger } from '../shared/logger';
import { mapMessage, MQTT_DROP_REASONS, NO_RULE } from './mqtt-rules';

/** The MQTT ingress's slice of the configuration. */
export type IngressConfig = Pick<GatewayConfig, 'customRooms' | 'dropLogIntervalMs' | 'eventsChannel' | 'latestTtlMs' | 'maxMessageBytes'>;

/** How often leadership is checked (the leader consumer has no change callback). */
const LEADER_POLL_MS = 100;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 10_000;
/** A redelivery within this time of the first delivery is recognised as one. */
const SEEN_TTL_MS = 60_000;
const KEEPALIVE_S = 30;
/** Messages read from the broker and not yet settled in Redis; beyond it the broker connection is not read. */
const MAX_PENDING = 1000;

/** Outcome of the Redis publish of each QoS 1 message not acknowledged yet, by packet id. */
type AckGates = Map<number, Promise<boolean>>;

interface SendPacket {
  _sendPacket(packet: { cmd: string; messageId?: number }, cb?: (err?: Error) => void, ...rest: unknown[]): void;
}

/**
 * mqtt.js (5.16.0, lib/handlers/publish.js) sends a QoS 1 PUBACK from the
 * callback of `handleMessage` and reads the next packet only after that
 * send. To keep reading while the acknowledgement waits for Redis, the
 * PUBACK of a gated packet id is written once its publish succeeded (never
 * when it failed: the broker redelivers), and the read loop goes on at once.
 * Outcomes settle in arrival order, so PUBACKs keep the order MQTT requires.
 */
function gateAcks(client: MqttClient, gates: AckGates, stillCurrent: () => boolean): void {
  const internals = client as unknown as SendPacket;
  const send = internals._sendPacket.bind(client);
  internals._sendPacket = (packet, cb, ...rest) => {
    const gate = packet.cmd === 'puback' && packet.messageId !== undefined ? gates.get(packet.messageId) : undefined;
    if (!gate || packet.messageId === undefined) {
      send(packet, cb, ...rest);
      return;
    }
    gates.delete(packet.messageId);
    cb?.();
    void gate.then((ok) => {
      if (ok && stillCurrent()) send(packet, undefined, ...rest);
    });
  };
}

/**
 * KEYS[1] seen marker, KEYS[2] latest value. ARGV: channel, event JSON,
 * dedupe (1/0), keep latest (1/0), seen TTL, latest TTL. Returns 1 when
 * published, 0 for a redelivery already published.
 */
const INGEST = `
if ARGV[3] == '1' and not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[5]) then return 0 end
if ARGV[4] == '1' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[6]) end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
`;

type IngestClient = RedisClient & {
  gwMqttIngest(
    seen: string,
    latest: string,
    channel: string,
    payload: string,
    dedupe: string,
    keep: string,
    seenTtl: number,
    latestTtl: number,
  ): Promise<number>;
};

export type MqttState = 'standby' | 'connecting' | 'connected' | 'reconnecting';

export interface MqttIngressDeps {
  readonly config: IngressConfig;
  readonly mqtt: MqttConfig;
  readonly keys: Keys;
  /** Command connection (not a subscriber). */
  readonly cmd: RedisClient;
  /** True while this process is the events leader. */
  readonly isLeader: () => boolean;
  readonly metrics: Metrics;
  readonly log: Logger;
}

export interface MqttReport {
  readonly state: MqttState;
  readonly broker: string;
  readonly subscriptions: number;
  readonly lastError?: string;
}

export class MqttIngress {
  private client: MqttClient | null = null;
  private state: MqttState = 'standby';
  private lastError: string | undefined;
  private backoff = BACKOFF_MIN_MS;
  private retry: NodeJS.Timeout | null = null;
  private poll: NodeJS.Timeout | null = null;
  private pending = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly latestRooms: RoomPattern[];
  private readonly subscriptions: Map<string, 0 | 1>;
  private readonly dropLog: RateLimitedLog;
  private readonly redis: IngestClient;

  constructor(private readonly d: MqttIngressDeps) {
    this.dropLog = new RateLimitedLog(d.log, d.config.dropLogIntervalMs);
    this.latestRooms = d.config.customRooms.filter((r) => r.latest).map(compileRoomPattern);
    this.subscriptions = new Map();
    for (const r of d.mqtt.rules) this.subscriptions.set(r.topic, Math.max(this.subscriptions.get(r.topic) ?? 0, r.qos) as 0 | 1);
    d.cmd.defineCommand('gwMqttIngest', { numberOfKeys: 2, lua: INGEST });
    this.redis = d.cmd as IngestClient;
    // Every series exists from the start, so rate() over a result that has not happened yet reads 0.
    for (const r of d.mqtt.rules) {
      for (const result of ['published', 'duplicate', 'redis_error', ...MQTT_DROP_REASONS.map((x) => `dropped_${x}`)]) {
        d.metrics.mqttMessages.inc({ rule: r.name, result }, 0);
      }
    }
    d.metrics.mqttMessages.inc({ rule: NO_RULE, result: 'dropped_no_rule' }, 0);
    d.metrics.mqttConnected.set(0);
  }

  start(): void {
    this.poll = setInterval(() => this.follow(), LEADER_POLL_MS);
    this.follow();
  }

  async stop(): Promise<void> {
    if (this.poll) clearInterval(this.poll);
    this.poll = null;
    await this.disconnect();
  }

  report(): MqttReport {
    const u = new URL(this.d.mqtt.url);
    return {
      state: this.state,
      broker: `${u.protocol}//${u.host}`,
      subscriptions: this.subscriptions.size,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
    };
  }

  /** Connects when this process became leader, disconnects when it stopped being one. */
  private follow(): void {
    const leading = this.d.isLeader();
    if (leading && this.state === 'standby') this.open();
    else if (!leading && this.state !== 'standby') {
      this.d.log.info('no longer events leader: leaving the MQTT broker');
      void this.disconnect();
    }
  }

  private open(): void {
    const m = this.d.mqtt;
    this.state = this.state === 'standby' ? 'connecting' : 'reconnecting';
    const opts: IClientOptions = {
      clientId: m.clientId,
      clean: m.cleanSession,
      protocolVersion: 4,
      keepalive: KEEPALIVE_S,
      // Reconnection is ours (capped exponential backoff, a fresh client each time).
      reconnectPeriod: 0,
      resubscribe: false,
      connectTimeout: 10_000,
      ...(m.username !== null ? { username: m.username } : {}),
      ...(m.password !== null ? { password: m.password } : {}),
    };
    const client = connect(m.url, opts);
    this.client = client;
    const gates: AckGates = new Map();
    gateAcks(client, gates, () => this.client === client);
    client.handleMessage = (packet, done) => this.onMessage(client, packet, done, gates);
    client.on('connect', (connack) => {
      if (this.client !== client) return;
      this.backoff = BACKOFF_MIN_MS;
      this.lastError = undefined;
      this.d.log.info({ broker: this.report().broker, sessionPresent: connack.sessionPresent }, 'MQTT connected');
      const subs: Record<string, { qos: 0 | 1 }> = {};
      for (const [topic, qos] of this.subscriptions) subs[topic] = { qos };
      client.subscribe(subs, (err, granted) => {
        if (err) {
          this.fail(client, `subscribe failed: ${errorMessage(err)}`);
          return;
        }
        const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
        if (refused.length > 0) this.d.log.error({ topics: refused }, 'MQTT broker refused subscriptions');
        if (this.client !== client) return;
        // Connected in readiness and metrics once the broker confirmed the subscriptions.
        this.state = 'connected';
        this.d.metrics.mqttConnected.set(1);
      });
    });
    client.on('error', (err) => {
      this.lastError = errorMessage(err);
    });
    client.on('close', () => {
      if (this.client !== client) return;
      this.fail(client, this.lastError ?? 'connection closed');
    });
  }

  /** Drops a failed connection and schedules a fresh one while still leader. */
  private fail(client: MqttClient, reason: string): void {
    if (this.client !== client) return;
    this.client = null;
    this.lastError = reason;
    this.d.metrics.mqttConnected.set(0);
    client.end(true);
    if (!this.d.isLeader() || this.poll === null) {
      this.state = 'standby';
      return;
    }
    this.state = 'reconnecting';
    const delay = this.backoff;
    this.backoff = Math.min(BACKOFF_MAX_MS, this.backoff * 2);
    this.d.log.warn({ reason, retryInMs: delay }, 'MQTT connection lost');
    this.retry = setTimeout(() => {
      this.retry = null;
      if (this.client === null && this.d.isLeader() && this.poll !== null) this.open();
      else if (this.client === null) this.state = 'standby';
    }, delay);
  }

  private disconnect(): Promise<void> {
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const client = this.client;
    this.client = null;
    this.state = 'standby';
    this.d.metrics.mqttConnected.set(0);
    if (!client) return Promise.resolve();
    // Forced: messages not acknowledged yet are redelivered to the next leader.
    return new Promise<void>((resolve) => client.end(true, {}, () => resolve()));
  }

  /**
   * Messages are published to Redis in arrival order on one connection, so
   * their outcomes arrive in order; the next message is read at once (up to
   * MAX_PENDING unsettled) while each QoS 1 acknowledgement waits, through
   * `gateAcks`, for its own publish.
   */
  private onMessage(client: MqttClient, packet: IPublishPacket, done: (err?: Error) => void, gates: AckGates): void {
    const outcome = this.ingest(client, packet);
    if (packet.qos === 1 && packet.messageId !== undefined) gates.set(packet.messageId, outcome);
    this.pending++;
    void outcome.finally(() => {
      this.pending--;
      this.waiting.shift()?.();
    });
    if (this.pending < MAX_PENDING) done();
    else this.waiting.push(() => done());
  }

  /** Resolves true once the message is published (or deliberately dropped): it may be acknowledged. */
  private ingest(client: MqttClient, packet: IPublishPacket): Promise<boolean> {
    const started = performance.now();
    const { metrics, config, keys } = this.d;
    const topic = packet.topic;
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : Buffer.from(packet.payload);
    const mapped = mapMessage(this.d.mqtt.rules, topic, payload, config.maxMessageBytes);
    if (!mapped.ok) {
      metrics.mqttMessages.inc({ rule: mapped.rule, result: `dropped_${mapped.reason}` });
      this.dropLog.warn(mapped.reason, { topic: topic.slice(0, 200), rule: mapped.rule, detail: mapped.detail }, 'MQTT message dropped');
      return Promise.resolve(true);
    }
    const e = mapped.event;
    const json = JSON.stringify({ event: e.event, message: e.message, room: e.room, namespace: e.namespace });
    if (Buffer.byteLength(json) > config.maxMessageBytes) {
      metrics.mqttMessages.inc({ rule: mapped.rule.name, result: 'dropped_oversized' });
      this.dropLog.warn('oversized', { topic: topic.slice(0, 200), rule: mapped.rule.name }, 'MQTT message dropped');
      return Promise.resolve(true);
    }
    const room = e.room ?? '';
    const site = e.namespace ?? '';
    const keep = this.latestRooms.length > 0 && findRoomPattern(this.latestRooms, room) !== null;
    // QoS 0 is at most once by definition: nothing to recognise.
    const dedupe = packet.qos > 0 && packet.messageId !== undefined;
    const digest = createHash('sha1')
      .update(topic)
      .update('\0')
      .update(payload)
      .update('\0')
      .update(String(packet.messageId ?? ''))
      .digest('hex');
    return this.redis
      .gwMqttIngest(
        `{${keys.prefix}}:mqtt:seen:${digest}`,
        latestKey(keys, site, room),
        config.eventsChannel,
        json,
        dedupe ? '1' : '0',
        keep ? '1' : '0',
        SEEN_TTL_MS,
        config.latestTtlMs,
      )
      .then(
        (published) => {
          metrics.mqttMessages.inc({ rule: mapped.rule.name, result: published === 1 ? 'published' : 'duplicate' });
          metrics.mqttLag.observe({ rule: mapped.rule.name }, (performance.now() - started) / 1000);
          return this.client === client;
        },
        (err: unknown) => {
          // Not acknowledged: the broker redelivers it on the next connection.
          metrics.mqttMessages.inc({ rule: mapped.rule.name, result: 'redis_error' });
          this.dropLog.warn('redis', { err: errorMessage(err) }, 'MQTT message not published to Redis: reconnecting for redelivery');
          this.fail(client, `redis publish failed: ${errorMessage(err)}`);
          return false;
        },
      );
  }
}
