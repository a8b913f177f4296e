/**
 * A client that stops reading but keeps the connection alive (it answers the
 * heartbeat blindly) under a broadcast of 2 KB events: the gateway must
 * disconnect it once GATEWAY_MAX_OUTBOUND_BYTES (default 8 MiB) are queued
 * for it, count it in gateway_limit_exceeded_total{limit="outbound_buffer"},
 * give the memory back at once, and keep serving the clients that read.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import WebSocket from 'ws';
import { connectClient, EventRecorder, pollUntil, startGateway, waitConnect, withScope, withTimeout } from '../harness';
import { SITE, sidOf, startBackend, USERS } from './cluster-support';
import { collectEverywhere, INSPECT_ARGS, rssMb, type MemoryMb } from './hardening-support';

const EVENT_BYTES = 2048;
const BATCH = 250;
/** 50 MB at most: far more than the limit plus what the kernel's socket buffers absorb. */
const MAX_EVENTS = 25_000;

/** TCP state of the client end of a local connection, from /proc/net/tcp (01 = ESTABLISHED), or undefined once gone. */
function tcpState(localPort: number): string | undefined {
  const hex = localPort.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols[1]?.endsWith(`:${hex}`)) return cols[3];
  }
  return undefined;
}

/** A raw Engine.IO/Socket.IO v4 client: connects the site namespace, then reads nothing more. */
async function stalledClient(port: number, origin: string, sid: string): Promise<WebSocket> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`, {
    headers: { Origin: origin, Cookie: `sid=${sid}` },
  });
  await withTimeout(
    new Promise<void>((resolve, reject) => {
      ws.on('error', reject);
      ws.on('message', (raw) => {
        const text = String(raw);
        if (text.startsWith('0')) ws.send(`40/${SITE},`);
        else if (text.startsWith(`40/${SITE},`)) resolve();
        else if (text.startsWith(`44/${SITE},`)) reject(new Error(`refused: ${text}`));
      });
    }),
    10_000,
    'raw client to connect',
  );
  // Stop reading: the kernel buffers fill, then ws bufferedAmount grows on the server.
  ws.removeAllListeners('message');
  (ws as unknown as { _socket: { pause(): void } })._socket.pause();
  // Heartbeats still go out: a pong resets the server's ping timers, so
  // pingTimeout alone would never catch this client.
  const pong = setInterval(() => ws.send('3'), 200);
  ws.on('close', () => clearInterval(pong));
  return ws;
}

test('slow reader: disconnected over the outbound limit, counted, memory back; reading clients unaffected', async (t) => {
  const scope = withScope(t);
  const backend = await startBackend(scope);
  const gw = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    nodeArgs: INSPECT_ARGS,
    env: { GATEWAY_PING_INTERVAL_MS: '1000', GATEWAY_PING_TIMEOUT_MS: '1000' },
  });
  const reader = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]), transports: ['websocket'] });
  await waitConnect(reader);
  let received = 0;
  reader.on('flood', () => received++);
  const rec = new EventRecorder(reader);

  const [before] = await collectEverywhere(gw);
  assert.ok(before);
  const baseline = before.rss;
  const stalled = await stalledClient(gw.port, gw.url, sidOf(USERS[1]));
  scope.add(() => stalled.terminate());
  // Read now: once the gateway drops the connection, ws destroys its socket
  // and the port is no longer readable from it.
  const localPort = (stalled as unknown as { _socket: { localPort: number } })._socket.localPort;

  const payload = 'x'.repeat(EVENT_BYTES);
  let sent = 0;
  let peak = baseline;
  while (sent < MAX_EVENTS) {
    const batch = Array.from({ length: BATCH }, (_, i) => ({
      event: 'flood',
      message: { i: sent + i, payload },
      namespace: SITE,
      room: 'website',
    }));
    assert.equal((await gw.publish(batch)).status, 202);
    sent += BATCH;
    peak = Math.max(peak, rssMb(gw.pid));
    if ((await gw.metricValue('gateway_limit_exceeded_total', { limit: 'outbound_buffer' })) === 1) break;
  }
  await pollUntil(
    async () => ((await gw.metricValue('gateway_limit_exceeded_total', { limit: 'outbound_buffer' })) === 1 ? true : undefined),
    {
      timeoutMs: 5000,
      intervalMs: 100,
      description: () => `the stalled client to be disconnected after ${sent} events`,
    },
  );
  t.diagnostic(
    `disconnected after ${sent} events of ${EVENT_BYTES} B; gateway RSS ${baseline.toFixed(1)} MB before, ${peak.toFixed(1)} MB peak`,
  );

  // The gateway dropped the TCP connection at once: the client end saw the
  // FIN/RST (CLOSE_WAIT or gone), rather than staying ESTABLISHED until ws's
  // 30 s close timeout with everything it did not read still queued.
  // The bound only has to tell "at once" from ws's 30 s close timeout; 3 s was missed at load 25.
  await pollUntil(() => (tcpState(localPort) !== '01' ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 50,
    description: () => `the stalled client's connection to be dropped (state ${tcpState(localPort)})`,
  });

  // The reader got every event and is still connected.
  assert.ok(await gw.publish({ event: 'done', message: sent, namespace: SITE, room: 'website' }));
  assert.equal(await rec.waitFor('done', undefined, 30_000), sent);
  assert.equal(received, sent);
  assert.equal(reader.connected, true);
  assert.equal(((await gw.cluster()) as { connections: number }).connections, 1, 'only the reader is left');

  // The bytes queued for the stalled client (Buffers, outside the JS heap)
  // are released now, not when a close handshake it never reads times out
  // (ws: 30 s). RSS falls back most of the way; what the allocator keeps
  // from the peak is not held by anything (the heap is back too).
  // RSS itself only falls as far as the allocator returns pages: glibc keeps
  // freed heap pages below its (dynamic) trim threshold, so what returns is
  // load-dependent (20-25% of the growth in full-suite runs). The test asks
  // for an eighth: RSS that stays at its peak means something still holds it.
  const rssBound = peak - (peak - baseline) / 8;
  let after: MemoryMb = before;
  await pollUntil(
    async () => {
      const [m] = await collectEverywhere(gw);
      if (m) after = m;
      const rssFell = after.rss <= rssBound;
      return after.external <= before.external + 4 && after.heapUsed <= before.heapUsed + 5 && rssFell ? true : undefined;
    },
    {
      timeoutMs: 15_000,
      intervalMs: 500,
      description: () =>
        `memory back: external ${before.external.toFixed(1)} -> ${after.external.toFixed(1)} MB, heap ${before.heapUsed.toFixed(1)} -> ${after.heapUsed.toFixed(1)} MB, RSS ${after.rss.toFixed(1)} MB (peak ${peak.toFixed(1)}, must fall to ${rssBound.toFixed(1)})`,
    },
  );
  t.diagnostic(
    `after the disconnect (forced GC): RSS ${after.rss.toFixed(1)} MB, external ${before.external.toFixed(1)} -> ${after.external.toFixed(1)} MB, heap ${before.heapUsed.toFixed(1)} -> ${after.heapUsed.toFixed(1)} MB`,
  );
});
