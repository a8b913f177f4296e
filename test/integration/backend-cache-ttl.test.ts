/**
 * The auth cache never keeps an answer longer than GATEWAY_AUTH_CACHE_TTL_MS after
 * the backend gave it (also when one process read it from the shared Redis
 * cache), and a backend failure is never remembered as a permission denial.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import pino from 'pino';
import { FrappeBackend, type BackendOptions, type RequestContext } from '../../src/frappe/backend';
import { createMetrics } from '../../src/metrics/metrics';
import { createKeys } from '../../src/redis/keys';
import { pollUntil, startRedis, uniqueKeyPrefix, withScope } from '../harness';

const ctx: RequestContext = { site: 'site1.local', credential: { kind: 'sid', value: 's1' }, origin: undefined };

async function fakeFrappe(t: { after(fn: () => unknown): void }, status: () => number, latencyMs = 0) {
  const calls = { n: 0 };
  const srv = http.createServer((_req, res) => {
    calls.n++;
    const answer = (): void => void res.writeHead(status(), { 'content-type': 'application/json' }).end(JSON.stringify({ message: true }));
    if (latencyMs > 0) setTimeout(answer, latencyMs);
    else answer();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => srv.close(() => r())));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, calls };
}

const mk = (url: string, ttl: number, redis?: BackendOptions['redis']) =>
  new FrappeBackend({
    backendUrl: url,
    timeoutMs: 2000,
    concurrency: 8,
    flavour: 'v16',
    cacheTtlMs: ttl,
    socketSecret: () => null,
    metrics: createMetrics(new Registry(), { defaults: false }),
    log: pino({ level: 'silent' }),
    redis,
  });

test('an answer read from the shared Redis cache is kept locally only for what is left of its TTL', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const shared = { client: redis.client(), keys: createKeys(uniqueKeyPrefix()) };
  const f = await fakeFrappe(t, () => 200);
  const a = mk(f.url, 400, shared);
  const b = mk(f.url, 400, shared);
  const t0 = Date.now();
  await a.canSubscribe(ctx, 'ToDo', 'T-1'); // backend call 1, written to Redis with PX 400
  await pollUntil(() => (Date.now() - t0 >= 300 ? true : undefined), { timeoutMs: 2000, intervalMs: 10, description: '300 ms' });
  await b.canSubscribe(ctx, 'ToDo', 'T-1'); // from Redis, 100 ms left
  const expired = async () => ((await shared.client.keys(`${shared.keys.prefix}:auth:*`)).length === 0 ? true : undefined);
  await pollUntil(expired, { timeoutMs: 2000, intervalMs: 10, description: 'the Redis entry to expire' });
  await b.canSubscribe(ctx, 'ToDo', 'T-1');
  assert.equal(f.calls.n, 2, 'the TTL has passed since the backend answered: ask again');
});

test('a 5xx from has_permission is an error, not a denial cached for the TTL', async (t) => {
  let status = 503;
  const f = await fakeFrappe(t, () => status);
  const b = mk(f.url, 10_000);
  await b.canSubscribe(ctx, 'ToDo', 'T-1').catch(() => undefined); // transient backend failure
  status = 200;
  assert.equal(await b.canSubscribe(ctx, 'ToDo', 'T-1'), true, 'a failed check must not be cached');
});

test('concurrent misses of one question in several processes make one backend call; a failed one lets the next ask', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const shared = { client: redis.client(), keys: createKeys(uniqueKeyPrefix()) };
  let status = 200;
  const f = await fakeFrappe(t, () => status, 200);
  const procs = [0, 1, 2].map(() => mk(f.url, 10_000, { client: redis.client(), keys: shared.keys }));
  const answers = await Promise.all(procs.flatMap((p) => [p.canSubscribe(ctx, 'ToDo', 'T-1'), p.canSubscribe(ctx, 'ToDo', 'T-1')]));
  assert.deepEqual(answers, [true, true, true, true, true, true]);
  assert.equal(f.calls.n, 1, 'one call for the whole cluster');
  assert.deepEqual(await shared.client.keys(`${shared.keys.prefix}:auth:*:lock`), [], 'the lock was released');

  // The holder's call fails (not cached): the waiting processes do not hang, one of them asks next.
  status = 503;
  const other = { ...ctx, credential: { kind: 'sid', value: 's2' } as const };
  const results = await Promise.allSettled(procs.map((p) => p.canSubscribe(other, 'ToDo', 'T-1')));
  assert.ok(
    results.every((r) => r.status === 'rejected'),
    'a 5xx is an error for everyone',
  );
  assert.equal(f.calls.n - 1, 3, 'each process asked once, one after the other (a failure is not shared)');
});

test('a miss of the shared cache costs two Redis commands: read-or-lock, then write-and-release', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();
  const shared = { client, keys: createKeys(uniqueKeyPrefix()) };
  const f = await fakeFrappe(t, () => 200);
  const b = mk(f.url, 10_000, shared);
  // A first miss loads the scripts (EVALSHA, NOSCRIPT, EVAL): not what is counted.
  await b.canSubscribe({ ...ctx, credential: { kind: 'sid', value: 'warm' } }, 'ToDo', 'T-0');
  // MONITOR shows the commands clients send, and a script's inner calls with the source `lua` (left out).
  const monitor = await client.monitor();
  const sent: string[] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source !== 'lua') sent.push(String(args[0]).toLowerCase());
  });
  try {
    assert.equal(await b.canSubscribe(ctx, 'ToDo', 'T-1'), true);
    assert.equal(f.calls.n, 2);
    // The write is not awaited by the caller; MONITOR reports asynchronously: a bounded poll of both.
    await pollUntil(() => (sent.length >= 2 ? true : undefined), { timeoutMs: 2000, intervalMs: 10, description: 'two commands seen' });
    const entries = await client.keys(`${shared.keys.prefix}:auth:*`);
    // The lock is gone (released by the write), the answers are there.
    assert.equal(entries.filter((k) => k.endsWith(':lock')).length, 0);
    assert.equal(entries.length, 2);
    assert.deepEqual(sent.slice(0, 2), ['evalsha', 'evalsha']);
    assert.equal(sent.filter((c) => c !== 'keys').length, 2, `commands: ${sent.join(' ')}`);
  } finally {
    monitor.disconnect();
  }
});
