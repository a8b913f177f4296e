/**
 * docs/protocol.md section 6: the connect middleware, in order (site, origin,
 * credential, backend), and what the backend receives.
 */
import assert from 'node:assert/strict';
import { expectConnectError, GET_USER_INFO, waitConnect, waitForEvent, type RecordedRequest } from '../../harness';
import { CHAT_APP_PATH } from './bench';
import { SITE, type CaseContext, type Client, type ConformanceCase, type ConnectOptions, type TestUser } from './context';
import { ALT_BACKEND_TIMEOUT_MS } from './topology';

export const ERR_NAMESPACE = 'Invalid namespace';
export const ERR_ORIGIN = 'Invalid origin';
export const ERR_NO_AUTH = 'No authentication method used. Use cookie or authorization header.';
const UNAUTHORIZED = /^Unauthorized: \S/;

async function refused(ctx: CaseContext, user: TestUser | null, options: ConnectOptions): Promise<string> {
  return expectConnectError(ctx.open(user, options).socket, 10_000);
}

/**
 * An outage of the backend, unlike Frappe: no CONNECT_ERROR (after which
 * socket.io-client never retries) but a closed transport, which it retries
 * (docs/protocol.md section 6). Resolves with the disconnect reason.
 */
async function deferred(ctx: CaseContext, user: TestUser | null, options: ConnectOptions): Promise<string> {
  const { socket } = ctx.open(user, options);
  const errors: string[] = [];
  socket.on('connect_error', (e: Error) => errors.push(e.message));
  const reason = await waitForEvent<string>(socket, 'disconnect', { timeoutMs: 10_000 });
  assert.deepEqual(errors, [], 'no CONNECT_ERROR for a backend outage');
  return reason;
}

/** The get_user_info request that carried `credential` (a sid or an Authorization value). */
function userInfoCall(ctx: CaseContext, credential: string): Promise<RecordedRequest> {
  return ctx.topo.frappe.waitForCall(
    'get_user_info',
    (r) => r.headers.authorization === credential || (r.headers.cookie ?? '').includes(`sid=${credential}`),
  );
}

/** Connects over websocket with a forged Host header (the polling transport cannot set one). */
function hostOptions(host: string, origin: string | null, site: string, extra: ConnectOptions = {}): ConnectOptions {
  return { site, siteHeader: false, origin, headers: { Host: host }, transports: ['websocket'], ...extra };
}

/** Publishes to `room` of the client's site and waits for it: the socket is in that room. */
async function receives(ctx: CaseContext, c: Client, room: string): Promise<void> {
  const marker = ctx.uid('probe');
  await c.variant.publish({ event: 'room_probe', message: { marker }, namespace: c.site, room });
  await c.rec.waitFor('room_probe', (p) => (p as { marker?: string }).marker === marker);
}

export const AUTH_CASES: ConformanceCase[] = [
  {
    name: 'connect: the main namespace "/" and nested namespaces are refused with "Invalid namespace"',
    async run(ctx) {
      const u = ctx.newUser();
      assert.equal(await refused(ctx, u, { site: '', siteHeader: false }), ERR_NAMESPACE);
      assert.equal(await refused(ctx, u, { site: `${SITE}/nested`, siteHeader: false }), ERR_NAMESPACE);
    },
  },
  {
    name: 'connect: a namespace other than the resolved site is refused with "Invalid namespace", before any backend call',
    async run(ctx) {
      const u = ctx.newUser();
      // x-frappe-site-name says site2.local; the client asks for /site3.local.
      assert.equal(
        await refused(ctx, u, { site: 'site3.local', siteHeader: false, headers: { 'X-Frappe-Site-Name': 'site2.local' } }),
        ERR_NAMESPACE,
      );
      // No header, Host 127.0.0.1: the default site applies, not the requested one.
      assert.equal(await refused(ctx, u, { site: 'site2.local', siteHeader: false }), ERR_NAMESPACE);
      assert.equal(ctx.topo.frappe.callsTo('get_user_info').filter((r) => (r.headers.cookie ?? '').includes(u.sid)).length, 0);
    },
  },
  {
    name: 'site resolution: the x-frappe-site-name header (hostname part, port stripped) wins over the default site',
    async run(ctx) {
      const u = ctx.newUser();
      // Host is 127.0.0.1, where the default site would otherwise apply.
      const c = ctx.open(u, { site: 'site2.local', siteHeader: false, headers: { 'X-Frappe-Site-Name': 'site2.local:8000' } });
      await waitConnect(c.socket);
      assert.equal((await userInfoCall(ctx, u.sid)).headers['x-frappe-site-name'], 'site2.local');
    },
  },
  {
    name: 'site resolution: the default site (from the bench) applies when the Host is 127.0.0.1',
    async run(ctx) {
      const u = ctx.newUser();
      const c = ctx.open(u, { site: SITE, siteHeader: false });
      await waitConnect(c.socket);
      assert.equal((await userInfoCall(ctx, u.sid)).headers['x-frappe-site-name'], SITE);
    },
  },
  {
    name: 'site resolution: the default site applies when the Host is localhost (port stripped)',
    async run(ctx) {
      const u = ctx.newUser();
      const port = ctx.topo.main.gw.port;
      const c = ctx.open(u, hostOptions(`localhost:${port}`, `http://localhost:${port}`, SITE));
      await waitConnect(c.socket);
      assert.equal((await userInfoCall(ctx, u.sid)).headers['x-frappe-site-name'], SITE);
    },
  },
  {
    name: 'site resolution: the Origin hostname comes before the Host hostname (then the origin check refuses the mismatch)',
    async run(ctx) {
      const u = ctx.newUser();
      // Site = Origin's hostname: /a.example passes the namespace check and fails the origin check.
      assert.equal(await refused(ctx, u, hostOptions('b.example:9000', 'http://a.example:8000', 'a.example')), ERR_ORIGIN);
      // The Host's hostname is not the site when an Origin is present.
      assert.equal(await refused(ctx, u, hostOptions('b.example:9000', 'http://a.example:8000', 'b.example')), ERR_NAMESPACE);
    },
  },
  {
    name: 'site resolution: without an Origin the Host hostname is the site (and the missing Origin fails the origin check)',
    async run(ctx) {
      const u = ctx.newUser();
      assert.equal(await refused(ctx, u, hostOptions('h.example:9000', null, 'h.example')), ERR_ORIGIN);
      assert.equal(await refused(ctx, u, hostOptions('h.example:9000', null, 'other.example')), ERR_NAMESPACE);
    },
  },
  {
    name: 'site resolution: Host and Origin ports are ignored; a non-local Host gets no default site',
    async run(ctx) {
      const u = ctx.newUser();
      const c = ctx.open(u, hostOptions('erp.example.com:9000', 'https://erp.example.com', 'erp.example.com'));
      await waitConnect(c.socket);
      assert.equal((await userInfoCall(ctx, u.sid)).headers['x-frappe-site-name'], 'erp.example.com');
      assert.equal(await refused(ctx, u, hostOptions('erp.example.com:9000', 'https://erp.example.com', SITE)), ERR_NAMESPACE);
    },
  },
  {
    name: 'site case (6.1): /Site1.Local with Host site1.local connects; the backend sees Site1.Local and events to namespace Site1.Local reach it',
    async run(ctx) {
      const { main } = ctx.topo;
      const u = ctx.newUser();
      const site = 'Site1.Local';
      const c = ctx.open(u, hostOptions('site1.local', 'http://site1.local', site));
      await waitConnect(c.socket);
      assert.equal((await userInfoCall(ctx, u.sid)).headers['x-frappe-site-name'], site);
      await main.waitJoined(site, c.socket, `user:${u.user}`);
      await receives(ctx, c, `user:${u.user}`);
      // The nginx way too: X-Frappe-Site-Name from $host (lowercase), the namespace in the folder's spelling.
      const v = ctx.newUser();
      const viaHeader = ctx.open(v, { site, siteHeader: false, headers: { 'X-Frappe-Site-Name': 'site1.local' } });
      await waitConnect(viaHeader.socket);
      assert.equal((await userInfoCall(ctx, v.sid)).headers['x-frappe-site-name'], site);
      await main.waitJoined(site, viaHeader.socket, `user:${v.user}`);
      await receives(ctx, viaHeader, `user:${v.user}`);
    },
  },
  {
    name: 'origin: an Origin whose hostname differs from the Host, or no Origin at all, is refused with "Invalid origin"',
    async run(ctx) {
      const u = ctx.newUser();
      assert.equal(await refused(ctx, u, { origin: 'http://evil.example' }), ERR_ORIGIN);
      assert.equal(await refused(ctx, u, { origin: null }), ERR_ORIGIN);
      assert.equal(await refused(ctx, u, { origin: 'http://127.0.0.2:1234' }), ERR_ORIGIN);
    },
  },
  {
    name: 'auth: neither a sid cookie nor an Authorization header is refused with the exact Frappe message, without a backend call',
    async run(ctx) {
      const before = ctx.topo.frappe.callsTo('get_user_info').length;
      assert.equal(await refused(ctx, null, {}), ERR_NO_AUTH);
      assert.equal(await refused(ctx, null, { headers: { Cookie: 'system_user=yes; full_name=Ana' } }), ERR_NO_AUTH);
      assert.equal(await refused(ctx, null, { cookie: '' }), ERR_NO_AUTH);
      assert.equal(ctx.topo.frappe.callsTo('get_user_info').length, before);
    },
  },
  {
    name: 'auth: a backend answering 5xx closes the transport (retryable), a 4xx is refused with "Unauthorized: <reason>"',
    async run(ctx) {
      const u = ctx.newUser();
      ctx.topo.frappe.setFailure(u.sid, 'http500');
      ctx.scope.add(() => ctx.topo.frappe.setFailure(u.sid, null));
      assert.equal(await deferred(ctx, u, {}), 'transport close');
      // An API token the backend does not know: Frappe answers 401.
      assert.match(await refused(ctx, null, { authorization: `token ${ctx.uid('unknown')}:secret` }), UNAUTHORIZED);
    },
  },
  {
    name: 'auth: a backend answering something that is not JSON is refused with "Unauthorized: <reason>"',
    async run(ctx) {
      const u = ctx.newUser();
      ctx.topo.frappe.setFailure(u.sid, 'notjson');
      ctx.scope.add(() => ctx.topo.frappe.setFailure(u.sid, null));
      assert.match(await refused(ctx, u, {}), UNAUTHORIZED);
    },
  },
  {
    name: 'auth: an unreachable or hanging backend closes the transport after the timeout (retryable), no CONNECT_ERROR',
    async run(ctx) {
      const { alt } = ctx.topo;
      const u = ctx.newUser();
      // alt has no GATEWAY_BACKEND_URL: the Origin is the backend, here a closed port on the same host.
      assert.equal(await deferred(ctx, u, { variant: alt, origin: `http://127.0.0.1:${ctx.topo.deadPort}` }), 'transport close');
      const slow = ctx.newUser();
      ctx.topo.frappe.setFailure(slow.sid, 'hang');
      ctx.scope.add(() => ctx.topo.frappe.setFailure(slow.sid, null));
      const started = Date.now();
      assert.equal(await deferred(ctx, slow, { variant: alt }), 'transport close');
      assert.ok(Date.now() - started >= ALT_BACKEND_TIMEOUT_MS - 50, 'closed before the backend timeout');
    },
  },
  {
    name: 'auth: the Authorization header wins over the sid cookie; the backend receives exactly one credential, the site and the socket secret',
    async run(ctx) {
      const { frappe } = ctx.topo;
      const cookieUser = ctx.newUser();
      const tokenUser = ctx.newUser();
      const token = `token ${ctx.uid('key')}:${ctx.uid('secret')}`;
      frappe.addToken(token, { user: tokenUser.user, user_type: 'System User' });
      const c = await ctx.connect(tokenUser, { cookie: cookieUser.sid, authorization: token });
      const call = await userInfoCall(ctx, token);
      assert.equal(call.method, 'GET');
      assert.equal(call.path, GET_USER_INFO);
      assert.equal(call.headers.authorization, token);
      assert.equal(call.headers.cookie, undefined, 'the sid cookie must not be forwarded along with Authorization');
      assert.equal(call.headers['x-frappe-site-name'], SITE);
      assert.equal(call.headers['x-frappe-socket-secret'], ctx.topo.main.socketSecret);
      // Connected as the token's user, not the cookie's.
      await receives(ctx, c, `user:${tokenUser.user}`);
      await ctx.topo.main.publish({ event: 'for_cookie_user', message: {}, namespace: SITE, room: `user:${cookieUser.user}` });
      await ctx.notReceived([c], 'for_cookie_user');
    },
  },
  {
    name: 'auth: the sid cookie alone is forwarded as exactly "sid=<sid>" (other browser cookies are not)',
    async run(ctx) {
      const u = ctx.newUser();
      const c = ctx.open(u, { cookie: undefined, headers: { Cookie: `system_user=yes; sid=${u.sid}; full_name=Ana%20Lima` } });
      await waitConnect(c.socket);
      const call = await userInfoCall(ctx, u.sid);
      assert.equal(call.headers.cookie, `sid=${u.sid}`);
      assert.equal(call.headers.authorization, undefined);
      assert.equal(call.headers['x-frappe-socket-secret'], ctx.topo.main.socketSecret);
    },
  },
  {
    name: 'auth: without GATEWAY_BACKEND_URL the Origin is the backend, and no X-Frappe-Socket-Secret is sent when none is configured',
    async run(ctx) {
      const { alt, frappe } = ctx.topo;
      const u = ctx.newUser();
      // alt's clients send Origin = the fake backend's URL (same hostname as the gateway's Host).
      const c = await ctx.connect(u, { variant: alt });
      const call = await userInfoCall(ctx, u.sid);
      assert.equal(call.headers['x-frappe-socket-secret'], undefined);
      assert.equal(call.headers['x-frappe-site-name'], SITE);
      assert.equal(call.headers.cookie, `sid=${u.sid}`);
      assert.equal(new URL(alt.origin).port, String(frappe.port));
      await receives(ctx, c, `user:${u.user}`);
    },
  },
  {
    name: 'auth: an expired sid connects as Guest, in rooms user:Guest and website only',
    async run(ctx) {
      const expired: TestUser = { user: 'Guest', user_type: 'Guest', sid: ctx.uid('expired-sid'), installed_apps: undefined };
      const guest = await ctx.connect(expired);
      await receives(ctx, guest, 'user:Guest');
      await receives(ctx, guest, 'website');
      await ctx.topo.main.publish({ event: 'system_users_only', message: {}, namespace: SITE, room: 'all' });
      await ctx.notReceived([guest], 'system_users_only');
      const inAll = (await ctx.topo.main.roomMembers(SITE, 'all')).flat();
      assert.ok(!inAll.some((m) => m.id === guest.socket.id), 'Guest must not be in room "all"');
    },
  },
  {
    name: 'auth: a System User is also in room "all"; a Website User is not',
    async run(ctx) {
      const system = await ctx.connect(ctx.newUser({ user_type: 'System User' }));
      const website = await ctx.connect(ctx.newUser({ user_type: 'Website User' }));
      await ctx.topo.main.waitJoined(SITE, system.socket, 'all');
      await ctx.topo.main.publish({ event: 'system_users_only', message: { n: 1 }, namespace: SITE, room: 'all' });
      assert.deepEqual(await system.rec.waitFor('system_users_only'), { n: 1 });
      await receives(ctx, website, 'website');
      await ctx.notReceived([website], 'system_users_only');
    },
  },
];

/** Runs last: an invariant over every request the gateways made during the whole topology run. */
export const BACKEND_PATH_CASE: ConformanceCase = {
  name: 'backend: every path the gateway calls begins with /api/method/frappe.realtime.',
  async run(ctx) {
    const calls = ctx.topo.frappe.requests.filter((r) => r.path !== CHAT_APP_PATH);
    assert.ok(calls.length > 20, `expected the earlier cases to have called the backend, got ${calls.length} calls`);
    const stray = calls.filter((r) => !r.path.startsWith('/api/method/frappe.realtime.'));
    assert.deepEqual(
      stray.map((r) => r.path),
      [],
    );
  },
};
