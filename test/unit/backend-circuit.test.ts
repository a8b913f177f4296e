/**
 * The backend circuit breaker with a controlled clock, and the backend client
 * using it against a local HTTP server: consecutive failures open it, calls
 * then fail fast without a request, one probe after the open period closes it
 * again (or reopens it), and any answer below 500 counts as the backend up.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { Registry } from 'prom-client';
import pino from 'pino';
import { CircuitBreaker, type CircuitState } from '../../src/frappe/circuit';
import { FrappeBackend, isBackendOutage } from '../../src/frappe/backend';
import { createMetrics } from '../../src/metrics/metrics';
import { GatewayError } from '../../src/shared/errors';

describe('CircuitBreaker', () => {
  test('opens after the threshold of consecutive failures; a success in between resets the count', () => {
    let now = 0;
    const seen: CircuitState[] = [];
    const b = new CircuitBreaker(
      3,
      1000,
      (s) => seen.push(s),
      () => now,
    );
    b.failure();
    b.failure();
    b.success();
    b.failure();
    b.failure();
    assert.equal(b.current, 'closed');
    assert.equal(b.tryAcquire(), true);
    b.failure();
    assert.equal(b.current, 'open');
    assert.equal(b.rejecting, true);
    assert.equal(b.tryAcquire(), false);
    now = 999;
    assert.equal(b.tryAcquire(), false);
    assert.deepEqual(seen, ['open']);
  });

  test('after the open period exactly one probe goes out; its success closes, its failure reopens for a full period', () => {
    let now = 0;
    const b = new CircuitBreaker(1, 1000, undefined, () => now);
    b.failure();
    now = 1000;
    assert.equal(b.rejecting, false, 'a probe is due');
    assert.equal(b.tryAcquire(), true);
    assert.equal(b.current, 'half_open');
    assert.equal(b.tryAcquire(), false, 'only one probe at a time');
    b.failure();
    assert.equal(b.current, 'open');
    now = 1999;
    assert.equal(b.tryAcquire(), false);
    now = 2000;
    assert.equal(b.tryAcquire(), true);
    b.success();
    assert.equal(b.current, 'closed');
    assert.equal(b.tryAcquire(), true);
  });

  test('threshold 0 disables it', () => {
    const b = new CircuitBreaker(0, 1000, undefined, () => 0);
    for (let i = 0; i < 100; i++) b.failure();
    assert.equal(b.current, 'closed');
    assert.equal(b.tryAcquire(), true);
  });
});

async function server(t: TestContext, status: () => number): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const srv = http.createServer((_req, res) => {
    hits++;
    const s = status();
    res.writeHead(s, { 'content-type': 'application/json' }).end(JSON.stringify({ message: { user: 'ana@example.com' } }));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => new Promise<void>((resolve) => srv.close(() => resolve())));
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, hits: () => hits };
}

function backend(url: string, openMs: number) {
  const metrics = createMetrics(new Registry(), { defaults: false });
  const b = new FrappeBackend({
    backendUrl: url,
    timeoutMs: 2000,
    concurrency: 4,
    flavour: 'v16',
    cacheTtlMs: 0,
    socketSecret: () => null,
    metrics,
    log: pino({ level: 'silent' }),
    circuitFailures: 2,
    circuitOpenMs: openMs,
  });
  return { b, metrics };
}

const ctx = (sid: string) => ({ site: 'site1.local', credential: { kind: 'sid' as const, value: sid }, origin: undefined });

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof GatewayError, String(err));
    return err.code;
  }
  return 'resolved';
}

describe('FrappeBackend circuit', () => {
  test('HTTP 5xx opens it: the next call fails fast without a request, is an outage, and the gauge says open', async (t) => {
    let status = 503;
    const s = await server(t, () => status);
    const { b, metrics } = backend(s.url, 60_000);
    assert.equal(await codeOf(b.getUserInfo(ctx('a'))), 'GW_ERR_BACKEND_STATUS');
    assert.equal(await codeOf(b.getUserInfo(ctx('b'))), 'GW_ERR_BACKEND_STATUS');
    assert.equal(s.hits(), 2);
    const fast = b.getUserInfo(ctx('c'));
    assert.equal(await codeOf(fast), 'GW_ERR_BACKEND_CIRCUIT_OPEN');
    assert.equal(await fast.catch(isBackendOutage), true);
    assert.equal(s.hits(), 2, 'no request while open');
    assert.equal(b.unavailable(undefined), true);
    assert.equal((await metrics.backendCircuitState.get()).values[0]?.value, 2);
    // Permission checks of the same backend fail fast too (denied, no request).
    status = 200;
    await assert.rejects(
      b.canSubscribe(ctx('a'), 'ToDo'),
      (e: unknown) => e instanceof GatewayError && e.code === 'GW_ERR_BACKEND_CIRCUIT_OPEN',
    );
    assert.equal(s.hits(), 2);
  });

  test('4xx answers keep it closed (a refusal is not an outage), and are not outages', async (t) => {
    const s = await server(t, () => 403);
    const { b } = backend(s.url, 60_000);
    for (const sid of ['a', 'b', 'c', 'd']) {
      const p = b.getUserInfo(ctx(sid));
      assert.equal(await codeOf(p), 'GW_ERR_BACKEND_STATUS');
      assert.equal(await p.catch(isBackendOutage), false);
    }
    assert.equal(s.hits(), 4);
    assert.equal(b.unavailable(undefined), false);
  });

  test('a refused connection (nothing listening) counts; after the open period a successful probe closes it', async (t) => {
    const dead = backend('http://127.0.0.1:1', 50);
    assert.equal(await codeOf(dead.b.getUserInfo(ctx('a'))), 'GW_ERR_BACKEND_UNREACHABLE');
    assert.equal(await codeOf(dead.b.getUserInfo(ctx('b'))), 'GW_ERR_BACKEND_UNREACHABLE');
    assert.equal(await codeOf(dead.b.getUserInfo(ctx('c'))), 'GW_ERR_BACKEND_CIRCUIT_OPEN');

    let status = 500;
    const s = await server(t, () => status);
    const { b, metrics } = backend(s.url, 50);
    await codeOf(b.getUserInfo(ctx('a')));
    await codeOf(b.getUserInfo(ctx('b')));
    assert.equal(b.unavailable(undefined), true);
    status = 200;
    // Wait out the open period by polling the breaker, not by sleeping a guess.
    while (b.unavailable(undefined)) await new Promise((r) => setTimeout(r, 5));
    assert.equal((await b.getUserInfo(ctx('c'))).info.user, 'ana@example.com');
    assert.equal(s.hits(), 3);
    assert.equal((await metrics.backendCircuitState.get()).values[0]?.value, 0);
  });
});
