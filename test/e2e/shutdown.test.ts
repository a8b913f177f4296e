/**
 * SIGTERM on the real binary (README "Operations", SIGTERM): readiness goes false,
 * clients are disconnected at the transport level (so socket.io-client
 * reconnects by itself, to another node), and the process exits 0 within the
 * grace period. Run for standalone and for a primary with workers.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connectClient, pollUntil, startFakeFrappe, startGateway, startRedis, waitConnect, withScope, type Scope } from '../harness';

const SITE = 'site1.local';

async function backend(scope: Scope) {
  const frappe = await startFakeFrappe({ scope });
  frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User' });
  return frappe;
}

for (const topology of ['standalone', 'cluster'] as const) {
  describe(`SIGTERM drains and exits (${topology})`, () => {
    test('readiness turns 503 with "draining", clients are closed at the transport level and reconnect by themselves, exit code 0', async (t) => {
      const scope = withScope(t);
      const frappe = await backend(scope);
      const redis = topology === 'cluster' ? await startRedis({ scope }) : undefined;
      const gw = await startGateway({
        scope,
        backendUrl: frappe.url,
        defaultSite: SITE,
        ...(redis ? { redisUrl: redis.url, workers: 2 } : {}),
        // Long enough to observe the draining state, far below the grace period.
        logLevel: 'info',
        extraEnv: { GATEWAY_DRAIN_MS: '1500', GATEWAY_SHUTDOWN_GRACE_MS: '10000' },
      });
      const clients = Array.from({ length: 6 }, (_, i) =>
        connectClient(gw.url, SITE, {
          scope,
          cookie: 'sid-ana',
          transports: i % 2 === 0 ? ['websocket'] : ['polling'],
          reconnection: true,
        }),
      );
      await Promise.all(clients.map((c) => waitConnect(c)));
      // At the moment of the disconnect: the reason, and whether the client will reconnect by itself.
      const reasons = clients.map(
        (c) =>
          new Promise<{ reason: string; active: boolean }>((resolve) =>
            c.once('disconnect', (reason) => resolve({ reason, active: c.active })),
          ),
      );

      gw.signal('SIGTERM');
      const draining = await pollUntil(
        async () => {
          const r = await gw.readyz();
          return r.status === 503 ? r : undefined;
        },
        { timeoutMs: 5000, intervalMs: 20, description: 'readyz to answer 503 while draining' },
      );
      const body =
        typeof draining.body === 'string'
          ? (JSON.parse(draining.body) as Record<string, unknown>)
          : (draining.body as Record<string, unknown>);
      assert.equal(body.draining, true);

      const got = await Promise.all(reasons);
      // A transport-level close (never "io server disconnect", after which
      // socket.io-client stays down): the client reconnects by itself, to
      // another node. Long-polling clients may see their last request fail
      // ("transport error") rather than read the close packet.
      for (const r of got) {
        assert.ok(['transport close', 'transport error'].includes(r.reason), `transport-level disconnect, got ${r.reason}`);
        assert.equal(r.active, true, 'the client keeps reconnecting');
      }
      const exit = await gw.exited;
      assert.equal(exit.code, 0, `clean exit, got ${JSON.stringify(exit)}`);
      assert.ok(
        gw.logs.some((l) => l.includes('shutdown complete')),
        'logged completion',
      );
    });
  });
}

test('GATEWAY_DRAIN_RATE: a process holding more than rate x drain connections spreads them over connections / rate', async (t) => {
  const scope = withScope(t);
  const frappe = await backend(scope);
  // 8 clients at 4/s: 2 s instead of the configured 200 ms.
  const gw = await startGateway({
    scope,
    backendUrl: frappe.url,
    defaultSite: SITE,
    logLevel: 'info',
    extraEnv: { GATEWAY_DRAIN_MS: '200', GATEWAY_DRAIN_RATE: '4', GATEWAY_SHUTDOWN_GRACE_MS: '15000' },
  });
  const clients = Array.from({ length: 8 }, () =>
    connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', transports: ['websocket'], reconnection: false }),
  );
  await Promise.all(clients.map((c) => waitConnect(c)));
  const at = clients.map((c) => new Promise<number>((resolve) => c.once('disconnect', () => resolve(performance.now()))));
  gw.signal('SIGTERM');
  const times = await Promise.all(at);
  const line = gw.logs.find((l) => l.includes('draining connections'));
  assert.ok(line, 'the drain logged its plan');
  const plan = JSON.parse(line) as { connections: number; drainMs: number };
  assert.equal(plan.connections, 8);
  assert.equal(plan.drainMs, 2000);
  // 8 batches of one, 7 gaps of 250 ms x 0.5-1.5: at least 875 ms between the first and the last.
  const span = Math.max(...times) - Math.min(...times);
  assert.ok(span >= 875, `disconnects spread over ${span.toFixed(0)} ms`);
  assert.equal((await gw.exited).code, 0);
});
