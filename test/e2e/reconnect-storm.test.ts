/**
 * A reconnect storm does not become a storm on Frappe: 200 clients sharing
 * four credentials, spread over two hosts of two workers, lose their
 * transports at once and reconnect (each reconnection authenticates again).
 * The backend answers slowly, so the lookups of one credential overlap on
 * every worker: the cluster asks get_user_info once per credential per
 * GATEWAY_AUTH_CACHE_TTL_MS.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, pollUntil, startRedis, waitConnect, withScope, type Socket } from '../harness';
import { GET_USER_INFO } from '../harness/fake-frappe';
import { newKeyPrefix, sidOf, SITE, startBackend, startHost, USERS, type ClusterInfo } from './cluster-support';
import { frontProxy, roundRobin } from './recovery-support';

const CLIENTS = 200;
const TTL_MS = 6000;

test(`${CLIENTS} clients with ${USERS.length} credentials reconnecting at once: one get_user_info per credential per auth-cache TTL, cluster-wide`, async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_AUTH_CACHE_TTL_MS: String(TTL_MS) };
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env })));
  const front = await frontProxy(
    scope,
    roundRobin(() => hosts.map((h) => h.port)),
  );
  const url = `http://127.0.0.1:${front}`;
  const sockets: Socket[] = Array.from({ length: CLIENTS }, (_, i) =>
    connectClient(url, SITE, {
      scope,
      cookie: sidOf(USERS[i % USERS.length] as string),
      origin: 'http://127.0.0.1',
      transports: ['websocket'],
      reconnection: true,
      ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
    }),
  );
  await Promise.all(sockets.map((s) => waitConnect(s, 20_000)));
  // Spread over all four workers (per their heartbeats).
  await pollUntil(
    async () => {
      const workers = (await Promise.all(hosts.map(async (h) => ((await h.cluster()) as ClusterInfo).workers))).flat();
      return workers.length === 4 && workers.every((w) => w.connections > 0) && workers.reduce((n, w) => n + w.connections, 0) === CLIENTS
        ? true
        : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: 'the clients spread over every worker' },
  );
  // Let every cached answer expire (the shared entries in Redis outlive the workers' own), then storm.
  const admin = redis.client();
  await pollUntil(async () => ((await admin.keys(`${keyPrefix}:auth:*`)).length === 0 ? true : undefined), {
    timeoutMs: TTL_MS + 5000,
    intervalMs: 50,
    description: 'the auth cache to expire',
  });
  backend.clearRequests();
  // Slow answers: every worker's lookups of a credential overlap.
  backend.latencyMs = 300;
  const back = sockets.map((s) => new Promise<void>((r) => s.once('disconnect', () => s.once('connect', () => r()))));
  const cutAt = Date.now();
  for (const s of sockets) (s.io.engine as unknown as { close(): void }).close();
  await Promise.all(back);
  const stormMs = Date.now() - cutAt;
  t.diagnostic(`${CLIENTS} reconnected in ${stormMs} ms`);
  const calls = new Map<string, number>();
  for (const r of backend.callsTo(GET_USER_INFO)) {
    const cookie = String(r.headers.cookie);
    calls.set(cookie, (calls.get(cookie) ?? 0) + 1);
  }
  assert.ok(stormMs < TTL_MS, `the storm fits in one TTL (${stormMs} ms), so the bound is one call per credential`);
  assert.deepEqual(
    Object.fromEntries(calls),
    Object.fromEntries(USERS.map((u) => [`sid=${sidOf(u)}`, 1])),
    'one get_user_info per credential',
  );
  assert.ok(sockets.every((s) => s.connected));
});
