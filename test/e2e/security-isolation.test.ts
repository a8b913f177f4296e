/**
 * Security properties of the built gateway (SECURITY.md): a client of site A
 * never joins or receives site B rooms whatever it sends (forged site header,
 * mismatching Origin, another namespace, room names naming the other site),
 * and the ops API (publish and cluster) refuses callers without the token.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertNotReceived,
  barrierPublish,
  connectClient,
  EventRecorder,
  expectConnectError,
  startFakeFrappe,
  startGateway,
  waitConnect,
  withScope,
  type Socket,
} from '../harness';

const SITE_A = 'site1.local';
const SITE_B = 'site2.local';
const USER = 'ana@example.com';
const TOKEN = 'sekret-publish-token';

const ack = (s: Socket, event: string, ...args: unknown[]): Promise<boolean> =>
  new Promise((resolve) => s.emit(event, ...args, (ok: boolean) => resolve(ok)));

test('cross-site isolation: a site A client can neither connect to, join nor receive site B, whatever it sends', async (t) => {
  const scope = withScope(t);
  const frappe = await startFakeFrappe({ scope });
  frappe.addSession('sid-ana', { user: USER, user_type: 'System User' });
  frappe.allow('*', 'ToDo');
  const gw = await startGateway({ scope, backendUrl: frappe.url, defaultSite: SITE_A, publishToken: TOKEN });

  // The namespace must be the site the request resolves to; a forged header only moves the resolution.
  const forged = connectClient(gw.url, SITE_A, { scope, cookie: 'sid-ana', headers: { 'X-Frappe-Site-Name': SITE_B } });
  assert.equal(await expectConnectError(forged), 'Invalid namespace');
  const otherNsp = connectClient(gw.url, SITE_B, { scope, cookie: 'sid-ana' });
  assert.equal(await expectConnectError(otherNsp), 'Invalid namespace');
  const badOrigin = connectClient(gw.url, SITE_A, { scope, cookie: 'sid-ana', origin: `http://${SITE_B}` });
  assert.equal(await expectConnectError(badOrigin), 'Invalid origin');

  // A site B connection is authenticated by site B's backend, never with site A's answer.
  const b = connectClient(gw.url, SITE_B, { scope, cookie: 'sid-ana', headers: { 'X-Frappe-Site-Name': SITE_B } });
  const recB = new EventRecorder(b);
  await waitConnect(b);
  const call = await frappe.waitForCall('get_user_info', (r) => r.headers['x-frappe-site-name'] === SITE_B);
  assert.equal(call.headers['x-frappe-site-name'], SITE_B);

  const a = connectClient(gw.url, SITE_A, { scope, cookie: 'sid-ana' });
  const recA = new EventRecorder(a);
  await waitConnect(a);
  // Room names that spell the other site are only names inside site A's namespace.
  assert.equal(await ack(a, 'doc_subscribe', 'ToDo', 'T-1'), true);
  assert.equal(await ack(a, 'doctype_subscribe', 'ToDo'), true);
  assert.equal(await ack(a, 'task_subscribe', `/${SITE_B}#user:${USER}`), true);
  assert.equal(await ack(b, 'doc_subscribe', 'ToDo', 'T-1'), true);
  assert.equal(await ack(b, 'doctype_subscribe', 'ToDo'), true);

  // (An event without a room goes to every site: Frappe's "all sites" broadcast, by design; not tested here.)
  const forB = [`user:${USER}`, 'doc:ToDo/T-1', 'doctype:ToDo', 'all', 'website'];
  for (const room of forB) {
    const r = await gw.publish({ event: 'site_b_only', message: { room }, namespace: SITE_B, room });
    assert.equal(r.status, 202);
  }
  await assertNotReceived(recA, 'site_b_only', undefined, {
    sendMarker: (m) => gw.publish(barrierPublish(SITE_A, `user:${USER}`, m)),
    witness: { recorder: recB, event: 'site_b_only', predicate: (p) => (p as { room: unknown }).room === 'website' },
  });
  assert.equal(recB.count('site_b_only'), forB.length, 'site B received every one of them');
});

test('ops API: publish and cluster endpoints refuse a missing or wrong token (401) and accept the right one', async (t) => {
  const scope = withScope(t);
  const frappe = await startFakeFrappe({ scope });
  const gw = await startGateway({ scope, backendUrl: frappe.url, defaultSite: SITE_A, publishToken: TOKEN });
  const event = JSON.stringify({ event: 'x', message: 1, namespace: SITE_A, room: 'website' });
  const cases: { path: string; method: string; body?: string }[] = [
    { path: '/api/v1/publish', method: 'POST', body: event },
    { path: '/api/v1/cluster', method: 'GET' },
    { path: `/api/v1/cluster/rooms?site=${SITE_A}&room=website`, method: 'GET' },
  ];
  for (const c of cases) {
    const base = { method: c.method, ...(c.body === undefined ? {} : { body: c.body }) };
    const json: Record<string, string> = c.body === undefined ? {} : { 'content-type': 'application/json' };
    const none = await gw.opsRequest(c.path, { ...base, headers: json });
    assert.equal(none.status, 401, `${c.path} without a token: ${none.body}`);
    const wrong = await gw.opsRequest(c.path, { ...base, headers: { ...json, authorization: 'Bearer not-the-token' } });
    assert.equal(wrong.status, 401, `${c.path} with a wrong token`);
    const basic = await gw.opsRequest(c.path, { ...base, headers: { ...json, authorization: `Basic ${TOKEN}` } });
    assert.equal(basic.status, 401, `${c.path} with the token in another scheme`);
    const right = await gw.opsRequest(c.path, { ...base, headers: { ...json, authorization: `Bearer ${TOKEN}` } });
    assert.ok(right.status === 200 || right.status === 202, `${c.path} with the token: ${right.status} ${right.body}`);
  }
  assert.equal(await gw.metricValue('gateway_publish_requests_total', { status: '401' }), 3);
});
