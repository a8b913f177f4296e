/**
 * The Frappe backend client against a local HTTP server: one request for
 * concurrent identical questions, the answer cache and its TTL (with a
 * controlled clock), errors that are never cached, the concurrency bound, the
 * timeout error, and exactly one credential plus the site and secret headers.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test, type TestContext } from 'node:test';
import { Registry } from 'prom-client';
import pino from 'pino';
import { FrappeBackend, type BackendOptions, type RequestContext } from '../../src/frappe/backend';
import { createMetrics } from '../../src/metrics/metrics';
import { GatewayError } from '../../src/shared/errors';
import { freePort, withTimeout } from '../harness';

interface Seen {
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
}

type Reply = { status: number; body: string } | 'hang';

/** A Frappe stand-in whose answers the test decides, request by request; held requests wait for release(). */
class Server {
  readonly seen: Seen[] = [];
  inFlight = 0;
  maxInFlight = 0;
  hold = false;
  reply: (req: Seen) => Reply = () => ({
    status: 200,
    body: JSON.stringify({ message: { user: 'ana@example.com', user_type: 'System User' } }),
  });
  private readonly held: (() => void)[] = [];
  private readonly arrivals: { n: number; resolve: () => void }[] = [];
  private readonly srv = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const seen: Seen = { path: url.pathname, query: url.searchParams, headers: req.headers };
    this.seen.push(seen);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    for (const a of this.arrivals.filter((x) => this.seen.length >= x.n)) a.resolve();
    const answer = (): void => {
      const r = this.reply(seen);
      if (r === 'hang') return;
      this.inFlight--;
      res.writeHead(r.status, { 'content-type': 'application/json' }).end(r.body);
    };
    if (this.hold) this.held.push(answer);
    else answer();
  });
  url = '';

  async start(t: TestContext): Promise<this> {
    await new Promise<void>((resolve) => this.srv.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.srv.address() as AddressInfo).port}`;
    t.after(() => {
      this.srv.closeAllConnections();
      return new Promise<void>((resolve) => this.srv.close(() => resolve()));
    });
    return this;
  }

  /** Resolves once `n` requests have arrived in total. */
  arrived(n: number): Promise<void> {
    if (this.seen.length >= n) return Promise.resolve();
    return withTimeout(new Promise<void>((resolve) => this.arrivals.push({ n, resolve })), 5000, `${n} backend requests`);
  }

  releaseAll(): void {
    this.hold = false;
    for (const a of this.held.splice(0)) a();
  }

  releaseOne(): boolean {
    const a = this.held.shift();
    a?.();
    return a !== undefined;
  }
}

function backend(url: string | null, o: Partial<BackendOptions> = {}): FrappeBackend {
  return new FrappeBackend({
    backendUrl: url,
    timeoutMs: 2000,
    concurrency: 50,
    flavour: 'v16',
    cacheTtlMs: 10_000,
    socketSecret: () => null,
    metrics: createMetrics(new Registry(), { defaults: false }),
    log: pino({ level: 'silent' }),
    ...o,
  });
}

const sid = (value: string, site = 'site1.local'): RequestContext => ({ site, credential: { kind: 'sid', value }, origin: undefined });
const token = (value: string): RequestContext => ({ site: 'site1.local', credential: { kind: 'authorization', value }, origin: undefined });

/** A controlled Date.now for TTL checks; fetch and timers do not depend on it. */
function clock(t: TestContext): { advance(ms: number): void } {
  let now = Date.now();
  t.mock.method(Date, 'now', () => now);
  return {
    advance(ms: number) {
      now += ms;
    },
  };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof GatewayError, `a GatewayError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  });
}

describe('get_user_info: single flight and cache', () => {
  test('20 concurrent calls for one credential and site make 1 request and share its answer', async (t) => {
    const s = await new Server().start(t);
    s.hold = true;
    const b = backend(s.url);
    const calls = Array.from({ length: 20 }, () => b.getUserInfo(sid('s1')));
    await s.arrived(1);
    s.releaseAll();
    const results = await Promise.all(calls);
    assert.equal(s.seen.length, 1);
    assert.equal(results.filter((r) => !r.cached).length, 1, 'exactly one caller made the request');
    for (const r of results) assert.deepEqual(r.info, { user: 'ana@example.com', user_type: 'System User', installed_apps: [] });
    assert.equal((await b.getUserInfo(sid('s1'))).cached, true);
    assert.equal(s.seen.length, 1);
  });

  test('different credentials, kinds and sites are separate questions', async (t) => {
    const s = await new Server().start(t);
    const b = backend(s.url);
    await Promise.all([
      b.getUserInfo(sid('s1')),
      b.getUserInfo(sid('s2')),
      b.getUserInfo(token('s1')),
      b.getUserInfo(sid('s1', 'site2.local')),
      b.getUserInfo(sid('s1')),
    ]);
    assert.equal(s.seen.length, 4);
  });

  test('the cache answers until the TTL has passed, then asks again', async (t) => {
    const c = clock(t);
    const s = await new Server().start(t);
    const b = backend(s.url, { cacheTtlMs: 1000 });
    assert.equal((await b.getUserInfo(sid('s1'))).cached, false);
    c.advance(999);
    assert.equal((await b.getUserInfo(sid('s1'))).cached, true);
    assert.equal(s.seen.length, 1);
    c.advance(1);
    assert.equal((await b.getUserInfo(sid('s1'))).cached, false);
    assert.equal(s.seen.length, 2);
  });

  test('a TTL of 0 disables the cache (every sequential call asks)', async (t) => {
    const s = await new Server().start(t);
    const b = backend(s.url, { cacheTtlMs: 0 });
    await b.getUserInfo(sid('s1'));
    await b.getUserInfo(sid('s1'));
    assert.equal(s.seen.length, 2);
  });

  test('errors are not cached: HTTP 500, a body that is not JSON, no message.user', async (t) => {
    const s = await new Server().start(t);
    const b = backend(s.url);
    const bodies: Reply[] = [
      { status: 500, body: '{}' },
      { status: 200, body: '<html>' },
      { status: 200, body: JSON.stringify({ message: { user: '' } }) },
    ];
    let i = 0;
    s.reply = () => bodies[i++] ?? { status: 200, body: JSON.stringify({ message: { user: 'bo', installed_apps: ['frappe', 7] } }) };
    await rejectsWith(b.getUserInfo(sid('s1')), 'GW_ERR_BACKEND_STATUS');
    await rejectsWith(b.getUserInfo(sid('s1')), 'GW_ERR_BACKEND_BODY');
    await rejectsWith(b.getUserInfo(sid('s1')), 'GW_ERR_BACKEND_BODY');
    const ok = await b.getUserInfo(sid('s1'));
    assert.deepEqual(ok, { info: { user: 'bo', user_type: 'Website User', installed_apps: ['frappe'] }, cached: false });
    assert.equal(s.seen.length, 4);
  });

  test('concurrent callers of a failing request all get its error, and the next call asks again', async (t) => {
    const s = await new Server().start(t);
    s.hold = true;
    s.reply = () => ({ status: 502, body: '' });
    const b = backend(s.url);
    const calls = Array.from({ length: 5 }, () => b.getUserInfo(sid('s1')));
    await s.arrived(1);
    s.releaseAll();
    for (const p of calls) await rejectsWith(p, 'GW_ERR_BACKEND_STATUS');
    assert.equal(s.seen.length, 1);
    s.reply = () => ({ status: 200, body: JSON.stringify({ message: { user: 'ana' } }) });
    assert.equal((await b.getUserInfo(sid('s1'))).info.user, 'ana');
    assert.equal(s.seen.length, 2);
  });
});

describe('permission answers', () => {
  test('v16 has_permission: cached per doctype and name, no longer than the TTL', async (t) => {
    const c = clock(t);
    const s = await new Server().start(t);
    s.reply = (r) => ({ status: 200, body: JSON.stringify({ message: r.query.get('name') !== 'secret' }) });
    const b = backend(s.url, { cacheTtlMs: 500 });
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'T-1'), true);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'secret'), false);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo'), true);
    assert.deepEqual(
      s.seen.map((r) => [r.path, r.query.get('doctype'), r.query.get('name')]),
      [
        ['/api/method/frappe.realtime.has_permission', 'ToDo', 'T-1'],
        ['/api/method/frappe.realtime.has_permission', 'ToDo', 'secret'],
        ['/api/method/frappe.realtime.has_permission', 'ToDo', ''],
      ],
    );
    c.advance(499);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'T-1'), true);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'secret'), false);
    assert.equal(s.seen.length, 3, 'within the TTL');
    s.reply = () => ({ status: 200, body: JSON.stringify({ message: false }) });
    c.advance(1);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'T-1'), false, 'a revoked permission is seen after the TTL');
    assert.equal(s.seen.length, 4);
  });

  test('v15 can_subscribe_doc / can_subscribe_doctype: HTTP 200 allows, anything else denies', async (t) => {
    const s = await new Server().start(t);
    s.reply = (r) => ({ status: r.query.get('docname') === 'T-2' ? 403 : 200, body: '{}' });
    const b = backend(s.url, { flavour: 'v15' });
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'T-1'), true);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo', 'T-2'), false);
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo'), true);
    assert.deepEqual(
      s.seen.map((r) => [r.path, r.query.get('doctype'), r.query.get('docname')]),
      [
        ['/api/method/frappe.realtime.can_subscribe_doc', 'ToDo', 'T-1'],
        ['/api/method/frappe.realtime.can_subscribe_doc', 'ToDo', 'T-2'],
        ['/api/method/frappe.realtime.can_subscribe_doctype', 'ToDo', null],
      ],
    );
  });

  test('a user-info answer and a permission answer for the same credential do not collide', async (t) => {
    const s = await new Server().start(t);
    s.reply = (r) =>
      r.path.endsWith('get_user_info')
        ? { status: 200, body: JSON.stringify({ message: { user: 'ana' } }) }
        : { status: 200, body: JSON.stringify({ message: true }) };
    const b = backend(s.url);
    assert.equal((await b.getUserInfo(sid('s1'))).info.user, 'ana');
    assert.equal(await b.canSubscribe(sid('s1'), 'ToDo'), true);
    assert.equal(s.seen.length, 2);
  });
});

describe('concurrency bound and timeouts', () => {
  test('GATEWAY_BACKEND_CONCURRENCY=3: 10 distinct questions, at most 3 in flight, all answered', async (t) => {
    const s = await new Server().start(t);
    s.hold = true;
    const b = backend(s.url, { concurrency: 3 });
    const calls = Array.from({ length: 10 }, (_, i) => b.getUserInfo(sid(`s${i}`)));
    assert.equal(b['slots'].handshake.pending, 7, 'the seven beyond the bound queue before any request is sent');
    await s.arrived(3);
    assert.equal(s.inFlight, 3);
    // Release one held request at a time; each frees exactly one slot for the next.
    for (let n = 4; n <= 10; n++) {
      assert.ok(s.releaseOne());
      await s.arrived(n);
      assert.ok(s.inFlight <= 3, `in flight after arrival ${n}: ${s.inFlight}`);
    }
    s.releaseAll();
    await Promise.all(calls);
    assert.equal(s.seen.length, 10);
    assert.equal(s.maxInFlight, 3);
  });

  test('a backend that does not answer in time: GW_ERR_BACKEND_TIMEOUT, not cached, the slot is freed', async (t) => {
    const s = await new Server().start(t);
    s.reply = () => 'hang';
    const b = backend(s.url, { timeoutMs: 150, concurrency: 1 });
    await rejectsWith(b.getUserInfo(sid('s1')), 'GW_ERR_BACKEND_TIMEOUT');
    await rejectsWith(b.canSubscribe(sid('s1'), 'ToDo', 'T-1'), 'GW_ERR_BACKEND_TIMEOUT');
    s.reply = () => ({ status: 200, body: JSON.stringify({ message: { user: 'ana' } }) });
    assert.equal((await b.getUserInfo(sid('s1'))).info.user, 'ana');
    assert.equal(s.seen.length, 3);
  });

  test('nothing listening: GW_ERR_BACKEND_UNREACHABLE; no backend URL and no Origin: GW_ERR_BACKEND_UNREACHABLE', async () => {
    const port = await freePort();
    await rejectsWith(backend(`http://127.0.0.1:${port}`).getUserInfo(sid('s1')), 'GW_ERR_BACKEND_UNREACHABLE');
    await rejectsWith(backend(null).getUserInfo(sid('s1')), 'GW_ERR_BACKEND_UNREACHABLE');
  });
});

describe('what is forwarded', () => {
  test('a sid: Cookie only, the site header, no secret header when there is no secret', async (t) => {
    const s = await new Server().start(t);
    await backend(s.url).getUserInfo(sid('abc', 'site2.local'));
    const h = s.seen[0]?.headers;
    assert.ok(h);
    assert.equal(h.cookie, 'sid=abc');
    assert.equal(h.authorization, undefined);
    assert.equal(h['x-frappe-site-name'], 'site2.local');
    assert.equal(h['x-frappe-socket-secret'], undefined);
  });

  test('an Authorization credential: that header only, plus the socket secret', async (t) => {
    const s = await new Server().start(t);
    await backend(s.url, { socketSecret: () => 'sekret' }).canSubscribe(token('token k:s'), 'ToDo');
    const h = s.seen[0]?.headers;
    assert.ok(h);
    assert.equal(h.authorization, 'token k:s');
    assert.equal(h.cookie, undefined);
    assert.equal(h['x-frappe-site-name'], 'site1.local');
    assert.equal(h['x-frappe-socket-secret'], 'sekret');
  });

  test('without a configured backend URL the handshake Origin is the backend (trailing slashes dropped)', async (t) => {
    const s = await new Server().start(t);
    const ctx: RequestContext = { ...sid('s1'), origin: `${s.url}//` };
    assert.equal((await backend(null).getUserInfo(ctx)).info.user, 'ana@example.com');
    assert.equal(s.seen[0]?.path, '/api/method/frappe.realtime.get_user_info');
  });
});
