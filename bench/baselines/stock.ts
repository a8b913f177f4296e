/**
 * Baseline: Frappe's stock realtime server (realtime/index.js +
 * middlewares/authenticate.js + handlers/frappe_handlers.js) as the issue
 * compares against: socket.io 4.7.2 (the `socket.io-stock` alias) with its
 * in-memory adapter and 4.7 defaults plus Frappe's two options (cors
 * origin:true with credentials, cleanupEmptyChildNamespaces), ONE node-redis 4
 * subscriber on the events channel, `io.of(namespace).to(room).emit` per
 * message, and every auth and permission check an HTTP call to the backend
 * (no cache), as Frappe does.
 *
 * BENCH_WORKERS=0: one process (Frappe's deployment). BENCH_WORKERS=N: the
 * "every process consumes the channel" design: a sticky primary
 * (@socket.io/sticky) in front of N such processes.
 *
 * Env: BENCH_PORT, BENCH_REDIS_URL, BENCH_BACKEND_URL, BENCH_WORKERS, BENCH_CHANNEL.
 */
import cluster from 'node:cluster';
import http from 'node:http';
import { setupMaster, setupWorker } from '@socket.io/sticky';
import { createClient } from 'redis';
import { Server, type Socket } from 'socket.io-stock';

const port = Number(process.env['BENCH_PORT'] ?? 9000);
const redisUrl = process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const backendUrl = process.env['BENCH_BACKEND_URL'] ?? 'http://127.0.0.1:8000';
const workers = Number(process.env['BENCH_WORKERS'] ?? 0);
const channel = process.env['BENCH_CHANNEL'] ?? 'events';

function siteOf(socket: Socket): string {
  const h = socket.request.headers['x-frappe-site-name'];
  return (Array.isArray(h) ? h[0] : h) ?? '';
}

function cookieSid(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, v] = part.trim().split('=');
    if (k === 'sid') return v;
  }
  return undefined;
}

async function frappeGet(socket: Socket, path: string): Promise<Response> {
  const sid = cookieSid(socket.request.headers.cookie);
  return fetch(`${backendUrl}/api/method/${path}`, { headers: { cookie: `sid=${sid ?? ''}`, 'x-frappe-site-name': siteOf(socket) } });
}

async function startServer(server: http.Server, sticky: boolean): Promise<void> {
  const io = new Server(server, { cors: { origin: true, credentials: true }, cleanupEmptyChildNamespaces: true });
  if (sticky) {
    // @socket.io/sticky is typed against the 4.8 Server; at runtime it only uses io.engine / io.httpServer.
    setupWorker(io as unknown as Parameters<typeof setupWorker>[0]);
  }
  const realtime = io.of(/^\/.*$/);
  realtime.use((socket, next) => {
    if (`/${siteOf(socket)}` !== socket.nsp.name) return next(new Error('Invalid namespace'));
    if (!cookieSid(socket.request.headers.cookie))
      return next(new Error('No authentication method used. Use cookie or authorization header.'));
    frappeGet(socket, 'frappe.realtime.get_user_info')
      .then(async (res) => {
        if (!res.ok) throw new Error(`${res.status}`);
        const { message } = (await res.json()) as { message: { user: string; user_type: string } };
        (socket as unknown as { user: string }).user = message.user;
        (socket as unknown as { user_type: string }).user_type = message.user_type;
        next();
      })
      .catch((err: unknown) => next(new Error(`Unauthorized: ${String(err)}`)));
  });
  realtime.on('connection', (socket: Socket) => {
    const s = socket as unknown as { user: string; user_type: string };
    socket.join(`user:${s.user}`);
    socket.join('website');
    if (s.user_type === 'System User') socket.join('all');
    socket.on('doc_subscribe', (doctype: string, docname: string) => {
      frappeGet(socket, `frappe.realtime.has_permission?doctype=${encodeURIComponent(doctype)}&name=${encodeURIComponent(docname)}`)
        .then(async (res) => {
          if (res.ok && ((await res.json()) as { message: unknown }).message) socket.join(`doc:${doctype}/${docname}`);
        })
        .catch(() => undefined);
    });
    socket.on('ping', () => socket.emit('pong'));
  });

  // Frappe's get_redis_subscriber(): one node-redis client in subscriber mode.
  const sub = createClient({ url: redisUrl });
  sub.on('error', (err: unknown) => console.error('redis error', err));
  await sub.connect();
  await sub.subscribe(channel, (raw: string) => {
    const m = JSON.parse(raw) as { event: string; message: unknown; room?: string | null; namespace: string };
    if (m.room) io.of(`/${m.namespace}`).to(m.room).emit(m.event, m.message);
    else realtime.emit(m.event, m.message);
  });
}

if (workers > 0 && cluster.isPrimary) {
  const server = http.createServer();
  setupMaster(server, { loadBalancingMethod: 'least-connection' });
  for (let i = 0; i < workers; i++) cluster.fork();
  server.listen(port, '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
} else {
  const server = http.createServer();
  startServer(server, workers > 0).then(
    () => {
      // Ready only once subscribed: the bench's warm-up must not race the subscription.
      if (workers === 0) server.listen(port, '127.0.0.1', () => console.log('stock baseline listening'));
      else console.log('stock worker ready');
    },
    (err: unknown) => {
      console.error('stock baseline failed to start', err);
      process.exit(1);
    },
  );
}
