/**
 * The worker fast path's broadcast write (`deliverPreEncoded`, fast-adapter.ts)
 * against a real socket.io server and real clients: a site broadcast reaches
 * every socket of its namespace and no other, a room broadcast only the room,
 * in order, and each idle WebSocket gets the frame as ONE socket write (not
 * cork, header write, payload write, uncork and a writev per client); when
 * several site broadcasts are delivered on one turn (a worker behind), the
 * second and later ones leave in one writev per client.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo, Socket as NetSocket } from 'node:net';
import { test } from 'node:test';
import { Server, type Namespace, type Socket } from 'socket.io';
import { io as ioClient, type Socket as ClientSocket } from 'socket.io-client';
import { closeEventArgs, openEventArgs, sitePacket } from '../../src/events/encode';
import { deliverPreEncoded } from '../../src/realtime/fast-adapter';
import { EventRecorder } from '../harness/clients';
import { withScope, type Scope } from '../harness/scope';

const SITE = 'site1.local';
const OTHER = 'site2.local';
const ROOM = 'doc:ToDo/T-1';
const packet = (site: string, event: string, n: number): string => sitePacket(site, closeEventArgs(openEventArgs(event, [{ n }]), null));

interface Counted {
  writes: number;
  writevs: number;
  bytes: number;
}

/** Counts what goes through the net socket under the client's ws connection. */
function countWrites(socket: Socket): Counted {
  const raw = (socket.conn as unknown as { transport: { socket: { _socket: NetSocket } } }).transport.socket._socket;
  const c: Counted = { writes: 0, writevs: 0, bytes: 0 };
  const write = raw.write.bind(raw) as (chunk: Buffer, ...rest: unknown[]) => boolean;
  raw.write = ((chunk: Buffer, ...rest: unknown[]) => {
    c.writes++;
    c.bytes += chunk.length;
    return write(chunk, ...rest);
  }) as typeof raw.write;
  const internals = raw as unknown as { _writev: (...a: unknown[]) => unknown };
  const writev = internals._writev.bind(raw);
  internals._writev = (...a: unknown[]) => {
    c.writevs++;
    return writev(...a);
  };
  return c;
}

async function start(scope: Scope): Promise<{ port: number; io: Server }> {
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'] });
  scope.add(() => new Promise<void>((r) => io.close(() => r())));
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  return { port: (http.address() as AddressInfo).port, io };
}

/** A connected client of `/<site>` and its server socket, idle after one acknowledged round trip. */
async function client(scope: Scope, port: number, nsp: Namespace, site: string, join: boolean) {
  const accepted = new Promise<Socket>((resolve) =>
    nsp.once('connection', (s: Socket) => {
      if (join) void s.join(ROOM);
      s.on('hello', (ack: () => void) => ack());
      resolve(s);
    }),
  );
  const c: ClientSocket = ioClient(`http://127.0.0.1:${port}/${site}`, { transports: ['websocket'], reconnection: false, forceNew: true });
  scope.add(() => void c.close());
  const rec = new EventRecorder(c);
  const socket = await accepted;
  await c.timeout(5000).emitWithAck('hello');
  return { rec, socket };
}

async function setup(scope: Scope) {
  const { port, io } = await start(scope);
  const nsp = io.of(`/${SITE}`);
  const other = io.of(`/${OTHER}`);
  const members = [await client(scope, port, nsp, SITE, true), await client(scope, port, nsp, SITE, true)];
  const outsider = await client(scope, port, nsp, SITE, false);
  const elsewhere = await client(scope, port, other, OTHER, true);
  const counts = [...members, outsider, elsewhere].map((c) => countWrites(c.socket));
  /** Waits until everything delivered is in, then checks who got what, in which order. */
  const received = async (): Promise<void> => {
    for (const m of members) await m.rec.waitForCount('room', 3, undefined, 5000);
    await outsider.rec.waitForCount('site', 3, undefined, 5000);
    // A marker on the other namespace after everything: once there, nothing else is on its way to it.
    other.emit('marker');
    await elsewhere.rec.waitFor('marker', undefined, 5000);
    for (const m of members) {
      assert.deepEqual(
        m.rec.events.filter((e) => e.event === 'site' || e.event === 'room').map((e) => `${e.event}${(e.args[0] as { n: number }).n}`),
        ['site1', 'room1', 'site2', 'room2', 'site3', 'room3'],
      );
    }
    assert.deepEqual(
      outsider.rec.payloads('site').map((p) => (p as { n: number }).n),
      [1, 2, 3],
    );
    assert.equal(outsider.rec.payloads('room').length, 0, 'not in the room');
    assert.equal(elsewhere.rec.payloads('site').length + elsewhere.rec.payloads('room').length, 0, 'another namespace');
  };
  return { nsp, counts: counts as [Counted, Counted, Counted, Counted], received };
}

const calls = (c: Counted): { writes: number; writevs: number } => ({ writes: c.writes, writevs: c.writevs });

test('site and room broadcasts on their own turns: every socket of the namespace (or the room), in order, one socket write each', async (t) => {
  const scope = withScope(t);
  const { nsp, counts, received } = await setup(scope);
  for (let n = 1; n <= 3; n++) {
    deliverPreEncoded(nsp, null, packet(SITE, 'site', n), true, null);
    await new Promise((r) => setImmediate(r));
    deliverPreEncoded(nsp, ROOM, packet(SITE, 'room', n), true, null);
    await new Promise((r) => setImmediate(r));
  }
  await received();
  const [m1, m2, out] = counts;
  for (const c of [m1, m2]) assert.deepEqual(calls(c), { writes: 6, writevs: 0 });
  assert.deepEqual(calls(out), { writes: 3, writevs: 0 });
  assert.ok(m1.bytes > 0 && m1.bytes === m2.bytes);
});

test('a backlog on one turn: the 2nd and later site broadcasts (and what follows them) go out in one writev per socket, in order', async (t) => {
  const scope = withScope(t);
  const { nsp, counts, received } = await setup(scope);
  for (let n = 1; n <= 3; n++) {
    deliverPreEncoded(nsp, null, packet(SITE, 'site', n), true, null);
    deliverPreEncoded(nsp, ROOM, packet(SITE, 'room', n), true, null);
  }
  await received();
  const [m1, m2, out] = counts;
  // site1 and room1 written at once; site2 corks, room2..room3 queue behind it: one writev of 4 frames.
  for (const c of [m1, m2]) assert.deepEqual(calls(c), { writes: 6, writevs: 1 });
  assert.deepEqual(calls(out), { writes: 3, writevs: 1 });
});

test('a socket with packets queued in engine.io takes the normal path after them, in order', async (t) => {
  const scope = withScope(t);
  const { port, io } = await start(scope);
  const nsp = io.of(`/${SITE}`);
  const a = await client(scope, port, nsp, SITE, true);
  // Not writable while engine.io writes: what it is given meanwhile waits in its writeBuffer.
  const transport = (a.socket.conn as unknown as { transport: { writable: boolean } }).transport;
  transport.writable = false;
  a.socket.emit('queued', { n: 0 });
  deliverPreEncoded(nsp, ROOM, packet(SITE, 'room', 1), true, null);
  deliverPreEncoded(nsp, null, packet(SITE, 'site', 2), true, null);
  assert.equal((a.socket.conn as unknown as { writeBuffer: unknown[] }).writeBuffer.length, 3, 'all three wait in order');
  transport.writable = true;
  (a.socket.conn as unknown as { flush(): void }).flush();
  await a.rec.waitFor('site', undefined, 5000);
  assert.deepEqual(
    a.rec.events.filter((e) => e.event !== 'connect').map((e) => `${e.event}${(e.args[0] as { n: number }).n}`),
    ['queued0', 'room1', 'site2'],
  );
});
