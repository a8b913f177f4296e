/**
 * Connections per user, cluster-wide (GATEWAY_MAX_CONNECTIONS_PER_USER): two
 * hosts sharing one Redis count one user's connections together; the one
 * beyond the limit gets a clear CONNECT_ERROR and is counted; other users are
 * unaffected; a closed connection (clean or abrupt) frees its slot.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, expectConnectError, pollUntil, startRedis, waitConnect, withScope, type Socket } from '../harness';
import { newKeyPrefix, SITE, sidOf, startBackend, startHost, USERS } from './cluster-support';

const LIMIT_MESSAGE = 'Too many connections for this user (GATEWAY_MAX_CONNECTIONS_PER_USER=3)';

test('connections per user: counted across hosts, the 4th is refused with a CONNECT_ERROR, a close frees a slot', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_MAX_CONNECTIONS_PER_USER: '3' };
  const a = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, workers: 1, env });
  const b = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, workers: 1, env });
  const user = USERS[0];
  const open = (url: string, who: string = user): Socket =>
    connectClient(url, SITE, { scope, cookie: sidOf(who), transports: ['websocket'] });

  const first = [open(a.url), open(a.url), open(b.url)];
  await Promise.all(first.map((s) => waitConnect(s)));
  assert.equal(await expectConnectError(open(b.url)), LIMIT_MESSAGE);
  assert.equal(await expectConnectError(open(a.url)), LIMIT_MESSAGE);
  assert.equal(await b.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_user' }), 1);
  assert.equal(await a.metricValue('gateway_limit_exceeded_total', { limit: 'connections_per_user' }), 1);
  // Another user is not affected.
  await waitConnect(open(b.url, USERS[1]));

  // A clean disconnect on host A frees a slot for host B.
  first[0]?.disconnect();
  await pollUntil(
    async () => {
      const s = open(b.url);
      return waitConnect(s).then(
        () => s,
        () => undefined,
      );
    },
    { timeoutMs: 5000, intervalMs: 100, description: 'a slot to be freed by the clean disconnect' },
  );
  assert.equal(await expectConnectError(open(a.url)), LIMIT_MESSAGE);

  // So does an abrupt one (the TCP connection destroyed).
  const transport = (first[1]?.io.engine as unknown as { transport: { ws?: { _socket?: { destroy(): void } } } }).transport;
  transport.ws?._socket?.destroy();
  await pollUntil(
    async () => {
      const s = open(a.url);
      return waitConnect(s).then(
        () => s,
        () => undefined,
      );
    },
    { timeoutMs: 5000, intervalMs: 100, description: 'a slot to be freed by the abrupt close' },
  );
});
