/**
 * A host cut off from Redis (TCP proxy blackholed, processes alive), once its
 * worker knows its connections are stalled: a client of another host that
 * dies meanwhile and reconnects to it is
 * refused at once with a retryable error (its session is left in Redis and
 * recovered after the heal, rooms intact), instead of waiting in the session
 * lookup for the whole cut; an app handler's `socket.to(room).emit` reaches
 * the worker's own clients at once and is counted, instead of queueing behind
 * the outage (docs/protocol.md section 6, deploy/runbooks.md "Host cut off
 * from Redis").
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  EventRecorder,
  connectClient,
  pollUntil,
  publishRedis,
  startFakeFrappe,
  startGateway,
  startRedis,
  uniqueKeyPrefix,
  waitConnect,
  withScope,
  withTimeout,
} from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';
import { ack, frontProxy, reconnected, recoveringClient } from './recovery-support';

const SITE = 'site1.local';
const APP = 'shouter';
/** An app handler that broadcasts to another user's room (any room the app picks). */
const HANDLERS = `module.exports = function (socket) {
  socket.on('shout', (room, done) => {
    socket.to(room).emit('shouted', { room });
    if (typeof done === 'function') done(true);
  });
};
`;
/** Long enough for several refused reconnection attempts (the client retries every 100-200 ms). */
const CUT_AFTER_STALL_MS = 4000;

test('cut off from Redis: a reconnecting client is refused at once and recovered after the heal; an app handler emit reaches local clients at once', async (t) => {
  const scope = withScope(t);
  const bench = mkdtempSync(path.join(os.tmpdir(), 'rtg-partition-bench-'));
  scope.add(() => rmSync(bench, { recursive: true, force: true }));
  mkdirSync(path.join(bench, 'apps', APP, 'realtime'), { recursive: true });
  mkdirSync(path.join(bench, 'sites'));
  writeFileSync(path.join(bench, 'apps', APP, 'realtime', 'handlers.js'), HANDLERS);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const frappe = await startFakeFrappe({ scope, installedApps: [APP] });
  frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User' });
  frappe.addSession('sid-bob', { user: 'bob@example.com', user_type: 'System User' });
  frappe.addSession('sid-carl', { user: 'carl@example.com', user_type: 'System User' });
  frappe.allow('*', 'ToDo');
  const keyPrefix = uniqueKeyPrefix();
  const host = (redisUrl: string) =>
    startGateway({
      scope,
      redisUrl,
      backendUrl: frappe.url,
      defaultSite: SITE,
      workers: 1,
      keyPrefix,
      extraEnv: {
        GATEWAY_BENCH_PATH: bench,
        // A heartbeat every second on the command connection: its stall is detected 3-4 s into the cut.
        GATEWAY_PRESENCE_TTL_MS: '3000',
        GATEWAY_SOCKET_SECRET: 'partition-secret',
        GATEWAY_MAX_CONNECTIONS_PER_USER: '0',
      },
    });
  // A reaches Redis through the proxy that is cut; B directly. Ana is on B until B dies, then goes to A.
  const gw = await host(proxy.url);
  const other = await host(redis.url);
  let otherUp = true;
  const front = await frontProxy(scope, () => (otherUp ? [other.port] : [gw.port]));
  const { socket: ana, rec: anaRec } = await recoveringClient(scope, `http://127.0.0.1:${front}`, 'sid-ana');
  assert.equal(await ack(ana, 'doc_subscribe', 'ToDo', 'T-1'), true);
  const local = (sid: string) => connectClient(gw.url, SITE, { scope, cookie: sid, origin: 'http://127.0.0.1', transports: ['websocket'] });
  const bob = local('sid-bob');
  const bobRec = new EventRecorder(bob);
  const carl = local('sid-carl');
  await Promise.all([waitConnect(bob), waitConnect(carl)]);

  proxy.blackhole();
  // The worker knows its command connection is stalled (announced nowhere else: a bounded poll of the log).
  await pollUntil(
    () =>
      gw.jsonLogs().some((l) => l['connection'] === 'pub' && String(l['msg']).startsWith('redis connection stalled')) ? true : undefined,
    { timeoutMs: 15_000, intervalMs: 100, description: "the worker to log its command connection's stall" },
  );

  // The app handler's broadcast to Bob's user room (same worker) arrives during the cut.
  const shouted = bobRec.waitFor('shouted', undefined, 3000);
  assert.equal(await carl.timeout(3000).emitWithAck('shout', 'user:bob@example.com'), true);
  assert.deepEqual(await shouted, { room: 'user:bob@example.com' }, 'delivered to the local client during the cut');

  // Ana's host dies (her session was saved in Redis before the cut); her reconnections to A are refused at once, each one.
  let attempts = 0;
  ana.io.on('reconnect_attempt', () => attempts++);
  const back = reconnected(ana);
  otherUp = false;
  await other.kill();
  const refused = await pollUntil(
    async () => {
      const n = (await gw.metricValue('gateway_session_recoveries_total', { result: 'redis_unavailable' })) ?? 0;
      return n >= 3 ? n : undefined;
    },
    { timeoutMs: CUT_AFTER_STALL_MS * 3, intervalMs: 100, description: 'three reconnections refused while the session cannot be read' },
  );
  assert.equal(ana.connected, false, 'not connected as a new client without its rooms');
  const unpublished = (await gw.metricValue('gateway_broadcasts_unpublished_total')) ?? 0;
  const connectRefusals = (await gw.metricValue('gateway_connect_errors_total', { reason: 'redis_unavailable' })) ?? 0;

  proxy.heal();
  await withTimeout(back, 20_000, 'Ana to reconnect after the heal');
  assert.equal(ana.recovered, true, 'the session left in Redis was recovered after the heal');
  await publishRedis(redis.client(), 'events', { event: 'doc_update', message: { n: 1 }, namespace: SITE, room: 'doc:ToDo/T-1' });
  assert.deepEqual(await anaRec.waitFor('doc_update', undefined, 10_000), { n: 1 }, 'its doc room is intact');

  assert.ok(attempts >= 3, `${attempts} reconnection attempts during the cut`);
  assert.ok(refused >= 3);
  assert.ok(connectRefusals >= 3, `gateway_connect_errors_total{reason="redis_unavailable"} = ${connectRefusals}`);
  assert.equal(unpublished, 1, 'gateway_broadcasts_unpublished_total counts the app handler emit');
});
