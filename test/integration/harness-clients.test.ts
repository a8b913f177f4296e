import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { Server, type Socket as ServerSocket } from 'socket.io';
import {
  assertNotReceived,
  barrier,
  barrierPublish,
  BARRIER_EVENT,
  ConnectError,
  connectClient,
  EventRecorder,
  expectConnectError,
  frappeJson,
  publishRedis,
  waitConnect,
  waitForEvent,
  type BarrierMarker,
  type Transport,
} from '../harness/clients';
import { withScope, type Scope } from '../harness/scope';

interface Harnessed {
  url: string;
  io: Server;
  handshakes: http.IncomingHttpHeaders[];
  sockets: ServerSocket[];
}

/** A tiny in-process Socket.IO server: dynamic /<site> namespaces, an origin check, a room per user. */
async function startToyServer(scope: Scope): Promise<Harnessed> {
  const httpServer = http.createServer();
  const io = new Server(httpServer);
  const handshakes: http.IncomingHttpHeaders[] = [];
  const sockets: ServerSocket[] = [];
  const nsp = io.of(/^\/[\w.-]+$/);
  nsp.use((socket, next) => {
    handshakes.push(socket.handshake.headers);
    const origin = socket.handshake.headers.origin;
    if (origin === undefined || new URL(origin).hostname !== '127.0.0.1') return next(new Error('Invalid origin'));
    next();
  });
  nsp.on('connection', (socket) => {
    sockets.push(socket);
    void socket.join(['website', `user:${socket.handshake.headers.cookie ?? 'none'}`]);
    socket.on('ping', () => socket.emit('pong'));
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  scope.add(() => new Promise<void>((resolve) => void io.close(() => resolve())));
  return { url: `http://127.0.0.1:${(httpServer.address() as AddressInfo).port}`, io, handshakes, sockets };
}

for (const transport of ['polling', 'websocket'] as Transport[]) {
  test(`connectClient sends the browser's handshake headers over ${transport}`, async (t) => {
    const scope = withScope(t);
    const server = await startToyServer(scope);
    const socket = connectClient(server.url, 'site1.local', {
      scope,
      cookie: 'abc',
      authorization: 'token k:s',
      headers: { 'x-frappe-site-name': 'site1.local' },
      transports: [transport],
    });
    await waitConnect(socket);
    const headers = server.handshakes[0];
    assert.equal(headers?.origin, server.url);
    assert.equal(headers?.cookie, 'sid=abc');
    assert.equal(headers?.authorization, 'token k:s');
    assert.equal(headers?.['x-frappe-site-name'], 'site1.local');
    assert.equal(server.sockets[0]?.nsp.name, '/site1.local');
    socket.emit('ping');
    await waitForEvent(socket, 'pong');
  });
}

test('expectConnectError and waitConnect surface the CONNECT_ERROR message', async (t) => {
  const scope = withScope(t);
  const server = await startToyServer(scope);
  const noOrigin = connectClient(server.url, 'site1.local', { scope, origin: null });
  assert.equal(await expectConnectError(noOrigin), 'Invalid origin');
  const badOrigin = connectClient(server.url, 'site1.local', { scope, origin: 'http://evil.example' });
  await assert.rejects(waitConnect(badOrigin), (err: unknown) => err instanceof ConnectError && err.message === 'Invalid origin');
  const good = connectClient(server.url, 'site1.local', { scope });
  await assert.rejects(expectConnectError(good), /connected, but a connect_error was expected/);
});

test('EventRecorder keeps arrival order and finds events received before waitFor', async (t) => {
  const scope = withScope(t);
  const server = await startToyServer(scope);
  const socket = connectClient(server.url, 'site1.local', { scope, cookie: 'u1' });
  const recorder = new EventRecorder(socket);
  await waitConnect(socket);
  const nsp = server.io.of('/site1.local');
  nsp.to('website').emit('list_update', { n: 1 });
  nsp.to('website').emit('doc_update', { n: 2 });
  nsp.to('website').emit('list_update', { n: 3 });
  assert.deepEqual(await recorder.waitFor('list_update', (p) => (p as { n: number }).n === 3), { n: 3 });
  assert.deepEqual(await recorder.waitFor('list_update'), { n: 1 });
  assert.equal(recorder.count('list_update'), 2);
  assert.equal(
    recorder.count('list_update', (p) => (p as { n: number }).n > 1),
    1,
  );
  assert.deepEqual(
    recorder.events.map((r) => r.event),
    ['list_update', 'doc_update', 'list_update'],
  );
  assert.ok(recorder.events.every((r, i, all) => i === 0 || r.seq > (all[i - 1]?.seq ?? 0)));
  setImmediate(() => nsp.to('website').emit('progress', 1));
  assert.equal(await waitForEvent(socket, 'progress', { filter: (v) => v === 1 }), 1);
  await assert.rejects(recorder.waitFor('never', undefined, 100), /timed out after 100 ms/);
});

test('assertNotReceived: passes once a later marker arrives, fails if the event did arrive', async (t) => {
  const scope = withScope(t);
  const server = await startToyServer(scope);
  const target = connectClient(server.url, 'site1.local', { scope, cookie: 'target' });
  const witness = connectClient(server.url, 'site1.local', { scope, cookie: 'witness' });
  const targetRec = new EventRecorder(target);
  const witnessRec = new EventRecorder(witness);
  await Promise.all([waitConnect(target), waitConnect(witness)]);
  const nsp = server.io.of('/site1.local');
  const sendMarker = (marker: BarrierMarker): void => {
    const msg = barrierPublish('site1.local', 'website', marker);
    nsp.to(msg.room ?? '').emit(msg.event, msg.message);
  };

  nsp.to('user:sid=witness').emit('list_update', { secret: true });
  await assertNotReceived(targetRec, 'list_update', undefined, {
    sendMarker,
    witness: { recorder: witnessRec, event: 'list_update' },
  });
  assert.equal(targetRec.count(BARRIER_EVENT), 1);

  nsp.to('user:sid=target').emit('list_update', { leaked: true });
  await assert.rejects(
    assertNotReceived([targetRec, witnessRec], 'list_update', (p) => (p as { leaked?: boolean }).leaked === true, { sendMarker }),
    /received "list_update" but must not have/,
  );

  await barrier([targetRec, witnessRec], { sendMarker });
  assert.equal(witnessRec.count(BARRIER_EVENT), 3);
  await assert.rejects(barrier(targetRec, { sendMarker: () => undefined, timeoutMs: 100 }), /timed out/);
});

test('publishRedis serialises like Frappe; strings pass through', async () => {
  const sent: [string, string][] = [];
  const publisher = { publish: (channel: string, message: string) => Promise.resolve(sent.push([channel, message])) };
  const msg = { event: 'msgprint', message: 'Relatório', namespace: 'site1.local', room: 'user:a' };
  await publishRedis(publisher, 'events', msg);
  await publishRedis(publisher, 'events', '{"raw":1}');
  assert.deepEqual(sent, [
    ['events', frappeJson(msg)],
    ['events', '{"raw":1}'],
  ]);
  assert.match(sent[0]?.[1] ?? '', /Relat\\u00f3rio/);
});
