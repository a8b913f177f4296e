/**
 * Ceiling baseline: a raw `ws` server that speaks just enough Engine.IO /
 * Socket.IO for the lean client (open packet, CONNECT reply) and, for each
 * event from the `events` channel, encodes the frame once and writes it to
 * every member of the room. No auth, no socket.io: the cost of the writes.
 * The bench's sids are `s.<user>`; the user is read from the cookie.
 *
 * Env: BENCH_PORT, BENCH_REDIS_URL, BENCH_CHANNEL.
 */
import http from 'node:http';
import { Redis } from 'ioredis';
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env['BENCH_PORT'] ?? 9000);
const redisUrl = process.env['BENCH_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
const channel = process.env['BENCH_CHANNEL'] ?? 'events';

/** namespace -> room -> sockets */
const rooms = new Map<string, Map<string, Set<WebSocket>>>();
function join(nsp: string, room: string, ws: WebSocket): void {
  let r = rooms.get(nsp);
  if (!r) rooms.set(nsp, (r = new Map()));
  let s = r.get(room);
  if (!s) r.set(room, (s = new Set()));
  s.add(ws);
}

const server = http.createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
let n = 0;
wss.on('connection', (ws, req) => {
  const sid = /(?:^|;\s*)sid=([^;]*)/.exec(req.headers.cookie ?? '')?.[1] ?? '';
  const user = sid.startsWith('s.') ? sid.slice(2) : 'Guest';
  const joined: [string, string][] = [];
  ws.send(`0{"sid":"r${n++}","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`);
  ws.on('message', (data) => {
    const text = data.toString();
    if (text.startsWith('40/')) {
      const nsp = text.slice(2, text.indexOf(','));
      for (const room of [`user:${user}`, 'website', 'all']) {
        join(nsp, room, ws);
        joined.push([nsp, room]);
      }
      ws.send(`40${nsp},{"sid":"r${n++}"}`);
    } else if (text.startsWith('42/')) {
      const comma = text.indexOf(',');
      const nsp = text.slice(2, comma);
      const args = JSON.parse(text.slice(comma + 1)) as string[];
      if (args[0] === 'doc_subscribe') {
        join(nsp, `doc:${args[1]}/${args[2]}`, ws);
        joined.push([nsp, `doc:${args[1]}/${args[2]}`]);
      }
    }
  });
  ws.on('close', () => {
    for (const [nsp, room] of joined) rooms.get(nsp)?.get(room)?.delete(ws);
  });
});

const sub = new Redis(redisUrl);
sub.subscribe(channel).catch((err: unknown) => console.error('subscribe failed', err));
sub.on('message', (_ch: string, raw: string) => {
  const m = JSON.parse(raw) as { event: string; message: unknown; room?: string | null; namespace: string };
  const nsp = `/${m.namespace}`;
  const members = m.room ? rooms.get(nsp)?.get(m.room) : undefined;
  if (!members) return;
  const frame = `42${nsp},${JSON.stringify([m.event, m.message])}`;
  for (const ws of members) ws.send(frame);
});
server.listen(port, '127.0.0.1', () => console.log('raw-ws baseline listening'));
