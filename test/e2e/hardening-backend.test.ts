/**
 * Backend outage vs. refusal (docs/protocol.md section 6), against the built
 * gateway and the stock socket.io-client: while the backend is down (HTTP 5xx,
 * hanging) the client is never sent a CONNECT_ERROR, so it keeps retrying with
 * its own backoff and connects once the backend is back, without a page
 * reload; real refusals stay CONNECT_ERRORs with Frappe's messages and the
 * client stops. Permission checks of established sockets do not wait behind
 * hanging handshakes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connectClient,
  EventRecorder,
  expectConnectError,
  pollUntil,
  startGateway,
  waitForEvent,
  withScope,
  withTimeout,
  type Socket,
} from '../harness';
import { DOCTYPE, SITE, sidOf, startBackend, USERS } from './cluster-support';

/**
 * Resolves once the client's Manager has started `n` reconnection attempts.
 * Counted here: the Manager's own counter restarts whenever the transport
 * opened in between (a transport close resets its backoff).
 */
function attempts(s: Socket, n: number, timeoutMs: number): Promise<void> {
  let seen = 0;
  return withTimeout(
    new Promise<void>((resolve) => {
      s.io.on('reconnect_attempt', () => {
        if (++seen >= n) resolve();
      });
    }),
    timeoutMs,
    `reconnection attempt ${n}`,
  );
}

const ack = (s: Socket, event: string, ...args: unknown[]): Promise<boolean> =>
  new Promise((resolve) => s.emit(event, ...args, (ok: boolean) => resolve(ok)));

test('backend answering 5xx: the stock client keeps retrying (circuit opens, handshakes refused at Engine.IO) and connects once it is back', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    env: { GATEWAY_BACKEND_CIRCUIT_FAILURES: '2', GATEWAY_BACKEND_CIRCUIT_OPEN_MS: '1500' },
  });
  const user = USERS[0];
  backend.setFailure(sidOf(user), 'http500');
  // Stock options: reconnection on, default delays; nothing but the headers is ours.
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(user), reconnection: true });
  const errors: string[] = [];
  s.on('connect_error', (err: Error) => errors.push(err.message));
  await attempts(s, 3, 20_000);
  assert.equal(s.connected, false);
  assert.equal(s.active, true, 'the socket still wants to connect');
  assert.ok(!errors.some((m) => m.startsWith('Unauthorized')), `no CONNECT_ERROR for an outage: ${errors.join(' | ')}`);
  await gw.waitForLog(/backend circuit changed state.*"state":"open"|"state":"open".*backend circuit changed state/, 1000);
  assert.ok(((await gw.metricValue('gateway_connect_errors_total', { reason: 'backend_unavailable' })) ?? 0) >= 3);

  backend.setFailure(sidOf(user), null);
  await waitForEvent(s, 'connect', { timeoutMs: 20_000 });
  const rec = new EventRecorder(s);
  const res = await gw.publish({ event: 'back', message: 'online', namespace: SITE, room: `user:${user}` });
  assert.equal(res.status, 202);
  assert.equal(await rec.waitFor('back'), 'online');
  await pollUntil(async () => ((await gw.metricValue('gateway_backend_circuit_state')) === 0 ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 50,
    description: 'the circuit to close',
  });
});

test('backend hanging past the timeout: the transport is closed, the client retries and connects once the backend answers', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    env: { GATEWAY_BACKEND_TIMEOUT_MS: '300', GATEWAY_BACKEND_CIRCUIT_FAILURES: '0' },
  });
  const user = USERS[1];
  backend.setFailure(sidOf(user), 'hang');
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(user), reconnection: true });
  const reasons: string[] = [];
  s.on('disconnect', (reason: string) => reasons.push(reason));
  await attempts(s, 2, 20_000);
  assert.ok(reasons.includes('transport close'), `closed at the transport level: ${reasons.join(', ')}`);
  backend.setFailure(sidOf(user), null);
  await waitForEvent(s, 'connect', { timeoutMs: 20_000 });
  assert.ok(((await gw.metricValue('gateway_connect_errors_total', { reason: 'backend_unavailable' })) ?? 0) >= 2);
});

test('real refusals stay CONNECT_ERRORs with Frappe messages, and the stock client stops retrying', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE });
  const cases: { name: string; socket: Socket; message: string }[] = [
    {
      name: 'origin',
      socket: connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]), reconnection: true, origin: 'http://evil.example' }),
      message: 'Invalid origin',
    },
    {
      name: 'no credential',
      socket: connectClient(gw.url, SITE, { scope, reconnection: true }),
      message: 'No authentication method used. Use cookie or authorization header.',
    },
    {
      name: 'namespace',
      socket: connectClient(gw.url, 'other.site', { scope, cookie: sidOf(USERS[0]), reconnection: true }),
      message: 'Invalid namespace',
    },
    {
      name: 'bad token',
      socket: connectClient(gw.url, SITE, { scope, authorization: 'token nope:nope', reconnection: true }),
      message: 'Unauthorized: backend answered HTTP 401',
    },
  ];
  for (const c of cases) {
    assert.equal(await expectConnectError(c.socket, 20_000), c.message, c.name);
    assert.equal(c.socket.active, false, `${c.name}: the client gave up (no reconnection)`);
  }
  assert.equal(await gw.metricValue('gateway_connect_errors_total', { reason: 'backend_unavailable' }), undefined);
});

test('permission checks of established sockets are answered while handshakes hang in the backend', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    env: { GATEWAY_BACKEND_CONCURRENCY: '1', GATEWAY_BACKEND_TIMEOUT_MS: '30000', GATEWAY_BACKEND_CIRCUIT_FAILURES: '0' },
  });
  const established = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
  await waitForEvent(established, 'connect');
  const hanging = ['h1', 'h2', 'h3'];
  for (const sid of hanging) {
    backend.addSession(sid, { user: `${sid}@example.com`, user_type: 'System User' });
    backend.setFailure(sid, 'hang', 'get_user_info');
  }
  const waiting = hanging.map((sid) => connectClient(gw.url, SITE, { scope, cookie: sid }));
  // The one handshake slot is held by a call that never returns; the others queue behind it.
  await backend.waitForCall('get_user_info', (r) => /sid=h\d/.test(String(r.headers.cookie)), 5000);
  assert.equal(await withTimeout(ack(established, 'doc_subscribe', DOCTYPE, 'HANG-1'), 3000, 'doc_subscribe answer'), true);
  assert.equal(await withTimeout(ack(established, 'doctype_subscribe', DOCTYPE), 3000, 'doctype_subscribe answer'), true);
  assert.ok(
    waiting.every((w) => !w.connected),
    'the hanging handshakes are still pending',
  );
  assert.equal(backend.callsTo('get_user_info').filter((r) => /sid=h\d/.test(String(r.headers.cookie))).length, 1);
});
