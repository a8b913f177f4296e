/**
 * Admission control of new connections: handshakes in flight per process
 * (GATEWAY_ADMISSION_CONCURRENCY): while the admitted handshakes are stuck
 * (their backend call hangs), exactly `concurrency` per worker are in flight
 * and every other one gets the HTTP 503, until they end; the host's bucket
 * (GATEWAY_ADMISSION_RATE / _BURST): a herd of clients arriving at once gets
 * exactly `burst` connections admitted. The refused get an HTTP 503 with the
 * documented body, which stock socket.io-client retries by itself until
 * everyone is connected; each refusal is counted once, and an established
 * client keeps receiving events throughout.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import {
  connectClient,
  EventRecorder,
  pollUntil,
  startGateway,
  startRedis,
  waitConnect,
  withScope,
  withTimeout,
  type GatewayHandle,
  type Scope,
  type Socket,
} from '../harness';
import { ADMISSION_REFUSAL } from '../../src/shared/admission';
import type { FakeFrappe } from '../harness/fake-frappe';
import type { RedisServer } from '../harness/redis';
import { newKeyPrefix, publishFrappe, SITE, sidOf, startBackend, startHost, userRoom, USERS } from './cluster-support';

/** What a refused attempt looks like to socket.io-client: a transport error of the Engine.IO handshake. */
interface TransportError {
  message: string;
  description?: unknown;
  context?: { responseText?: string };
}

interface HerdClient {
  socket: Socket;
  transport: 'polling' | 'websocket';
  /** The outcome of the first attempt: 'connect' or 'refused'. */
  first: Promise<'connect' | 'refused'>;
  /** Settles on the first successful connect, whatever failed before it. */
  connected: Promise<void>;
  errors: TransportError[];
}

function herdClient(scope: Scope, url: string, i: number, cookie = sidOf(USERS[i % USERS.length] as string)): HerdClient {
  const transport = i % 2 === 0 ? 'polling' : 'websocket';
  const socket = connectClient(url, SITE, {
    scope,
    cookie,
    reconnection: true,
    // polling = socket.io-client's default (polling, then upgrade), like a browser.
    ...(transport === 'websocket' ? { transports: ['websocket'] } : {}),
    ioOptions: { reconnectionDelay: 300, reconnectionDelayMax: 1000 },
  });
  const errors: TransportError[] = [];
  // The response body is read now: the client aborts the request right after.
  socket.on('connect_error', (err: TransportError) =>
    errors.push({ message: err.message, description: err.description, context: { responseText: err.context?.responseText ?? '' } }),
  );
  const first = new Promise<'connect' | 'refused'>((resolve) => {
    socket.once('connect', () => resolve('connect'));
    socket.once('connect_error', () => resolve('refused'));
  });
  const connected = new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, transport, first, connected, errors };
}

/** Every refusal a client saw is the admission 503, with the documented body where the transport exposes it. */
function assertAdmissionRefusal(c: HerdClient, err: TransportError): void {
  if (c.transport === 'polling') {
    assert.equal(err.message, 'xhr poll error');
    assert.equal(err.description, 503);
    assert.deepEqual(JSON.parse(err.context?.responseText ?? 'null'), ADMISSION_REFUSAL);
  } else {
    assert.equal(err.message, 'websocket error');
    assert.match(String((err.description as { message?: unknown } | undefined)?.message), /Unexpected server response: 503/);
  }
}

async function waitBucketFull(gw: GatewayHandle, burst: number): Promise<void> {
  await pollUntil(async () => ((await gw.metricValue('gateway_admission_tokens')) ?? 0) >= burst || undefined, {
    timeoutMs: 10_000,
    intervalMs: 100,
    description: `the admission bucket to hold ${burst} tokens`,
  });
}

/**
 * The herd: `n` clients at once against a full bucket of `burst`. Returns
 * the clients once every one of them is connected.
 */
async function herd(scope: Scope, gw: GatewayHandle, n: number, burst: number): Promise<HerdClient[]> {
  await waitBucketFull(gw, burst);
  const clients = Array.from({ length: n }, (_, i) => herdClient(scope, gw.url, i));
  const firsts = await Promise.all(clients.map((c) => c.first));
  assert.equal(firsts.filter((f) => f === 'connect').length, burst, `exactly the burst is admitted at once: ${firsts.join(', ')}`);
  // Nobody gives up: socket.io-client reconnects by itself until admitted.
  await withTimeout(
    Promise.all(clients.map((c) => c.connected)),
    60_000,
    'every client of the herd to be connected through its own reconnection',
  );
  for (const c of clients) for (const err of c.errors) assertAdmissionRefusal(c, err);
  const refusals = clients.reduce((n, c) => n + c.errors.length, 0);
  assert.ok(refusals >= n - burst, `at least the ${n - burst} not admitted at once were refused (${refusals})`);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }), refusals);
  assert.equal(await gw.metricValue('gateway_connect_errors_total', { reason: 'admission' }), refusals);
  return clients;
}

/** A host of 2 workers with these admission settings, its Redis and its backend. */
async function twoWorkers(
  t: TestContext,
  env: Record<string, string>,
): Promise<{ scope: Scope; redis: RedisServer; backend: FakeFrappe; gw: GatewayHandle }> {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const gw = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url, workers: 2, env });
  return { scope, redis, backend, gw };
}

/** A standalone gateway with these admission settings, and its backend. */
async function standalone(t: TestContext, env: Record<string, string>): Promise<{ scope: Scope; backend: FakeFrappe; gw: GatewayHandle }> {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, env });
  return { scope, backend, gw };
}

test('admission, 2 workers: a herd gets exactly the burst at once, the rest 503 and reconnect by themselves; an established client keeps receiving events', async (t) => {
  const burst = 3;
  // Pings every second: the established client's heartbeats run during the herd too.
  const { scope, redis, gw } = await twoWorkers(t, {
    GATEWAY_ADMISSION_RATE: '1',
    GATEWAY_ADMISSION_BURST: String(burst),
    GATEWAY_PING_INTERVAL_MS: '1000',
    GATEWAY_PING_TIMEOUT_MS: '2000',
  });
  const user = USERS[0] as string;
  const established = connectClient(gw.url, SITE, { scope, cookie: sidOf(user), transports: ['websocket'] });
  const rec = new EventRecorder(established);
  const disconnects: string[] = [];
  established.on('disconnect', (reason: string) => disconnects.push(reason));
  await waitConnect(established);
  let pings = 0;
  established.io.engine.on('ping', () => pings++);

  // Events for the established client all along the herd, every 50 ms.
  const pub = redis.client();
  let seq = 0;
  let publishing: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    const n = ++seq;
    publishing = publishing.then(() => publishFrappe(pub, 'tick', { n }, userRoom(user)));
  }, 50);
  const during = async (): Promise<{ herdMs: number; pingsDuringHerd: number }> => {
    try {
      await rec.waitForCount('tick', 1);
      const started = Date.now();
      const pingsBefore = pings;
      await herd(scope, gw, 8, burst);
      return { herdMs: Date.now() - started, pingsDuringHerd: pings - pingsBefore };
    } finally {
      clearInterval(timer);
    }
  };
  const { herdMs, pingsDuringHerd } = await during();
  // The herd lasts several seconds (5 refused clients, 1 token a second): the server's pings kept coming.
  assert.ok(herdMs >= 4000, `the herd took ${herdMs} ms`);
  assert.ok(pingsDuringHerd >= Math.floor(herdMs / 1000) - 2, `${pingsDuringHerd} pings in ${herdMs} ms`);
  await publishing;
  const last = seq;
  const ticks = await rec.waitForCount('tick', last);
  assert.deepEqual(
    ticks.map((r) => (r.args[0] as { n: number }).n),
    Array.from({ length: last }, (_, i) => i + 1),
    'every event, in order, during the herd',
  );
  assert.ok(last >= 20, `events were published throughout the herd (${last})`);
  assert.deepEqual(disconnects, []);
  assert.equal(established.connected, true);
});

test('admission, standalone: the same bucket in front of Engine.IO', async (t) => {
  const burst = 2;
  const { scope, gw } = await standalone(t, { GATEWAY_ADMISSION_RATE: '1', GATEWAY_ADMISSION_BURST: String(burst) });
  await herd(scope, gw, 5, burst);
});

test('admission off (rate 0, concurrency 0): a herd larger than any burst or bound connects at once', async (t) => {
  const { scope, gw } = await standalone(t, {
    GATEWAY_ADMISSION_RATE: '0',
    GATEWAY_ADMISSION_BURST: '1',
    GATEWAY_ADMISSION_CONCURRENCY: '0',
  });
  const clients = Array.from({ length: 6 }, (_, i) => herdClient(scope, gw.url, i));
  assert.deepEqual(await Promise.all(clients.map((c) => c.first)), Array(6).fill('connect'));
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }), 0);
});

/** A credential whose get_user_info never answers: a handshake using it stays in flight. */
const STUCK_SID = 'sid-stuck-herd';

/**
 * The concurrency bound: `n` clients whose handshakes get stuck in the
 * backend against `slots` slots in total. Exactly `n - slots` are refused at
 * their first attempt, exactly `slots` stay in flight (and no client
 * connects) while the refused keep retrying; once the stuck ones leave, every
 * slot is free again and a herd with a working credential connects by itself.
 */
async function stuckHerd(scope: Scope, gw: GatewayHandle, backend: FakeFrappe, n: number, slots: number): Promise<void> {
  backend.addSession(STUCK_SID, { user: USERS[0] as string, user_type: 'System User' });
  backend.setFailure(STUCK_SID, 'hang');
  const stuck = Array.from({ length: n }, (_, i) => herdClient(scope, gw.url, i, STUCK_SID));
  const outcomes: ('connect' | 'refused')[] = [];
  for (const c of stuck) void c.first.then((f) => outcomes.push(f));
  await pollUntil(async () => outcomes.length >= n - slots || undefined, {
    timeoutMs: 30_000,
    intervalMs: 50,
    description: `${n - slots} clients refused at their first attempt`,
  });
  // The refused retry (300-1,000 ms backoff) and are refused again: wait for a second round of refusals.
  await pollUntil(
    async () => ((await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' })) ?? 0) >= 2 * (n - slots) || undefined,
    {
      timeoutMs: 30_000,
      intervalMs: 100,
      description: 'the refused clients to be refused again on retry',
    },
  );
  assert.deepEqual(outcomes, Array(n - slots).fill('refused'), 'nobody connected, exactly the slots are held');
  assert.equal(await gw.metricValue('gateway_admission_in_flight'), slots);
  for (const c of stuck) for (const err of c.errors) assertAdmissionRefusal(c, err);
  // The refused clients are still retrying. Every refusal a client has seen was counted before it was sent;
  // one counted may not have reached its client yet (at most one in flight per refused client).
  const seen = (): number => stuck.reduce((a, c) => a + c.errors.length, 0);
  const seenBefore = seen();
  const counted = (await gw.metricValue('gateway_connect_errors_total', { reason: 'admission' })) ?? 0;
  const seenAfter = seen();
  assert.ok(
    counted >= seenBefore && counted <= seenAfter + (n - slots),
    `${counted} refusals counted; the clients had seen ${seenBefore} before the scrape, ${seenAfter} after`,
  );
  // The stuck clients leave: their transports close, which ends their handshakes.
  for (const c of stuck) c.socket.close();
  await pollUntil(async () => (await gw.metricValue('gateway_admission_in_flight')) === 0 || undefined, {
    timeoutMs: 10_000,
    intervalMs: 100,
    description: 'every slot to be free once the stuck handshakes closed',
  });
  const refusedBefore = (await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' })) ?? 0;
  const herdOk = Array.from({ length: n }, (_, i) => herdClient(scope, gw.url, i));
  await withTimeout(
    Promise.all(herdOk.map((c) => c.connected)),
    60_000,
    'every client with a working credential to be connected through its own reconnection',
  );
  for (const c of herdOk) for (const err of c.errors) assertAdmissionRefusal(c, err);
  assert.equal(
    await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }),
    refusedBefore + herdOk.reduce((a, c) => a + c.errors.length, 0),
  );
  assert.equal(await gw.metricValue('gateway_admission_in_flight'), 0, 'connected handshakes hold no slot');
}

test('admission concurrency without a queue, 2 workers: exactly GATEWAY_ADMISSION_CONCURRENCY handshakes in flight per worker, the rest 503 until one ends', async (t) => {
  // No bucket; the handshake deadline far away, so the stuck handshakes stay in flight for the whole test.
  const { scope, backend, gw } = await twoWorkers(t, {
    GATEWAY_ADMISSION_RATE: '0',
    GATEWAY_ADMISSION_CONCURRENCY: '2',
    // No queue: beyond the slots, refused at once.
    GATEWAY_ADMISSION_QUEUE: '0',
    GATEWAY_HANDSHAKE_TIMEOUT_MS: '120000',
  });
  await stuckHerd(scope, gw, backend, 7, 4);
});

test('admission concurrency, standalone: the same bound in front of Engine.IO', async (t) => {
  const { scope, backend, gw } = await standalone(t, {
    GATEWAY_ADMISSION_RATE: '0',
    GATEWAY_ADMISSION_CONCURRENCY: '3',
    GATEWAY_ADMISSION_QUEUE: '0',
    GATEWAY_HANDSHAKE_TIMEOUT_MS: '120000',
  });
  await stuckHerd(scope, gw, backend, 6, 3);
});

/** Polls a metric of `gw` until `ok` holds for its value. */
async function metricUntil(
  gw: GatewayHandle,
  name: string,
  labels: Record<string, string> | undefined,
  ok: (v: number) => boolean,
  description: string,
): Promise<void> {
  await pollUntil(async () => ok((await gw.metricValue(name, labels)) ?? 0) || undefined, {
    timeoutMs: 30_000,
    intervalMs: 50,
    description,
  });
}

/** `concurrency` slots per worker, up to `queue` handshakes waiting `waitMs`; no bucket; stuck handshakes stay stuck. */
const queueEnv = (concurrency: number, queue: number, waitMs: number): Record<string, string> => ({
  GATEWAY_ADMISSION_RATE: '0',
  GATEWAY_ADMISSION_CONCURRENCY: String(concurrency),
  GATEWAY_ADMISSION_QUEUE: String(queue),
  GATEWAY_ADMISSION_QUEUE_MS: String(waitMs),
  GATEWAY_HANDSHAKE_TIMEOUT_MS: '120000',
});

const waits = (gw: GatewayHandle, result: string): Promise<number | undefined> =>
  gw.metricValue('gateway_admission_queue_waits_total', { result });

/**
 * Stuck handshakes (their backend call hangs) take all `slots` slots; the
 * returned clients hold them until closed.
 */
async function fillSlots(scope: Scope, gw: GatewayHandle, backend: FakeFrappe, slots: number): Promise<HerdClient[]> {
  backend.addSession(STUCK_SID, { user: USERS[0] as string, user_type: 'System User' });
  backend.setFailure(STUCK_SID, 'hang');
  const stuck = Array.from({ length: slots }, (_, i) => herdClient(scope, gw.url, 2 * i + 1, STUCK_SID));
  await metricUntil(gw, 'gateway_admission_in_flight', undefined, (v) => v === slots, `${slots} stuck handshakes in flight`);
  return stuck;
}

test('admission queue, 2 workers: with every slot taken a new client waits in the primary and connects when a slot frees, no 503; beyond the queue it gets the 503 at once', async (t) => {
  const { scope, backend, gw } = await twoWorkers(t, queueEnv(1, 1, 60_000));
  const stuck = await fillSlots(scope, gw, backend, 2);
  // websocket clients (odd index): the wait is the upgrade request's.
  const waiter = herdClient(scope, gw.url, 1);
  let waiterDone = false;
  void waiter.first.then(() => (waiterDone = true));
  await metricUntil(gw, 'gateway_admission_queue', undefined, (v) => v === 1, 'the new client waiting in the queue');
  const beyond = herdClient(scope, gw.url, 3);
  assert.equal(await beyond.first, 'refused', 'the queue holds 1: the next one is refused at once');
  beyond.socket.close();
  assert.equal(beyond.errors.length, 1);
  assertAdmissionRefusal(beyond, beyond.errors[0] as TransportError);
  assert.equal(await waits(gw, 'full'), 1);
  assert.equal(waiterDone, false, 'the waiting client neither connected nor failed while every slot stayed taken');
  assert.equal(await gw.metricValue('gateway_admission_in_flight'), 2);

  // One stuck handshake ends: its slot goes to the waiting client.
  (stuck[0] as HerdClient).socket.close();
  assert.equal(await waiter.first, 'connect');
  assert.deepEqual(waiter.errors, [], 'no 503, no retry');
  assert.equal(await waits(gw, 'admitted'), 1);
  assert.equal(await gw.metricValue('gateway_admission_queue'), 0);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }), 1, 'the one refused beyond the queue');
  assert.equal((await waits(gw, 'expired')) ?? 0, 0);
  (stuck[1] as HerdClient).socket.close();
  await metricUntil(gw, 'gateway_admission_in_flight', undefined, (v) => v === 0, 'every slot free again');
});

test('admission queue, standalone: a client that leaves while waiting frees nothing and is forgotten; the next ones get the freed slot, oldest first', async (t) => {
  const { scope, backend, gw } = await standalone(t, queueEnv(1, 5, 60_000));
  const [stuck] = await fillSlots(scope, gw, backend, 1);
  const leaver = herdClient(scope, gw.url, 1);
  await metricUntil(gw, 'gateway_admission_queue', undefined, (v) => v === 1, 'the first client waiting');
  leaver.socket.close();
  await metricUntil(gw, 'gateway_admission_queue', undefined, (v) => v === 0, 'the client that left forgotten by the queue');
  assert.equal(await waits(gw, 'closed'), 1);
  assert.equal(await gw.metricValue('gateway_admission_in_flight'), 1, 'it took no slot and freed none');

  // First in the queue a handshake that will get stuck too, then a polling client with a working credential.
  const older = herdClient(scope, gw.url, 3, STUCK_SID);
  await metricUntil(gw, 'gateway_admission_queue', undefined, (v) => v === 1, 'the stuck-to-be client waiting');
  const polling = herdClient(scope, gw.url, 0);
  let pollingDone = false;
  void polling.first.then(() => (pollingDone = true));
  await metricUntil(gw, 'gateway_admission_queue', undefined, (v) => v === 2, 'two clients waiting');
  stuck?.socket.close();
  // The freed slot goes to the oldest waiting: it gets stuck, the polling client keeps waiting.
  await metricUntil(gw, 'gateway_admission_queue_waits_total', { result: 'admitted' }, (v) => v === 1, 'the oldest admitted');
  assert.equal(await gw.metricValue('gateway_admission_queue'), 1);
  assert.equal(await gw.metricValue('gateway_admission_in_flight'), 1);
  assert.equal(pollingDone, false, 'the younger client did not jump the queue');
  older.socket.close();
  assert.equal(await polling.first, 'connect');
  assert.deepEqual(polling.errors, []);
  assert.equal(await waits(gw, 'admitted'), 2);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }), 0, 'nobody was refused');
  await metricUntil(gw, 'gateway_admission_in_flight', undefined, (v) => v === 0, 'every slot free again');
});

test('admission queue, standalone: with the slot held past GATEWAY_ADMISSION_QUEUE_MS a waiting client gets the 503 and retries', async (t) => {
  const { scope, backend, gw } = await standalone(t, queueEnv(1, 5, 300));
  const [stuck] = await fillSlots(scope, gw, backend, 1);
  const late = herdClient(scope, gw.url, 0);
  assert.equal(await late.first, 'refused');
  assertAdmissionRefusal(late, late.errors[0] as TransportError);
  assert.ok(((await waits(gw, 'expired')) ?? 0) >= 1);
  // It keeps retrying (each retry waits and expires) until the slot frees, then connects.
  stuck?.socket.close();
  await withTimeout(late.connected, 30_000, 'the refused client to connect by its own reconnection once the slot freed');
  for (const err of late.errors) assertAdmissionRefusal(late, err);
  assert.equal(await waits(gw, 'expired'), late.errors.length, 'every refusal was an expired wait');
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'admission' }), late.errors.length);
});
