/**
 * The chaos harness' TCP proxy (test/harness/tcp-proxy.ts) against a real
 * redis-server: traffic passes; blackholed, a command gets no answer and the
 * connection stays open; healed, the held command is answered; reset, the
 * client sees the connection drop and reconnects.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import { settlesWithin, startRedis, withScope } from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';

test('tcp proxy: blackhole holds bytes without closing, heal delivers them in order, reset drops every connection', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const client = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: null, retryStrategy: () => 50 });
  scope.add(() => client.disconnect());
  client.on('error', () => undefined);
  assert.equal(await client.ping(), 'PONG');
  assert.equal(proxy.connections, 1);

  proxy.blackhole();
  const held = client.set('k', 'v1').then(() => client.get('k'));
  assert.equal(await settlesWithin(held, 500), false, 'no answer while blackholed');
  assert.equal(client.status, 'ready', 'the connection looks open');
  assert.equal(await redis.client().get('k'), null, 'Redis did not get the command');
  // A connection opened meanwhile is accepted but reaches Redis only on heal.
  const late = new Redis({ host: '127.0.0.1', port: proxy.port, lazyConnect: true, maxRetriesPerRequest: null });
  scope.add(() => late.disconnect());
  late.on('error', () => undefined);
  const latePing = late.connect().then(() => late.ping());
  assert.equal(await settlesWithin(latePing, 300), false);

  proxy.heal();
  assert.equal(await held, 'v1', 'the held command ran and was answered');
  assert.equal(await latePing, 'PONG');

  // events.once would reject on the ECONNRESET 'error' that comes first.
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  const errors: string[] = [];
  client.on('error', (err: Error) => errors.push(err.message));
  proxy.reset();
  await closed;
  assert.match(errors.join(';'), /ECONNRESET/, 'an RST, not a clean close');
  await new Promise<void>((r) => client.once('ready', () => r()));
  assert.equal(await client.ping(), 'PONG', 'reconnected through the proxy after the reset');
});

test('tcp proxy: withholdRepliesOn lets the matching connection reach Redis but holds its replies, other connections untouched', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const a = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: null });
  const b = new Redis({ host: '127.0.0.1', port: proxy.port, maxRetriesPerRequest: null });
  for (const c of [a, b]) {
    scope.add(() => c.disconnect());
    c.on('error', () => undefined);
  }
  assert.equal(await a.ping(), 'PONG');
  assert.equal(await b.ping(), 'PONG');
  const withheld = proxy.withholdRepliesOn((chunk) => chunk.includes('withheld-value'));
  const set = a.set('k', 'withheld-value');
  await withheld;
  assert.equal(await settlesWithin(set, 300), false, 'the reply is held');
  assert.equal(await b.get('k'), 'withheld-value', 'Redis ran the command; the other connection is answered');
  assert.equal(await redis.client().get('k'), 'withheld-value');
  proxy.heal();
  assert.equal(await set, 'OK', 'the held reply arrives on heal');
  assert.equal(await a.ping(), 'PONG');
});
