/**
 * Client limits at their thresholds, against the built standalone gateway:
 * each refusal is the documented one and is counted in
 * gateway_limit_exceeded_total{limit}.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, expectConnectError, pollUntil, startGateway, waitConnect, waitForEvent, withScope, type Socket } from '../harness';
import { SITE, sidOf, startBackend, USERS } from './cluster-support';

const ack = (s: Socket, event: string, ...args: unknown[]): Promise<boolean> =>
  new Promise((resolve) => s.emit(event, ...args, (ok: boolean) => resolve(ok)));

test('client events: the burst passes, the next event is acknowledged false and counted', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    env: { GATEWAY_CLIENT_EVENTS_PER_SEC: '1', GATEWAY_CLIENT_EVENTS_BURST: '5' },
  });
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  await waitConnect(s);
  const results = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => ack(s, 'task_subscribe', `task-${i}`)));
  assert.deepEqual(results, [true, true, true, true, true, false]);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'client_events' }), 1);
});

test('rooms per socket: joins up to the limit succeed (automatic rooms count), the next is refused and counted', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  // A System User starts in 3 automatic rooms: user, website, all.
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, env: { GATEWAY_MAX_ROOMS_PER_SOCKET: '5' } });
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  await waitConnect(s);
  assert.equal(await ack(s, 'task_subscribe', 'a'), true);
  assert.equal(await ack(s, 'task_subscribe', 'b'), true);
  assert.equal(await ack(s, 'task_subscribe', 'c'), false);
  assert.equal(await ack(s, 'task_subscribe', 'a'), true, 'a room it is already in costs nothing');
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'rooms_per_socket' }), 1);
});

test('connections per address: the limit-th connection is accepted, the next handshake is refused and counted; a close frees a slot', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, env: { GATEWAY_MAX_CONNECTIONS_PER_IP: '2' } });
  const a = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  const b = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[1]) });
  await Promise.all([waitConnect(a), waitConnect(b)]);
  const c = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[2]) });
  await expectConnectError(c);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_ip' }), 1);
  a.disconnect();
  await pollUntil(async () => ((await gw.cluster()) as { connections: number }).connections === 1 || undefined, {
    timeoutMs: 5000,
    intervalMs: 50,
    description: 'the closed connection to be released',
  });
  const d = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[3]) });
  await waitConnect(d);
});

test('handshake timeout: authentication slower than the limit closes the transport (no CONNECT_ERROR, so the client retries), counted', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, env: { GATEWAY_HANDSHAKE_TIMEOUT_MS: '300' } });
  backend.latencyMs = 1500;
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  const connectErrors: string[] = [];
  s.on('connect_error', (e: Error) => connectErrors.push(e.message));
  assert.equal(await waitForEvent(s, 'disconnect', { timeoutMs: 3000 }), 'transport close');
  assert.deepEqual(connectErrors, []);
  assert.equal(await gw.metricValue('gateway_limit_exceeded_total', { limit: 'handshake_timeout' }), 1);
  assert.equal(await gw.metricValue('gateway_connect_errors_total', { reason: 'handshake_timeout' }), 1);
});

test('oversized handshake headers are refused with HTTP 431 and the gateway keeps serving', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE });
  const res = await fetch(`${gw.url}/socket.io/?EIO=4&transport=polling`, { headers: { 'x-junk': 'x'.repeat(20 * 1024) } });
  assert.equal(res.status, 431);
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  await waitConnect(s);
});
