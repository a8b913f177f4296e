// Behaviour check of the nginx examples with a real nginx and real Socket.IO
// peers, all on 127.0.0.1 (run by deploy/verify.sh; needs `nginx` on PATH or
// NGINX=/path/to/nginx, and the repo's node_modules).
//
// - frappe-single-host.conf: one Socket.IO server behind it; a client connects
//   with long-polling first, upgrades to WebSocket, and the server sees the
//   headers the gateway relies on (X-Frappe-Site-Name, Origin, Host).
// - frappe-multi-host.conf: three independent Socket.IO servers (no shared
//   state, like gateway hosts whose sessions live in one process each). Clients
//   that keep cookies, as browsers do, must all complete polling + upgrade,
//   spread over more than one server. Control: clients that keep no cookies
//   and only poll must mostly fail, which shows that the routing cookie is what
//   keeps a session on its server.
//
// The upstream addresses of the example (10.0.0.x) are replaced by the local
// servers' addresses in a temporary copy; nothing leaves the loopback.

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, chmodSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Server } = require('socket.io');
const { io: connect } = require('socket.io-client');

const here = dirname(fileURLToPath(import.meta.url));
const NGINX = process.env.NGINX || 'nginx';
const DEADLINE_MS = 60_000;
const failures = [];
const cleanups = [];

const fail = (msg) => {
  failures.push(msg);
  console.error(`  FAIL ${msg}`);
};
const ok = (msg) => console.log(`  ok   ${msg}`);

/** Splits an example into its http{} part and its server{} part (the marker line). */
function splitExample(text) {
  const marker = text.search(/^# ---- server \{\} context/m);
  if (marker < 0) throw new Error('server {} context marker not found');
  return { http: text.slice(0, marker), server: text.slice(marker) };
}

function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

async function freePort() {
  const s = createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

/** A plain Socket.IO server that tells each client who it is and what headers it saw. */
async function startBackend(name) {
  const http = createServer();
  const io = new Server(http, { pingInterval: 25_000, pingTimeout: 20_000 });
  io.on('connection', (socket) => {
    const h = socket.handshake.headers;
    socket.emit('who', { name, site: h['x-frappe-site-name'], origin: h.origin, host: h.host });
    socket.on('echo', (v, ack) => ack(v));
  });
  const port = await listen(http);
  cleanups.push(() => new Promise((r) => io.close(() => r())));
  return { name, port };
}

async function startNginx(dir, httpPart, serverPart, port) {
  mkdirSync(join(dir, 'tmp'), { recursive: true });
  writeFileSync(join(dir, 'http.conf'), httpPart);
  if (serverPart !== null) writeFileSync(join(dir, 'server.conf'), serverPart);
  const user = process.getuid && process.getuid() === 0 ? 'user root root;' : '';
  // Without a server part the http part brings its own server {} block.
  const wrapper =
    serverPart === null
      ? ''
      : `server {\n        listen 127.0.0.1:${port};\n        server_name _;\n        include ${dir}/server.conf;\n    }`;
  writeFileSync(
    join(dir, 'nginx.conf'),
    `${user}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
daemon off;
worker_processes 1;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path ${dir}/tmp/body;
    proxy_temp_path ${dir}/tmp/proxy;
    fastcgi_temp_path ${dir}/tmp/fastcgi;
    uwsgi_temp_path ${dir}/tmp/uwsgi;
    scgi_temp_path ${dir}/tmp/scgi;
    include ${dir}/http.conf;
    ${wrapper}
}
`,
  );
  const child = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'inherit', 'inherit'] });
  cleanups.push(
    () =>
      new Promise((r) => {
        if (child.exitCode !== null) return r();
        child.once('exit', () => r());
        child.kill('SIGTERM'); // fast shutdown: do not wait for held long-polls
      }),
  );
  // Ready when the port answers.
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}; see ${dir}/error.log`);
    const up = await fetch(`http://127.0.0.1:${port}/socket.io/?EIO=4&transport=polling`).then(
      () => true,
      () => false,
    );
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('nginx did not start listening');
}

/**
 * One client: polling first, then the WebSocket upgrade, then an acked echo.
 * Resolves { ok, name, info, error }.
 */
function runClient(url, { cookies, transports = ['polling', 'websocket'] }) {
  return new Promise((resolve) => {
    const socket = connect(url, {
      transports,
      upgrade: transports.includes('websocket'),
      withCredentials: cookies,
      reconnection: false,
      timeout: 5000,
      forceNew: true,
    });
    let info = null;
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.close();
      resolve(result);
    };
    const timer = setTimeout(() => done({ ok: false, error: 'timeout' }), 10_000);
    socket.on('connect_error', (err) => done({ ok: false, error: err.message }));
    socket.on('disconnect', (reason) => done({ ok: false, error: `disconnect: ${reason}` }));
    socket.on('who', (w) => {
      info = w;
      const finish = () =>
        socket
          .timeout(5000)
          .emitWithAck('echo', 42)
          .then(
            (v) => done({ ok: v === 42, name: info.name, info, transport: socket.io.engine.transport.name }),
            (e) => done({ ok: false, error: `echo: ${e.message}` }),
          );
      if (!transports.includes('websocket') || socket.io.engine.transport.name === 'websocket') finish();
      else socket.io.engine.once('upgrade', finish);
    });
  });
}

async function checkSingleHost(root) {
  console.log('frappe-single-host.conf');
  const backend = await startBackend('solo');
  const port = await freePort();
  const { http, server } = splitExample(readFileSync(join(here, 'frappe-single-host.conf'), 'utf8'));
  const localHttp = http.replace(/server 127\.0\.0\.1:9000\b/, `server 127.0.0.1:${backend.port}`);
  if (localHttp === http) throw new Error('upstream server line not found in frappe-single-host.conf');
  const dir = join(root, 'single');
  mkdirSync(dir);
  await startNginx(dir, localHttp, server, port);
  const r = await runClient(`http://127.0.0.1:${port}`, { cookies: false });
  if (!r.ok) return fail(`polling + upgrade through the single-host config: ${r.error}`);
  ok(`polling -> ${r.transport} upgrade, acked echo`);
  if (r.info.site !== '127.0.0.1') fail(`X-Frappe-Site-Name was ${JSON.stringify(r.info.site)}, expected the Host name`);
  else ok('X-Frappe-Site-Name = $host');
  if (r.info.origin !== `http://127.0.0.1:${port}`) fail(`Origin was ${JSON.stringify(r.info.origin)}`);
  else ok('Origin = $scheme://$http_host');
  if (r.info.host !== '127.0.0.1') fail(`Host was ${JSON.stringify(r.info.host)}`);
  else ok('Host = $host');
}

async function checkMultiHost(root) {
  console.log('frappe-multi-host.conf');
  const backends = await Promise.all(['gw-a', 'gw-b', 'gw-c'].map(startBackend));
  const port = await freePort();
  const { http, server } = splitExample(readFileSync(join(here, 'frappe-multi-host.conf'), 'utf8'));
  let i = 0;
  const localHttp = http.replace(/server 10\.0\.0\.\d+:9000/g, () => `server 127.0.0.1:${backends[i++ % backends.length].port}`);
  if (i !== backends.length) throw new Error(`expected ${backends.length} upstream server lines, found ${i}`);
  const dir = join(root, 'multi');
  mkdirSync(dir);
  await startNginx(dir, localHttp, server, port);
  await checkSticky(`http://127.0.0.1:${port}`, 3);
}

// deploy/swarm/nginx-gateway.conf: the slot services become local servers.
// `resolve` is dropped from the copy (it re-resolves DNS names, and the copy
// has addresses; nginx before 1.27.3 does not know it), the listen port moves
// to a free loopback port. The Docker DNS resolver line is never used then.
async function checkSwarm(root) {
  console.log('swarm/nginx-gateway.conf');
  const conf = readFileSync(join(here, '..', 'swarm', 'nginx-gateway.conf'), 'utf8');
  const slots = [...conf.matchAll(/^\s*server gateway-\d+:9000\b/gm)].length;
  if (slots < 2) throw new Error(`expected at least 2 gateway-N server lines, found ${slots}`);
  const backends = await Promise.all(Array.from({ length: slots }, (_, k) => startBackend(`gateway-${k + 1}`)));
  const port = await freePort();
  let i = 0;
  let local = conf.replace(/server gateway-(\d+):9000 resolve/g, () => `server 127.0.0.1:${backends[i++].port}`);
  if (i !== slots) throw new Error('every gateway-N server line must carry `resolve`');
  local = local.replace(/^\s*listen 8080;/m, `    listen 127.0.0.1:${port};`);
  const dir = join(root, 'swarm');
  mkdirSync(dir);
  await startNginx(dir, local, null, port);
  const health = await fetch(`http://127.0.0.1:${port}/nginx-health`);
  if (health.status !== 200) fail(`/nginx-health answered ${health.status}`);
  else ok('/nginx-health answers 200');
  const other = await fetch(`http://127.0.0.1:${port}/app`);
  if (other.status !== 404) fail(`/app answered ${other.status}, expected 404`);
  else ok('paths other than /socket.io are not proxied');
  await checkSticky(`http://127.0.0.1:${port}`, slots);
}

async function checkSticky(url, servers) {
  const withCookies = await Promise.all(Array.from({ length: 30 }, () => runClient(url, { cookies: true })));
  const good = withCookies.filter((r) => r.ok);
  const spread = new Set(good.map((r) => r.name));
  if (good.length !== withCookies.length) {
    const errors = [...new Set(withCookies.filter((r) => !r.ok).map((r) => r.error))].join(', ');
    fail(`${withCookies.length - good.length}/${withCookies.length} cookie-keeping clients failed (${errors})`);
  } else ok(`${good.length}/${withCookies.length} cookie-keeping clients: polling -> websocket upgrade, acked echo`);
  if (spread.size < Math.min(2, servers)) fail(`all sessions landed on ${[...spread].join(', ')}: no spreading`);
  else ok(`sessions spread over ${spread.size} servers (${[...spread].sort().join(', ')})`);

  const noCookies = await Promise.all(Array.from({ length: 10 }, () => runClient(url, { cookies: false, transports: ['polling'] })));
  const lost = noCookies.filter((r) => !r.ok).length;
  if (lost === 0) fail('control: cookie-less polling clients all succeeded, so the check above proves nothing');
  else ok(`control: ${lost}/${noCookies.length} cookie-less polling-only clients lost their session, as documented`);

  const wsOnly = await Promise.all(Array.from({ length: 5 }, () => runClient(url, { cookies: false, transports: ['websocket'] })));
  if (wsOnly.some((r) => !r.ok)) fail('cookie-less websocket-only clients failed');
  else ok('cookie-less websocket-only clients connect (the documented alternative)');
}

async function main() {
  const root = mkdtempSync(join(tmpdir(), 'rtgw-nginx-'));
  chmodSync(root, 0o755);
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const deadline = setTimeout(() => {
    console.error(`check-proxy: gave up after ${DEADLINE_MS} ms`);
    process.exit(2);
  }, DEADLINE_MS);
  try {
    await checkSingleHost(root);
    await checkMultiHost(root);
    await checkSwarm(root);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  } finally {
    for (const c of cleanups.reverse())
      await Promise.resolve()
        .then(c)
        .catch(() => {});
    clearTimeout(deadline);
  }
  if (failures.length > 0) {
    console.error(`check-proxy: ${failures.length} failure(s)`);
    process.exit(1);
  }
  console.log('check-proxy: all good');
}

await main();
