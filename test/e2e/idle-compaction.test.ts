/**
 * Compaction after a connect burst (GATEWAY_IDLE_COMPACT_MS,
 * GATEWAY_IDLE_COMPACT_CONNECTIONS): once a burst of connections is over,
 * every process that saw it (standalone; a cluster's primary, which routed
 * them, and its worker, which holds them) compacts its heap once, logs and
 * counts the pause, and the connected clients keep receiving events.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connectClient,
  EventRecorder,
  pollUntil,
  publishRedis,
  startGateway,
  startRedis,
  waitConnect,
  withScope,
  type GatewayHandle,
  type Scope,
} from '../harness';
import { newKeyPrefix, SITE, sidOf, startBackend, startHost, USERS } from './cluster-support';

const CLIENTS = 24;
const ENV = { GATEWAY_IDLE_COMPACT_MS: '300', GATEWAY_IDLE_COMPACT_CONNECTIONS: '20' };

async function burst(scope: Scope, gw: GatewayHandle): Promise<EventRecorder[]> {
  const sockets = Array.from({ length: CLIENTS }, (_, i) =>
    connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[i % USERS.length] ?? USERS[0]), transports: ['websocket'] }),
  );
  const recorders = sockets.map((s) => new EventRecorder(s));
  await Promise.all(sockets.map((s) => waitConnect(s)));
  return recorders;
}

/** The compactions counted so far; nothing announces one, so /metrics is polled (bounded). */
function compactions(gw: GatewayHandle, n: number): Promise<number> {
  return pollUntil(
    async () => {
      const c = (await gw.metricValue('gateway_idle_compaction_seconds_count')) ?? 0;
      return c >= n ? c : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 100, description: () => `${n} compaction(s); logs:\n${gw.logs.slice(-10).join('\n')}` },
  );
}

function compactionLogs(gw: GatewayHandle): Record<string, unknown>[] {
  return gw.jsonLogs().filter((l) => l['sub'] === 'memory' && typeof l['pauseMs'] === 'number');
}

test('standalone: one compaction after a burst, clients still served', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE, logLevel: 'info', env: ENV });
  const recorders = await burst(scope, gw);
  assert.equal(await compactions(gw, 1), 1);
  const logs = compactionLogs(gw);
  assert.equal(logs.length, 1, JSON.stringify(logs));
  assert.equal(typeof logs[0]?.['heapTotalAfter'], 'number');
  const res = await gw.publish({ event: 'after_compaction', message: 'still here', namespace: SITE, room: null });
  assert.equal(res.status, 202);
  for (const r of recorders) assert.equal(await r.waitFor('after_compaction'), 'still here');
});

test('cluster: the primary (routing) and the worker (holding the sockets) each compact once', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const gw = await startHost({
    scope,
    backend,
    keyPrefix: newKeyPrefix(),
    redisUrl: redis.url,
    workers: 1,
    env: { ...ENV, GATEWAY_LOG_LEVEL: 'info' },
  });
  const recorders = await burst(scope, gw);
  assert.equal(await compactions(gw, 2), 2);
  const roles = compactionLogs(gw)
    .map((l) => l['role'])
    .sort();
  assert.deepEqual(roles, ['primary', 'worker']);
  await publishRedis(redis.client(), 'events', { event: 'after_compaction', message: 'still here', namespace: SITE, room: null });
  for (const r of recorders) assert.equal(await r.waitFor('after_compaction'), 'still here');
});
