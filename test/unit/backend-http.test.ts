/**
 * The handshake's and permission checks' backend GET (src/frappe/backend-http.ts)
 * through FrappeBackend: an oversized answer is refused without being
 * buffered whole, a kept-alive connection the backend closed as the request
 * went out is retried once on a new one, and connections are reused.
 */
import assert from 'node:assert/strict';
import net, { type AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { Registry } from 'prom-client';
import pino from 'pino';
import { FrappeBackend, type RequestContext } from '../../src/frappe/backend';
import { MAX_ANSWER_BYTES } from '../../src/frappe/backend-http';
import { createMetrics } from '../../src/metrics/metrics';
import { GatewayError } from '../../src/shared/errors';

const USER = JSON.stringify({ message: { user: 'ana@example.com', user_type: 'System User' } });

/**
 * A raw HTTP/1.1 backend: `answer(n, i)` decides the fate of the i-th request
 * (from 0) on the n-th connection (from 0): a body to answer with keep-alive,
 * or 'drop' to close the connection without answering.
 */
async function rawBackend(
  t: TestContext,
  answer: (conn: number, req: number) => string | 'drop',
): Promise<{ url: string; connections: () => number }> {
  let conns = 0;
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((socket) => {
    const conn = conns++;
    let req = 0;
    let buf = '';
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      buf += chunk.toString('latin1');
      let end: number;
      while ((end = buf.indexOf('\r\n\r\n')) !== -1) {
        buf = buf.slice(end + 4);
        const a = answer(conn, req++);
        if (a === 'drop') {
          socket.destroy();
          return;
        }
        socket.write(
          `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(a)}\r\nConnection: keep-alive\r\n\r\n${a}`,
        );
      }
    });
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => srv.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, connections: () => conns };
}

function backend(url: string): FrappeBackend {
  return new FrappeBackend({
    backendUrl: url,
    timeoutMs: 2000,
    concurrency: 50,
    flavour: 'v16',
    // No answer cache: every call goes to the backend.
    cacheTtlMs: 0,
    socketSecret: () => null,
    metrics: createMetrics(new Registry(), { defaults: false }),
    log: pino({ level: 'silent' }),
  });
}

const sid = (value: string): RequestContext => ({ site: 'site1.local', credential: { kind: 'sid', value }, origin: undefined });

describe('backend GET of the handshake and permission checks', () => {
  test('sequential calls share one kept-alive connection', async (t) => {
    const b = await rawBackend(t, () => USER);
    const client = backend(b.url);
    for (let i = 0; i < 5; i++) assert.equal((await client.getUserInfo(sid(`s${i}`))).info.user, 'ana@example.com');
    assert.equal(b.connections(), 1);
  });

  test('a kept-alive connection closed by the backend as the request went out: retried once on a new connection', async (t) => {
    // Connection 0 answers its first request and drops the second unanswered.
    const b = await rawBackend(t, (conn, req) => (conn === 0 && req === 1 ? 'drop' : USER));
    const client = backend(b.url);
    assert.equal((await client.getUserInfo(sid('s1'))).info.user, 'ana@example.com');
    assert.equal((await client.getUserInfo(sid('s2'))).info.user, 'ana@example.com');
    assert.equal(b.connections(), 2);
  });

  test('a fresh connection closed without an answer is not retried: GW_ERR_BACKEND_UNREACHABLE', async (t) => {
    const b = await rawBackend(t, () => 'drop');
    const client = backend(b.url);
    await assert.rejects(
      client.getUserInfo(sid('s1')),
      (err: unknown) => err instanceof GatewayError && err.code === 'GW_ERR_BACKEND_UNREACHABLE',
    );
    assert.equal(b.connections(), 1);
  });

  test(`an answer over ${MAX_ANSWER_BYTES} bytes: GW_ERR_BACKEND_BODY, the next call is answered`, async (t) => {
    const big = JSON.stringify({ message: { user: 'ana@example.com', pad: 'x'.repeat(MAX_ANSWER_BYTES) } });
    let first = true;
    const b = await rawBackend(t, () => {
      if (!first) return USER;
      first = false;
      return big;
    });
    const client = backend(b.url);
    await assert.rejects(
      client.getUserInfo(sid('s1')),
      (err: unknown) => err instanceof GatewayError && err.code === 'GW_ERR_BACKEND_BODY',
    );
    assert.equal((await client.getUserInfo(sid('s1'))).info.user, 'ana@example.com');
  });
});
