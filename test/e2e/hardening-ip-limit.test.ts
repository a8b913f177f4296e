/**
 * Connections per client address, cluster-wide (GATEWAY_MAX_CONNECTIONS_PER_IP):
 * two hosts sharing one Redis count one address's Engine.IO connections
 * together; the handshake beyond the limit is refused on either host before
 * any socket exists (HTTP 403 with the documented message) and counted;
 * concurrent handshakes cannot overshoot; a closed connection frees its slot
 * for every host.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, pollUntil, startRedis, waitConnect, withScope, withTimeout, type Scope, type Socket } from '../harness';
import { clusterInfo, newKeyPrefix, SITE, sidOf, startBackend, startHost, USERS } from './cluster-support';

const LIMIT = 3;
const MESSAGE = `Too many connections from this address (GATEWAY_MAX_CONNECTIONS_PER_IP=${LIMIT})`;

interface Attempt {
  socket: Socket;
  /** 'connect', or the refused handshake's HTTP status and body. */
  outcome: Promise<'connect' | { status: unknown; body: string }>;
}

/** Every client comes from 127.0.0.1: one address. Polling first, like a browser, so the refusal's body is readable. */
function attempt(scope: Scope, url: string, i: number): Attempt {
  const socket = connectClient(url, SITE, { scope, cookie: sidOf(USERS[i % USERS.length] as string) });
  const outcome = new Promise<'connect' | { status: unknown; body: string }>((resolve) => {
    socket.once('connect', () => resolve('connect'));
    socket.once('connect_error', (e: Error) => {
      const err = e as Error & { description?: unknown; context?: { responseText?: string } };
      resolve({ status: err.description, body: err.context?.responseText ?? '' });
    });
  });
  return { socket, outcome: withTimeout(outcome, 10_000, `client ${i} to connect or be refused`) };
}

const refusal = { status: 403, body: JSON.stringify({ code: 4, message: MESSAGE }) };

async function twoHosts(scope: Scope) {
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_MAX_CONNECTIONS_PER_IP: String(LIMIT) };
  const a = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, workers: 1, env });
  const b = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, workers: 2, env });
  // A worker whose Redis connections are not all up yet counts locally only (fail open).
  for (const host of [a, b]) {
    await pollUntil(async () => (await clusterInfo(host)).workers.every((w) => w.redis) || undefined, {
      timeoutMs: 10_000,
      intervalMs: 50,
      description: 'every worker connected to Redis',
    });
  }
  return { redis, a, b, keyPrefix };
}

test('connections per address: counted across hosts, the (L+1)th is refused on either host, a close frees a slot everywhere', async (t) => {
  const scope = withScope(t);
  const { a, b } = await twoHosts(scope);
  const first = [attempt(scope, a.url, 0), attempt(scope, b.url, 1), attempt(scope, a.url, 2)];
  for (const c of first) assert.equal(await c.outcome, 'connect');
  assert.deepEqual(await attempt(scope, b.url, 3).outcome, refusal);
  assert.deepEqual(await attempt(scope, a.url, 3).outcome, refusal);
  assert.equal(await a.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_ip' }), 1);
  assert.equal(await b.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_ip' }), 1);
  assert.equal(await b.metricValue('gateway_connect_errors_total', { reason: 'connections_per_ip' }), 1);

  // A disconnect on host A frees the slot for host B; then the address is at the limit again.
  first[0]?.socket.disconnect();
  await pollUntil(async () => ((await attempt(scope, b.url, 0).outcome) === 'connect' ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 100,
    description: 'the slot freed on host A to be usable on host B',
  });
  assert.deepEqual(await attempt(scope, a.url, 1).outcome, refusal);
  assert.deepEqual(await attempt(scope, b.url, 1).outcome, refusal);

  // An abrupt close (TCP connection destroyed) frees its slot too.
  const transport = (first[1]?.socket.io.engine as unknown as { transport: { ws?: { _socket?: { destroy(): void } } } }).transport;
  assert.ok(transport.ws?._socket, 'the client upgraded to a WebSocket');
  transport.ws._socket.destroy();
  await pollUntil(async () => ((await attempt(scope, a.url, 2).outcome) === 'connect' ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 100,
    description: 'the slot of the abruptly closed connection to be freed',
  });
});

test('connections per address: concurrent handshakes on two hosts admit exactly the limit', async (t) => {
  const scope = withScope(t);
  const { a, b } = await twoHosts(scope);
  const attempts = Array.from({ length: 8 }, (_, i) => attempt(scope, i % 2 === 0 ? a.url : b.url, i));
  const outcomes = await Promise.all(attempts.map((c) => c.outcome));
  assert.equal(outcomes.filter((o) => o === 'connect').length, LIMIT, JSON.stringify(outcomes));
  for (const o of outcomes) if (o !== 'connect') assert.deepEqual(o, refusal);
  const counted =
    ((await a.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_ip' })) ?? 0) +
    ((await b.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_ip' })) ?? 0);
  assert.equal(counted, 8 - LIMIT);
  await Promise.all(attempts.filter((_, i) => outcomes[i] === 'connect').map((c) => waitConnect(c.socket)));
});
