/**
 * The connect checks of docs/protocol.md section 6 as pure functions: hostname
 * parsing, site resolution order, the sid cookie, and the order of the checks
 * (with a stub backend).
 */
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import { describe, test } from 'node:test';
import { AUTH_ERRORS, authenticate, hostnameOf, parseSidCookie, resolveSite } from '../../src/frappe/auth';
import type { FrappeBackend, RequestContext, UserInfo } from '../../src/frappe/backend';
import { GatewayError } from '../../src/shared/errors';

describe('hostnameOf', () => {
  const cases: [string | undefined, string | undefined][] = [
    [undefined, undefined],
    ['', undefined],
    ['site1.local', 'site1.local'],
    ['site1.local:8000', 'site1.local'],
    ['http://site1.local', 'site1.local'],
    ['https://erp.example.com:8443/app/todo?x=1', 'erp.example.com'],
    ['127.0.0.1:9000', '127.0.0.1'],
    ['localhost', 'localhost'],
    ['[::1]:9000', '::1'],
    ['http://[fd00::2]:8000', 'fd00::2'],
    [' site1.local ', 'site1.local'],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => assert.equal(hostnameOf(input), expected));
  }
});

describe('resolveSite (order: x-frappe-site-name, default site for localhost/127.0.0.1, Origin, Host)', () => {
  const h = (o: IncomingHttpHeaders): IncomingHttpHeaders => o;
  test('the x-frappe-site-name header wins over everything, port stripped', () => {
    assert.equal(
      resolveSite(h({ 'x-frappe-site-name': 'site2.local:8000', host: '127.0.0.1:9000', origin: 'http://a.example' }), 'site1.local'),
      'site2.local',
    );
  });
  test('the default site when the Host is localhost or 127.0.0.1 (any port), even with an Origin', () => {
    assert.equal(resolveSite(h({ host: 'localhost:9000', origin: 'http://a.example' }), 'site1.local'), 'site1.local');
    assert.equal(resolveSite(h({ host: '127.0.0.1' }), 'site1.local'), 'site1.local');
  });
  test('no default site configured: localhost falls through to the Origin, then the Host', () => {
    assert.equal(resolveSite(h({ host: 'localhost:9000', origin: 'http://a.example:8000' }), null), 'a.example');
    assert.equal(resolveSite(h({ host: 'localhost:9000' }), null), 'localhost');
  });
  test('a non-local Host: the Origin hostname before the Host hostname', () => {
    assert.equal(resolveSite(h({ host: 'b.example:9000', origin: 'https://a.example' }), 'site1.local'), 'a.example');
    assert.equal(resolveSite(h({ host: 'b.example:9000' }), 'site1.local'), 'b.example');
  });
  test('nothing to go on: undefined', () => {
    assert.equal(resolveSite(h({}), null), undefined);
  });
});

describe('parseSidCookie', () => {
  const cases: [string | undefined, string | undefined][] = [
    [undefined, undefined],
    ['', undefined],
    ['sid=abc123', 'abc123'],
    ['system_user=yes; sid=abc123; full_name=Ana%20Lima', 'abc123'],
    ['sid=', undefined],
    ['xsid=nope; sidx=nope', undefined],
    ['sid="quoted"', 'quoted'],
    ['sid=a%2Fb', 'a/b'],
    ['sid=%E0%A4%A', '%E0%A4%A'],
    ['  sid = spaced ; other=1', 'spaced'],
    ['sid=first; sid=second', 'first'],
  ];
  for (const [input, expected] of cases) {
    test(`${JSON.stringify(input)} -> ${JSON.stringify(expected)}`, () => assert.equal(parseSidCookie(input), expected));
  }
});

describe('authenticate: checks in order, exactly one credential', () => {
  const guest: UserInfo = { user: 'Guest', user_type: 'Guest', installed_apps: [] };
  function stub(answer: UserInfo | Error): { backend: FrappeBackend; calls: RequestContext[] } {
    const calls: RequestContext[] = [];
    const backend = {
      getUserInfo: (ctx: RequestContext) => {
        calls.push(ctx);
        return answer instanceof Error ? Promise.reject(answer) : Promise.resolve({ info: answer, cached: false });
      },
    } as unknown as FrappeBackend;
    return { backend, calls };
  }
  const opts = { defaultSite: 'site1.local', allowedOrigins: [] as string[] };
  const base: IncomingHttpHeaders = { host: '127.0.0.1:9000', origin: 'http://127.0.0.1:9000', cookie: 'sid=s1' };

  test('the namespace check comes first (even without Origin or credentials)', async () => {
    const { backend, calls } = stub(guest);
    const r = await authenticate({ namespace: '/other.local', headers: { host: '127.0.0.1:9000' } }, opts, backend);
    assert.deepEqual(r, { ok: false, reason: 'namespace', message: AUTH_ERRORS.invalidNamespace });
    assert.equal(calls.length, 0);
  });

  test('then the origin check: a missing or different Origin', async () => {
    const { backend, calls } = stub(guest);
    for (const origin of [undefined, 'http://evil.example']) {
      const headers: IncomingHttpHeaders = { ...base, origin };
      const r = await authenticate({ namespace: '/site1.local', headers }, opts, backend);
      assert.deepEqual(r, { ok: false, reason: 'origin', message: AUTH_ERRORS.invalidOrigin });
    }
    assert.equal(calls.length, 0);
  });

  test('an allow-listed Origin hostname passes the origin check (an addition, off by default)', async () => {
    const { backend } = stub(guest);
    const headers: IncomingHttpHeaders = {
      'x-frappe-site-name': 'site1.local',
      host: 'gw.internal:9000',
      origin: 'https://erp.example.com',
      cookie: 'sid=s1',
    };
    assert.equal((await authenticate({ namespace: '/site1.local', headers }, opts, backend)).ok, false);
    assert.equal(
      (await authenticate({ namespace: '/site1.local', headers }, { ...opts, allowedOrigins: ['erp.example.com'] }, backend)).ok,
      true,
    );
  });

  test('then credentials: neither sid nor Authorization', async () => {
    const { backend, calls } = stub(guest);
    const r = await authenticate({ namespace: '/site1.local', headers: { ...base, cookie: 'other=1' } }, opts, backend);
    assert.deepEqual(r, { ok: false, reason: 'no_auth', message: AUTH_ERRORS.noAuth });
    assert.equal(AUTH_ERRORS.noAuth, 'No authentication method used. Use cookie or authorization header.');
    assert.equal(calls.length, 0);
  });

  test('Authorization wins over the sid cookie; the Origin travels along (the backend when none is configured)', async () => {
    const { backend, calls } = stub({ user: 'ana@example.com', user_type: 'System User', installed_apps: ['frappe'] });
    const r = await authenticate({ namespace: '/site1.local', headers: { ...base, authorization: 'token k:s' } }, opts, backend);
    assert.ok(r.ok);
    assert.deepEqual(calls, [
      { site: 'site1.local', credential: { kind: 'authorization', value: 'token k:s' }, origin: 'http://127.0.0.1:9000' },
    ]);
    const cookieOnly = stub(guest);
    await authenticate({ namespace: '/site1.local', headers: base }, opts, cookieOnly.backend);
    assert.deepEqual(cookieOnly.calls[0]?.credential, { kind: 'sid', value: 's1' });
  });

  test('a backend failure is "Unauthorized: <reason>"', async () => {
    const { backend } = stub(new GatewayError('GW_ERR_BACKEND_STATUS', 'backend answered HTTP 500'));
    const r = await authenticate({ namespace: '/site1.local', headers: base }, opts, backend);
    assert.deepEqual(r, { ok: false, reason: 'backend', message: 'Unauthorized: backend answered HTTP 500', retryable: false });
    const outage = stub(new GatewayError('GW_ERR_BACKEND_TIMEOUT', 'backend did not answer within 5000 ms'));
    const o = await authenticate({ namespace: '/site1.local', headers: base }, opts, outage.backend);
    assert.deepEqual(o, { ok: false, reason: 'backend', message: 'Unauthorized: backend did not answer within 5000 ms', retryable: true });
  });

  test('site case (6.1): the namespace matches the resolved site case-insensitively and its spelling is the site sent to the backend', async () => {
    const { backend, calls } = stub(guest);
    // nginx's $host is lowercase; the desk connects to the site folder's name.
    const viaHeader: IncomingHttpHeaders = {
      'x-frappe-site-name': 'site1.local',
      host: 'site1.local',
      origin: 'http://site1.local',
      cookie: 'sid=s1',
    };
    const r = await authenticate({ namespace: '/Site1.Local', headers: viaHeader }, opts, backend);
    assert.ok(r.ok);
    assert.equal(r.site, 'Site1.Local');
    assert.equal(calls[0]?.site, 'Site1.Local');
    // Host and Origin only, mixed case on either side.
    const viaHost: IncomingHttpHeaders = { host: 'SITE1.local:8000', origin: 'http://site1.LOCAL', cookie: 'sid=s1' };
    const h = await authenticate({ namespace: '/Site1.Local', headers: viaHost }, { ...opts, defaultSite: null }, backend);
    assert.equal(h.ok && h.site, 'Site1.Local');
    // The default site, configured in one spelling, accepts another and keeps the namespace's.
    const d = await authenticate({ namespace: '/SITE1.LOCAL', headers: base }, opts, backend);
    assert.equal(d.ok && d.site, 'SITE1.LOCAL');
    // Case-insensitive is not "anything goes".
    const other = await authenticate({ namespace: '/Site2.Local', headers: viaHeader }, opts, backend);
    assert.equal(!other.ok && other.reason, 'namespace');
    // DNS folds ASCII letters only: a non-ASCII capital is not its lowercase.
    const unicode = await authenticate(
      { namespace: '/\u0130.local', headers: { ...viaHeader, 'x-frappe-site-name': '\u0069\u0307.local' } },
      opts,
      backend,
    );
    assert.equal(!unicode.ok && unicode.reason, 'namespace');
  });
});
