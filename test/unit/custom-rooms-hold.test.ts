/**
 * `subscribe_room` while Redis is unavailable (src/frappe/custom-rooms.ts):
 * held in the worker like the Frappe subscribe events, in the same
 * per-socket bound, and run, permission check included, once Redis answers;
 * `unsubscribe_room` cancels it, a disconnect drops it. Before, it was refused
 * at once and a page that subscribed during a cut stayed deaf to that room.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import pino from 'pino';
import { Registry, type Counter } from 'prom-client';
import type { Socket } from 'socket.io';
import type { FrappeBackend, RequestContext } from '../../src/frappe/backend';
import { registerCustomRooms, type CustomRoomsConfig } from '../../src/frappe/custom-rooms';
import {
  MAX_HELD_SUBSCRIPTIONS,
  registerFrappeHandlers,
  subscriptionHoldOf,
  type HandlerDeps,
  type SocketData,
} from '../../src/frappe/handlers';
import { createMetrics } from '../../src/metrics/metrics';
import { LocalPresence } from '../../src/presence/presence';

const SITE = 'site1.local';
const ctx: RequestContext = { site: SITE, credential: { kind: 'sid', value: 's1' }, origin: undefined };
const config: CustomRoomsConfig = {
  conflateBacklog: 0,
  keyPrefix: 'rtg-test:',
  redis: undefined,
  customRooms: [{ pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', latest: false, conflate: false }],
} as unknown as CustomRoomsConfig;

class FakeSocket extends EventEmitter {
  connected = true;
  recovered = false;
  readonly data: SocketData = { site: SITE, user: 'ana@example.com', user_type: 'System User' };
  readonly rooms = new Set<string>();
  readonly nsp = { to: () => ({ emit: () => true }) };
  constructor(readonly id: string) {
    super();
  }
  join(rooms: string | string[]): void {
    for (const r of typeof rooms === 'string' ? [rooms] : rooms) this.rooms.add(r);
  }
  leave(room: string): void {
    this.rooms.delete(room);
  }
  receive(event: string, ...args: unknown[]): void {
    super.emit(event, ...args);
  }
}

function setup() {
  const listeners: (() => void)[] = [];
  const redis = {
    up: true,
    back: () => {
      redis.up = true;
      for (const l of listeners) l();
    },
  };
  const checks: string[] = [];
  const backend = {
    canSubscribe: (_c: RequestContext, doctype: string, name?: string) => {
      checks.push(`${doctype}/${String(name)}`);
      return Promise.resolve(true);
    },
  } as unknown as FrappeBackend;
  const metrics = createMetrics(new Registry(), { defaults: false });
  const joined: string[] = [];
  const join = (s: Socket, rooms: string[]) => {
    joined.push(...rooms);
    s.join(rooms);
    return Promise.resolve();
  };
  const log = pino({ level: 'silent' });
  const handlerDeps: HandlerDeps = {
    join,
    backend,
    presence: new LocalPresence(),
    metrics,
    log,
    redisAvailable: () => redis.up,
    onRedisAvailable: (l) => void listeners.push(l),
  };
  const customDeps = { config, join, backend, metrics, log, redisAvailable: () => redis.up, hold: subscriptionHoldOf(handlerDeps) };
  const connect = (id: string): FakeSocket => {
    const socket = new FakeSocket(id);
    registerFrappeHandlers(socket as unknown as Socket, ctx, handlerDeps);
    registerCustomRooms(socket as unknown as Socket, ctx, customDeps);
    return socket;
  };
  return { redis, checks, metrics, joined, connect };
}

function call(socket: FakeSocket, event: string, ...args: unknown[]): Promise<unknown[]> {
  return new Promise((resolve) => socket.receive(event, ...args, (...ack: unknown[]) => resolve(ack)));
}

async function count(c: Counter, labels: Record<string, string>): Promise<number> {
  const v = (await c.get()).values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

test('subscribe_room during an outage is held and run once Redis answers, permission check included', async () => {
  const { redis, checks, metrics, joined, connect } = setup();
  const socket = connect('s1');
  redis.up = false;
  const held = call(socket, 'subscribe_room', 'sensor:42');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(checks, [], 'no backend call during the outage');
  assert.deepEqual(joined, []);
  assert.equal(await count(metrics.redisDeferred, { what: 'subscribe' }), 1);
  assert.equal(await count(metrics.clientEventsRefused, { event: 'subscribe_room', reason: 'redis_unavailable' }), 0);
  redis.back();
  assert.deepEqual(await held, [true]);
  assert.deepEqual(checks, ['Sensor/42']);
  assert.deepEqual(joined, ['sensor:42']);
  assert.ok(socket.rooms.has('sensor:42'));
});

test('unsubscribe_room cancels a held subscribe_room, a disconnect drops it, and it shares the per-socket bound', async () => {
  const { redis, joined, metrics, connect } = setup();
  const a = connect('a');
  const b = connect('b');
  const c = connect('c');
  redis.up = false;
  const cancelled = call(a, 'subscribe_room', 'sensor:1');
  assert.deepEqual(await call(a, 'unsubscribe_room', 'sensor:1'), [true]);
  assert.deepEqual(await cancelled, [false]);
  b.receive('subscribe_room', 'sensor:2');
  b.connected = false;
  b.receive('disconnect', 'transport close');
  for (let i = 0; i < MAX_HELD_SUBSCRIPTIONS; i++) c.receive('task_subscribe', `job-${i}`);
  assert.deepEqual(await call(c, 'subscribe_room', 'sensor:3'), [false], 'the socket already holds the maximum');
  assert.equal(await count(metrics.clientEventsRefused, { event: 'subscribe_room', reason: 'redis_unavailable' }), 1);
  redis.back();
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.ok(
    !joined.some((r) => r.startsWith('sensor:')),
    `no custom room joined (${joined.filter((r) => r.startsWith('sensor:')).join(', ')})`,
  );
  assert.equal(joined.filter((r) => r.startsWith('task_progress:')).length, MAX_HELD_SUBSCRIPTIONS);
});
