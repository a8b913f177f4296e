/**
 * Session recovery across processes and hosts: Frappe's v15+ client never
 * re-subscribes after a reconnect, so the gateway gives a reconnecting
 * client its rooms and open documents back, whichever worker or host it
 * lands on. The stock socket.io-client does the asking (pid + offset).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  EventRecorder,
  assertNotReceived,
  barrierPublish,
  connectClient,
  pollUntil,
  publishRedis,
  startFakeFrappe,
  startGateway,
  startRedis,
  uniqueKeyPrefix,
  waitConnect,
  withScope,
  type GatewayHandle,
  type Scope,
} from '../harness';
import { ack, frontProxy, reconnected, recoveringClient } from './recovery-support';

const SITE = 'site1.local';

async function setup(scope: Scope, hosts: number, env: Record<string, string> = {}) {
  const redis = await startRedis({ scope });
  const frappe = await startFakeFrappe({ scope });
  frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User' });
  frappe.addSession('sid-bob', { user: 'bob@example.com', user_type: 'System User' });
  frappe.allow('*', 'ToDo');
  const keyPrefix = uniqueKeyPrefix();
  const gws: GatewayHandle[] = [];
  for (let i = 0; i < hosts; i++) {
    gws.push(
      await startGateway({
        scope,
        redisUrl: redis.url,
        backendUrl: frappe.url,
        defaultSite: SITE,
        workers: 2,
        keyPrefix,
        extraEnv: { GATEWAY_DRAIN_MS: '200', ...env },
      }),
    );
  }
  return { redis, frappe, gws, publisher: redis.client() };
}

test('a client whose host is stopped comes back on the other host with its rooms and open documents', async (t) => {
  const scope = withScope(t);
  const { redis, gws, publisher } = await setup(scope, 2);
  const [a, b] = gws as [GatewayHandle, GatewayHandle];
  let aUp = true;
  const front = await frontProxy(scope, () => (aUp ? [a.port, b.port] : [b.port]));
  const url = `http://127.0.0.1:${front}`;
  const origin = 'http://127.0.0.1';

  const ana = connectClient(url, SITE, {
    scope,
    cookie: 'sid-ana',
    origin,
    transports: ['websocket'],
    reconnection: true,
    ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
  });
  const rec = new EventRecorder(ana);
  await waitConnect(ana);
  await rec.waitFor('rtg_session', undefined, 5000);
  assert.equal(await ack(ana, 'doc_subscribe', 'ToDo', 'T-1'), true);
  assert.equal(await ack(ana, 'task_subscribe', 'task-9'), true);
  assert.equal(await ack(ana, 'doc_open', 'ToDo', 'T-1'), true);

  const back = reconnected(ana);
  aUp = false;
  await a.stop();
  await back;
  assert.equal(ana.recovered, true, 'the session was recovered');

  // Rooms joined before the restart receive events published after it.
  await publishRedis(publisher, 'events', { event: 'doc_update', message: { n: 1 }, namespace: SITE, room: 'doc:ToDo/T-1' });
  await publishRedis(publisher, 'events', { event: 'task_progress', message: { p: 50 }, namespace: SITE, room: 'task_progress:task-9' });
  assert.deepEqual(await rec.waitFor('doc_update', (m) => (m as { n?: number }).n === 1, 5000), { n: 1 });
  assert.deepEqual(await rec.waitFor('task_progress', undefined, 5000), { p: 50 });

  // Ana's open document is open on host B now: Bob sees her in doc_viewers.
  const bob = connectClient(url, SITE, { scope, cookie: 'sid-bob', origin, transports: ['websocket'] });
  const bobRec = new EventRecorder(bob);
  await waitConnect(bob);
  assert.equal(await ack(bob, 'doc_open', 'ToDo', 'T-1'), true);
  const viewers = (await bobRec.waitFor('doc_viewers', undefined, 5000)) as { users: string[] };
  assert.deepEqual(viewers.users, ['ana@example.com', 'bob@example.com']);
  assert.equal(await b.metricValue('gateway_session_recoveries_total', { result: 'restored' }), 1);
  void redis;
});

test('a worker crash: the session saved before the crash is restored on another worker', async (t) => {
  const scope = withScope(t);
  const { gws, publisher } = await setup(scope, 1);
  const gw = gws[0] as GatewayHandle;
  const { socket: ana, rec } = await recoveringClient(scope, gw.url, 'sid-ana');
  assert.equal(await ack(ana, 'doctype_subscribe', 'ToDo'), true);

  const cluster = await gw.cluster();
  const mine = (cluster.nodes as { kind: string; pid: number; connections: number }[]).find(
    (n) => n.kind === 'worker' && n.connections > 0,
  );
  // The heartbeat may not have reported the connection yet: fall back to asking each worker's pid.
  const pid =
    mine?.pid ??
    (await pollUntil(
      async () =>
        ((await gw.cluster()).nodes as { kind: string; pid: number; connections: number }[]).find(
          (n) => n.kind === 'worker' && n.connections > 0,
        )?.pid,
      { timeoutMs: 10000, intervalMs: 100, description: 'worker holding the connection' },
    ));
  const back = reconnected(ana);
  process.kill(pid, 'SIGKILL');
  await back;
  assert.equal(ana.recovered, true);
  await publishRedis(publisher, 'events', { event: 'list_update', message: { doctype: 'ToDo' }, namespace: SITE, room: 'doctype:ToDo' });
  assert.deepEqual(await rec.waitFor('list_update', undefined, 5000), { doctype: 'ToDo' });
});

test('a recovered session whose credential now belongs to another user inherits nothing', async (t) => {
  const scope = withScope(t);
  const { gws, publisher } = await setup(scope, 1);
  const gw = gws[0] as GatewayHandle;
  const headers: Record<string, string> = { Origin: gw.url, Cookie: 'sid=sid-ana' };
  const sock = connectClient(gw.url, SITE, {
    scope,
    transports: ['websocket'],
    reconnection: true,
    headers,
    ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
  });
  const rec = new EventRecorder(sock);
  await waitConnect(sock);
  await rec.waitFor('rtg_session', undefined, 5000);
  assert.equal(await ack(sock, 'doc_subscribe', 'ToDo', 'SECRET'), true);

  // Same tab, now logged in as Bob; the transport drops and the client asks for Ana's session.
  const opts = sock.io.opts as { extraHeaders?: Record<string, string> };
  opts.extraHeaders = { Origin: gw.url, Cookie: 'sid=sid-bob' };
  const back = reconnected(sock);
  (sock.io.engine as unknown as { close(): void }).close();
  await back;
  assert.equal(sock.recovered, true, 'the session was offered back (so the check below is meaningful)');
  await publishRedis(publisher, 'events', { event: 'doc_update', message: { secret: true }, namespace: SITE, room: 'doc:ToDo/SECRET' });
  await assertNotReceived(rec, 'doc_update', () => true, {
    sendMarker: (marker) => publishRedis(publisher, 'events', barrierPublish(SITE, 'user:bob@example.com', marker)),
  });
});

test('a reconnection refused because the backend is down keeps its session: the next attempt recovers it', async (t) => {
  const scope = withScope(t);
  // No auth cache: every handshake asks the backend.
  const { frappe, gws, publisher } = await setup(scope, 1, { GATEWAY_AUTH_CACHE_TTL_MS: '0' });
  const gw = gws[0] as GatewayHandle;
  const { socket: ana, rec } = await recoveringClient(scope, gw.url, 'sid-ana');
  assert.equal(await ack(ana, 'doc_subscribe', 'ToDo', 'T-1'), true);

  frappe.setFailure('sid-ana', 'http500');
  const refused = frappe.callsTo('get_user_info').length;
  const back = reconnected(ana);
  (ana.io.engine as unknown as { close(): void }).close();
  // At least one reconnection attempt reaches the failing backend and is refused.
  await pollUntil(
    async () => (((await gw.metricValue('gateway_connect_errors_total', { reason: 'backend_unavailable' })) ?? 0) >= 1 ? true : undefined),
    { timeoutMs: 10_000, intervalMs: 50, description: () => 'a reconnection refused as backend_unavailable' },
  );
  assert.ok(frappe.callsTo('get_user_info').length > refused);
  assert.equal(ana.connected, false);
  frappe.setFailure('sid-ana', null);
  await back;

  assert.equal(ana.recovered, true, 'the session survived the refused attempt');
  assert.ok(((await gw.metricValue('gateway_session_recoveries_total', { result: 'put_back' })) ?? 0) >= 1);
  assert.equal(rec.count('rtg_missed_updates'), 0);
  await publishRedis(publisher, 'events', { event: 'doc_update', message: { n: 7 }, namespace: SITE, room: 'doc:ToDo/T-1' });
  assert.deepEqual(await rec.waitFor('doc_update', undefined, 5000), { n: 7 });
});
