/**
 * The cluster-wide connection counter (src/realtime/connection-counter.ts)
 * against a real Redis: shared between processes, released on close, and a
 * crashed process's counts expire unless a live process still refreshes them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createConnectionCounter, type ConnectionCounter } from '../../src/realtime/connection-counter';
import { createKeys } from '../../src/redis/keys';
import { createRootLogger } from '../../src/shared/logger';
import { pollUntil, startRedis, uniqueKeyPrefix, withScope } from '../harness';

const log = createRootLogger('silent');

test('connection counter: counted across processes, refused at the limit, released on close; a stopped holder expires', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();
  const keys = createKeys(uniqueKeyPrefix());
  const ttlMs = 1500;
  const counter = (): ConnectionCounter => {
    const c = createConnectionCounter({ max: 2, what: 'address', log, redis: { client, key: keys.ipConnections, ttlMs, refreshMs: 100 } });
    scope.add(() => c.stop());
    return c;
  };
  const a = counter();
  const b = counter();
  assert.equal(await a.tryOpen('10.0.0.1'), true);
  assert.equal(await b.tryOpen('10.0.0.1'), true);
  assert.equal(await a.tryOpen('10.0.0.1'), false, 'the limit holds across processes');
  assert.equal(await b.tryOpen('10.0.0.2'), true, 'another address is not affected');
  b.close('10.0.0.2');
  await pollUntil(async () => ((await client.exists(keys.ipConnections('10.0.0.2'))) === 0 ? true : undefined), {
    timeoutMs: 2000,
    intervalMs: 20,
    description: 'the released counter to be deleted',
  });

  // Nobody refreshes any more (b "crashes": it never closes; a stops too).
  a.stop();
  b.stop();
  const key = keys.ipConnections('10.0.0.1');
  await pollUntil(async () => ((await client.pttl(key)) < ttlMs - 500 ? true : undefined), {
    timeoutMs: ttlMs,
    intervalMs: 20,
    description: 'the expiry to run down',
  });
  // Refused attempts (from a process holding nothing) do not extend the expiry.
  const retrying = counter();
  assert.equal(await retrying.tryOpen('10.0.0.1'), false);
  assert.ok((await client.pttl(key)) < ttlMs - 500, 'a refusal leaves the expiry alone');
  a.close('10.0.0.1');
  // b's count is left; it expires with the key.
  await pollUntil(async () => ((await client.exists(key)) === 0 ? true : undefined), {
    timeoutMs: ttlMs * 2,
    intervalMs: 50,
    description: "the crashed holder's count to expire",
  });
  const c = counter();
  assert.equal(await c.tryOpen('10.0.0.1'), true);
  assert.equal(await c.tryOpen('10.0.0.1'), true);
});

test('connection counter: a live holder refreshes the expiry of what it holds', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();
  const keys = createKeys(uniqueKeyPrefix());
  const c = createConnectionCounter({
    max: 5,
    what: 'address',
    log,
    redis: { client, key: keys.ipConnections, ttlMs: 2000, refreshMs: 100 },
  });
  scope.add(() => c.stop());
  assert.equal(await c.tryOpen('10.0.0.3'), true);
  const key = keys.ipConnections('10.0.0.3');
  const first = await client.pttl(key);
  assert.ok(first > 0 && first <= 2000, `expiry set (${first} ms)`);
  // The expiry only goes down by itself; seeing it go up is a refresh.
  let low = first;
  await pollUntil(
    async () => {
      const now = await client.pttl(key);
      if (now > low) return true;
      low = now;
      return undefined;
    },
    { timeoutMs: 3000, intervalMs: 20, description: 'a refresh of the held key' },
  );
});
