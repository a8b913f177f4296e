/**
 * A fake Frappe web server for one site, as a browser sees it behind nginx:
 * a login page and `POST /api/method/login` that sets an HttpOnly `sid`
 * cookie, `/logout` that leaves the browser with `sid=Guest` (as Frappe
 * does), a desk-like form page (`/app/todo/<name>`), a public website page
 * (`/`), the stock socket.io-client browser bundle, and the realtime
 * endpoints the gateway calls. Those endpoints are the harness's fake Frappe
 * (`startFakeFrappe`), reached through this server, so tests can assert
 * which credential the gateway forwarded and permissions are set with
 * `frappe.allow()`.
 *
 * The gateway talks to this server directly (GATEWAY_BACKEND_URL), as it
 * talks to gunicorn on a bench; the browser reaches it through nginx.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { FakeFrappe } from '../harness/fake-frappe';
import { repoRoot } from '../harness/paths';
import type { Scope } from '../harness/scope';

export const SOCKET_IO_BUNDLE_PATH = path.join(repoRoot, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');
const DESK_SCRIPT_PATH = path.join(__dirname, 'site', 'desk-realtime.js');
const DESK_CSS_PATH = path.join(__dirname, 'site', 'desk.css');

const REALTIME_PREFIX = '/api/method/frappe.realtime.';
const GUEST = 'Guest';
/** The doctype of the desk pages: `/app/todo/<name>` is a ToDo form. */
export const DESK_DOCTYPE = 'ToDo';

export interface SiteUser {
  /** Frappe user id (an email). */
  user: string;
  password: string;
  fullName: string;
  userType: 'System User' | 'Website User';
}

export interface FrappeSite {
  /** Direct URL of this server (what GATEWAY_BACKEND_URL points to). */
  readonly url: string;
  readonly port: number;
  readonly siteName: string;
  readonly frappe: FakeFrappe;
  addUser(user: SiteUser): void;
  /** Session ids currently logged in for `user`. */
  sessionsOf(user: string): string[];
  close(): Promise<void>;
}

export interface StartFrappeSiteOptions {
  scope?: Scope;
  siteName: string;
  /** Answers get_user_info / has_permission; sessions are registered in it at login. */
  frappe: FakeFrappe;
}

function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const key = part.slice(0, eq).trim();
    if (!out.has(key)) out.set(key, decodeURIComponent(part.slice(eq + 1).trim()));
  }
  return out;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** JSON that is safe inside a <script> element. */
function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c');
}

function page(title: string, body: string, boot?: unknown): string {
  const bootScript =
    boot === undefined
      ? ''
      : `<script>window.frappe = { boot: ${scriptJson(boot)} };</script>
<script src="/assets/socket.io-client/socket.io.min.js"></script>
<script src="/assets/desk-realtime.js"></script>`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeHtml(title)}</title>
<link rel="stylesheet" href="/assets/desk.css">
</head>
<body>
${body}
${bootScript}
</body>
</html>
`;
}

function loginPage(siteName: string): string {
  return page(
    `Login | ${siteName}`,
    `<main class="login">
  <h1>Login to ${escapeHtml(siteName)}</h1>
  <form id="login-form">
    <label>Email <input id="login-email" name="usr" type="text" autocomplete="username"></label>
    <label>Password <input id="login-password" name="pwd" type="password" autocomplete="current-password"></label>
    <button id="login-submit" type="submit">Login</button>
    <p id="login-error" class="error" hidden></p>
  </form>
</main>
<script>
  // Like Frappe's login page: an XHR to /api/method/login, then go to redirect-to.
  document.getElementById('login-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var body = new URLSearchParams({ usr: document.getElementById('login-email').value, pwd: document.getElementById('login-password').value });
    fetch('/api/method/login', { method: 'POST', body: body, headers: { Accept: 'application/json' } })
      .then(function (r) { return r.json().then(function (j) { return { ok: r.ok, json: j }; }); })
      .then(function (res) {
        if (!res.ok) {
          var err = document.getElementById('login-error');
          err.textContent = res.json.message;
          err.hidden = false;
          return;
        }
        window.location.href = new URLSearchParams(window.location.search).get('redirect-to') || res.json.home_page;
      });
  });
</script>`,
  );
}

interface Boot {
  sitename: string;
  user: string;
  full_name: string;
  page: 'form' | 'website';
  doctype: string;
  docname: string;
  task_id: string | null;
}

function deskPage(boot: Boot): string {
  return page(
    `${boot.docname} | ${boot.doctype}`,
    `<header class="navbar">
  <span class="brand">${escapeHtml(boot.sitename)}</span>
  <span id="rt-indicator" class="indicator grey" title="realtime"></span>
  <span id="navbar-user">${escapeHtml(boot.full_name)}</span>
  <a id="logout" href="/logout?redirect-to=${encodeURIComponent(`/?doc=${encodeURIComponent(boot.docname)}`)}">Log out</a>
</header>
<div class="layout">
  <aside class="sidebar">
    <h3>${escapeHtml(boot.doctype)} list updates</h3>
    <ul id="list-updates"></ul>
  </aside>
  <main class="form">
    <h2><span id="form-doctype">${escapeHtml(boot.doctype)}</span> <span id="form-docname">${escapeHtml(boot.docname)}</span></h2>
    <div id="doc-banner" class="banner" hidden>This document has been modified after you opened it.</div>
    <p>Last modified: <span id="doc-modified">never</span></p>
    <div class="viewers">Viewing: <ul id="viewers"></ul></div>
    <section id="progress" class="progress-dialog" hidden>
      <h4 id="progress-title"></h4>
      <progress id="progress-bar" max="100" value="0"></progress>
      <span id="progress-percent"></span>
      <p id="progress-description"></p>
    </section>
  </main>
</div>
<div id="msgprint" class="modal" hidden><div class="modal-body"><h4>Message</h4><p id="msgprint-message"></p></div></div>
<footer class="realtime-debug">
  <span>status: <b id="rt-status">connecting</b></span>
  <span>transport: <b id="rt-transport">-</b> (first: <b id="rt-first-transport">-</b>, upgraded to: <b id="rt-upgraded">-</b>)</span>
  <span>connects: <b id="rt-connects">0</b></span>
  <span>socket: <b id="rt-socket-id">-</b></span>
  <span>pongs: <b id="rt-pongs">0</b> <button id="rt-ping" type="button">ping</button></span>
  <ol id="event-log"></ol>
</footer>`,
    boot,
  );
}

function websitePage(boot: Boot): string {
  return page(
    `${boot.sitename}`,
    `<header class="navbar web">
  <span class="brand">${escapeHtml(boot.sitename)}</span>
  <span id="rt-indicator" class="indicator grey" title="realtime"></span>
  <span id="navbar-user">${escapeHtml(boot.user === GUEST ? 'Guest' : boot.full_name)}</span>
  <a href="/login">Login</a>
</header>
<main class="website">
  <h1>Welcome to ${escapeHtml(boot.sitename)}</h1>
  <p>Public page. It loads the realtime client and tries the same subscriptions as the desk form
     (<span id="form-doctype">${escapeHtml(boot.doctype)}</span> <span id="form-docname">${escapeHtml(boot.docname)}</span>);
     the permission checks must refuse them for Guest.</p>
  <p>Last modified: <span id="doc-modified">never</span></p>
  <ul id="list-updates"></ul>
  <ul id="viewers"></ul>
</main>
<div id="msgprint" class="modal" hidden><div class="modal-body"><h4>Message</h4><p id="msgprint-message"></p></div></div>
<footer class="realtime-debug">
  <span>status: <b id="rt-status">connecting</b></span>
  <span>transport: <b id="rt-transport">-</b> (first: <b id="rt-first-transport">-</b>, upgraded to: <b id="rt-upgraded">-</b>)</span>
  <span>connects: <b id="rt-connects">0</b></span>
  <span>socket: <b id="rt-socket-id">-</b></span>
  <span>pongs: <b id="rt-pongs">0</b> <button id="rt-ping" type="button">ping</button></span>
  <ol id="event-log"></ol>
</footer>`,
    boot,
  );
}

export async function startFrappeSite(options: StartFrappeSiteOptions): Promise<FrappeSite> {
  const { siteName, frappe } = options;
  const users = new Map<string, SiteUser>();
  const sessions = new Map<string, string>(); // sid -> user
  const assets = new Map<string, { type: string; body: Buffer }>([
    ['/assets/socket.io-client/socket.io.min.js', { type: 'application/javascript', body: readFileSync(SOCKET_IO_BUNDLE_PATH) }],
    ['/assets/desk-realtime.js', { type: 'application/javascript', body: readFileSync(DESK_SCRIPT_PATH) }],
    ['/assets/desk.css', { type: 'text/css', body: readFileSync(DESK_CSS_PATH) }],
  ]);

  const send = (
    res: http.ServerResponse,
    status: number,
    body: string | Buffer,
    type: string,
    headers: http.OutgoingHttpHeaders = {},
  ): void => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', ...headers });
    res.end(body);
  };
  const html = (res: http.ServerResponse, body: string, headers: http.OutgoingHttpHeaders = {}): void =>
    send(res, 200, body, 'text/html; charset=utf-8', headers);
  const json = (res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void =>
    send(res, status, JSON.stringify(body), 'application/json', headers);
  const redirect = (res: http.ServerResponse, location: string, headers: http.OutgoingHttpHeaders = {}): void => {
    res.writeHead(302, { location, 'content-length': 0, ...headers });
    res.end();
  };

  /** Frappe's cookies: `sid` is HttpOnly; the user cookies are readable by the page. */
  const sessionCookies = (sid: string, user: SiteUser | undefined): string[] => {
    const base = 'Path=/; SameSite=Lax';
    if (user === undefined) {
      const gone = `${base}; Expires=Thu, 01 Jan 1970 00:00:00 GMT`;
      return [`sid=Guest; ${base}; HttpOnly`, `user_id=; ${gone}`, `full_name=; ${gone}`, `system_user=; ${gone}`];
    }
    return [
      `sid=${sid}; ${base}; HttpOnly`,
      `user_id=${encodeURIComponent(user.user)}; ${base}`,
      `full_name=${encodeURIComponent(user.fullName)}; ${base}`,
      `system_user=${user.userType === 'System User' ? 'yes' : 'no'}; ${base}`,
    ];
  };

  const currentUser = (req: http.IncomingMessage): { sid: string | undefined; user: SiteUser | undefined } => {
    const sid = parseCookies(req.headers.cookie).get('sid');
    const name = sid === undefined ? undefined : sessions.get(sid);
    return { sid, user: name === undefined ? undefined : users.get(name) };
  };

  /** The realtime endpoints: relayed to the fake Frappe unchanged (method, path, query, headers, body). */
  const relayRealtime = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): void => {
    const headers = { ...req.headers, host: `${frappe.host}:${frappe.port}` };
    const upstream = http.request(
      { host: frappe.host, port: frappe.port, method: req.method, path: req.url, headers, agent: false },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.once('error', (err) => {
      if (!res.headersSent) json(res, 502, { exc_type: 'BadGateway', message: err.message });
      else res.destroy();
    });
    upstream.end(body);
  };

  const route = (req: http.IncomingMessage, res: http.ServerResponse, body: Buffer): void => {
    const url = new URL(req.url ?? '/', 'http://site.invalid');
    const method = req.method ?? 'GET';
    if (url.pathname.startsWith(REALTIME_PREFIX)) return relayRealtime(req, res, body);

    const asset = assets.get(url.pathname);
    if (asset !== undefined && method === 'GET') return send(res, 200, asset.body, asset.type);

    if (url.pathname === '/login' && method === 'GET') return html(res, loginPage(siteName));

    if (url.pathname === '/api/method/login' && method === 'POST') {
      const form = new URLSearchParams(body.toString('utf8'));
      const user = users.get(form.get('usr') ?? '');
      if (user === undefined || user.password !== form.get('pwd')) {
        return json(res, 401, { message: 'Invalid Login. Try again.', exc_type: 'AuthenticationError' });
      }
      const sid = randomBytes(28).toString('hex');
      sessions.set(sid, user.user);
      frappe.addSession(sid, { user: user.user, user_type: user.userType });
      return json(
        res,
        200,
        { message: 'Logged In', home_page: '/app', full_name: user.fullName },
        { 'set-cookie': sessionCookies(sid, user) },
      );
    }

    if (url.pathname === '/logout' && method === 'GET') {
      const { sid } = currentUser(req);
      if (sid !== undefined && sessions.delete(sid)) frappe.removeSession(sid);
      const to = url.searchParams.get('redirect-to') ?? '/';
      return redirect(res, to.startsWith('/') && !to.startsWith('//') ? to : '/', { 'set-cookie': sessionCookies(GUEST, undefined) });
    }

    const form = /^\/app\/todo\/([^/]+)$/.exec(url.pathname);
    if (form !== null && method === 'GET') {
      const { user } = currentUser(req);
      if (user === undefined) return redirect(res, `/login?redirect-to=${encodeURIComponent(url.pathname + url.search)}`);
      const docname = decodeURIComponent(form[1] ?? '');
      return html(
        res,
        deskPage({
          sitename: siteName,
          user: user.user,
          full_name: user.fullName,
          page: 'form',
          doctype: DESK_DOCTYPE,
          docname,
          task_id: url.searchParams.get('task'),
        }),
      );
    }

    if (url.pathname === '/' && method === 'GET') {
      const { sid, user } = currentUser(req);
      const boot: Boot = {
        sitename: siteName,
        user: user?.user ?? GUEST,
        full_name: user?.fullName ?? GUEST,
        page: 'website',
        doctype: DESK_DOCTYPE,
        docname: url.searchParams.get('doc') ?? 'TODO-0001',
        task_id: null,
      };
      // Frappe answers every cookie-less request with `sid=Guest`.
      return html(res, websitePage(boot), sid === undefined ? { 'set-cookie': sessionCookies(GUEST, undefined) } : {});
    }

    if (url.pathname === '/favicon.ico') return send(res, 204, '', 'image/x-icon');
    return json(res, 404, { exc_type: 'DoesNotExistError', message: `Page ${url.pathname} not found` });
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => route(req, res, Buffer.concat(chunks)));
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  const site: FrappeSite = {
    url: `http://127.0.0.1:${port}`,
    port,
    siteName,
    frappe,
    addUser: (user) => void users.set(user.user, user),
    sessionsOf: (user) => [...sessions].filter(([, u]) => u === user).map(([sid]) => sid),
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
  options.scope?.add(site);
  return site;
}
