/**
 * The publish API's answers when Redis does not confirm, and idempotency keys
 * (README "Operations", issue 12 point 4): a publish whose reply is lost
 * answers 504 GW_ERR_PUBLISH_UNCONFIRMED, never 503, because Redis ran it and
 * the event is delivered; a retry with the same key is not delivered again,
 * a retry without one is; a key is forgotten after GATEWAY_IDEMPOTENCY_WINDOW_MS;
 * bad keys are 400. Standalone mode keeps the same rule in memory.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';
import {
  barrier,
  barrierPublish,
  connectClient,
  EventRecorder,
  pollUntil,
  publishRedis,
  startGateway,
  startRedis,
  uniqueKeyPrefix,
  waitConnect,
  withScope,
  type GatewayHandle,
} from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';
import { createKeys } from '../../src/redis/keys';
import { SITE, sidOf, startBackend, USERS } from './cluster-support';

const USER = USERS[0];
const ROOM = `user:${USER}`;
const TOKEN = 'idempotency-token';
/** GATEWAY_PUBLISH_TIMEOUT_MS of these tests: the unconfirmed answer comes after it. */
const PUBLISH_TIMEOUT_MS = 1000;

const order = (id: string, key?: string) => ({
  event: 'order_paid',
  message: { id },
  namespace: SITE,
  room: ROOM,
  ...(key === undefined ? {} : { idempotency_key: key }),
});
const isOrder = (id: string) => (payload: unknown) => (payload as { id?: unknown } | null)?.id === id;

/** Every earlier publish of the API has been delivered (the gateway keeps publish order) once this returns. */
function apiBarrier(gw: GatewayHandle, rec: EventRecorder): Promise<void> {
  return barrier(rec, {
    sendMarker: async (marker) => {
      const r = await gw.publish(barrierPublish(SITE, ROOM, marker));
      assert.equal(r.status, 202, JSON.stringify(r.body));
    },
  });
}

async function client(scope: ReturnType<typeof withScope>, gw: GatewayHandle): Promise<EventRecorder> {
  const socket = connectClient(gw.url, SITE, { scope, cookie: sidOf(USER) });
  const rec = new EventRecorder(socket);
  await waitConnect(socket);
  return rec;
}

test('a publish whose reply is withheld answers 504 unconfirmed, not 503, and is delivered; a retry with its idempotency key is not delivered again, one without a key is', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    redisUrl: proxy.url,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 1,
    publishToken: TOKEN,
    env: { GATEWAY_PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS) },
  });
  const rec = await client(scope, gw);
  await apiBarrier(gw, rec);

  for (const keyed of [true, false]) {
    const id = `order-${randomUUID()}`;
    const headers: Record<string, string> = keyed ? { 'idempotency-key': `pay-${id}` } : {};
    // Only the API's connection loses its replies: Redis runs the PUBLISH and
    // the leader (its own connections) broadcasts it.
    const withheld = proxy.withholdRepliesOn((chunk) => chunk.includes(id));
    const first = await gw.publish(order(id), { headers });
    await withheld;
    assert.equal(first.status, 504, JSON.stringify(first.body));
    const body = first.body as { error: string; message: string };
    assert.equal(body.error, 'GW_ERR_PUBLISH_UNCONFIRMED');
    assert.match(body.message, /may or may not be delivered/);
    assert.match(body.message, new RegExp(`within ${PUBLISH_TIMEOUT_MS} ms`));
    // What the 504 warns of: the event reached the clients.
    await rec.waitFor('order_paid', isOrder(id));
    proxy.heal();

    // The publisher retries, as a 504 tells it to.
    const retry = await gw.publish(order(id), { headers });
    assert.equal(retry.status, 202, JSON.stringify(retry.body));
    await apiBarrier(gw, rec);
    assert.equal(
      rec.count('order_paid', isOrder(id)),
      keyed ? 1 : 2,
      keyed ? 'the key dedupes the retry' : 'without a key the retry is a duplicate',
    );
  }
  assert.equal(await gw.metricValue('gateway_events_deduplicated_total'), 1);
  assert.equal(await gw.metricValue('gateway_publish_requests_total', { status: '504' }), 2);
  assert.equal(await gw.metricValue('gateway_publish_requests_total', { status: '503' }), 0);
});

test('idempotency keys: per event in a batch, also on the events channel; forgotten after the window; bad keys are 400 and deliver nothing', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = uniqueKeyPrefix();
  const gw = await startGateway({
    scope,
    redisUrl: redis.url,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 1,
    publishToken: TOKEN,
    keyPrefix,
    env: { GATEWAY_IDEMPOTENCY_WINDOW_MS: '1000' },
  });
  const rec = await client(scope, gw);
  await apiBarrier(gw, rec);
  const routedBefore = await gw.metricValue('gateway_events_routed_total', { target: 'room' });
  const run = randomUUID();
  const [a, b, c] = ['a', 'b', 'c'].map((x) => `${x}-${run}`) as [string, string, string];

  // A batch names a key per event; a batch re-sent with one more event delivers only that one.
  assert.equal((await gw.publish([order(a, a), order(b, b)])).status, 202);
  assert.equal((await gw.publish([order(a, a), order(b, b), order(c, c)])).status, 202);
  // Frappe publishing straight to Redis with the same field is deduplicated too.
  await publishRedis(redis.client(), 'events', order(c, c));
  await apiBarrier(gw, rec);
  for (const id of [a, b, c]) assert.equal(rec.count('order_paid', isOrder(id)), 1, id);
  assert.equal(await gw.metricValue('gateway_events_deduplicated_total', { by: 'idempotency_key' }), 3);
  // Routed counts what was broadcast: a, b, c and the barrier's marker, not the 3 duplicates.
  assert.equal((await gw.metricValue('gateway_events_routed_total', { target: 'room' })) ?? 0, (routedBefore ?? 0) + 4);

  // After the window the key is gone from Redis (nothing announces the
  // expiry: bounded poll) and the same key is delivered again.
  const admin = redis.client();
  const stored = createKeys(keyPrefix).idempotency(SITE, a);
  const ttl = await admin.pttl(stored);
  assert.ok(ttl > 0 && ttl <= 1000, `the key expires within the window (PTTL ${ttl})`);
  await pollUntil(async () => ((await admin.exists(stored)) === 0 ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 50,
    description: 'the idempotency key to expire',
  });
  assert.equal((await gw.publish(order(a, a))).status, 202);
  await apiBarrier(gw, rec);
  assert.equal(rec.count('order_paid', isOrder(a)), 2, 'a key reused after the window is delivered again');

  // Bad keys: 400 naming the field, nothing delivered.
  const bad = `bad-${run}`;
  const refusals: [unknown, Record<string, string>, string][] = [
    [order(bad, ''), {}, 'idempotency_key'],
    [order(bad, 'has space'), {}, 'idempotency_key'],
    [order(bad, 'x'.repeat(129)), {}, 'idempotency_key'],
    [order(bad, 'caf\u00e9'), {}, 'idempotency_key'],
    [{ ...order(bad), idempotency_key: 5 }, {}, 'idempotency_key'],
    [order(bad), { 'idempotency-key': 'x'.repeat(129) }, 'Idempotency-Key'],
    [[order(bad)], { 'idempotency-key': 'k1' }, 'Idempotency-Key'],
    [order(bad, 'k1'), { 'idempotency-key': 'k2' }, 'Idempotency-Key'],
  ];
  for (const [body, headers, field] of refusals) {
    const r = await gw.publish(body, { headers });
    assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 80)} ${JSON.stringify(headers).slice(0, 80)}: ${JSON.stringify(r.body)}`);
    assert.equal((r.body as { field?: string }).field, field, JSON.stringify(r.body));
  }
  // The header and the field may both be given when they agree.
  assert.equal((await gw.publish(order(`ok-${run}`, `ok-${run}`), { headers: { 'idempotency-key': `ok-${run}` } })).status, 202);
  // On the events channel a bad key is dropped and counted.
  await publishRedis(redis.client(), 'events', order(bad, 'no spaces allowed'));
  await apiBarrier(gw, rec);
  assert.equal(rec.count('order_paid', isOrder(bad)), 0);
  assert.equal(rec.count('order_paid', isOrder(`ok-${run}`)), 1);
  // Counted like every refused field: the five bad body fields of the API and the one on the channel (not the bad headers).
  assert.equal(await gw.metricValue('gateway_events_dropped_total', { reason: 'bad_idempotency_key' }), 6);
});

test('standalone: the same key within the window is delivered once, without a key every publish is', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, publishToken: TOKEN });
  const rec = await client(scope, gw);
  const id = `order-${randomUUID()}`;
  for (let i = 0; i < 3; i++) {
    assert.equal((await gw.publish(order(id), { headers: { 'idempotency-key': id } })).status, 202);
    assert.equal((await gw.publish(order(`${id}-nokey`))).status, 202);
  }
  await apiBarrier(gw, rec);
  assert.equal(rec.count('order_paid', isOrder(id)), 1);
  assert.equal(rec.count('order_paid', isOrder(`${id}-nokey`)), 3);
  assert.equal(await gw.metricValue('gateway_events_deduplicated_total', { by: 'idempotency_key' }), 2);
  // 1 keyed, 3 without a key and the barrier's marker.
  assert.equal(await gw.metricValue('gateway_events_routed_total', { target: 'room' }), 5);
});
