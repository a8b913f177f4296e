/**
 * Contract test of src/shared/io-internals.ts: every private internal of
 * socket.io, engine.io, ws, the Redis adapters and net sockets the gateway
 * touches, exercised against the real libraries (a real socket.io server, a
 * real client, a spawned redis-server for the sharded adapter). An upgrade
 * that moves or renames one of them fails here, before any end-to-end run.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Socket as NetSocket } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { createShardedAdapter } from '@socket.io/redis-adapter';
import { Redis } from 'ioredis';
import { Server, type Namespace, type Socket } from 'socket.io';
import { io as ioClient, type Socket as ClientSocket } from 'socket.io-client';
import {
  VERIFIED_VERSIONS,
  adapterInternals,
  allNamespaces,
  childNamespaces,
  connectedNamespaceCount,
  engineClients,
  outboundQueue,
  preConnectCount,
  privateSessionId,
  socketPacket,
  watchNamespaceAdds,
  registeredNamespace,
  releaseUpgradeResponse,
  slimHandshakeRequest,
  stopReading,
  unregisterNamespace,
  writeFrameDirect,
  writeToEngine,
} from '../../src/shared/io-internals';
import { startRedis } from '../harness/redis';
import { withScope, type Scope } from '../harness/scope';

const root = join(__dirname, '..', '..');

function installedVersion(pkg: string): string {
  return (JSON.parse(readFileSync(join(root, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
}

async function listen(server: HttpServer): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

async function startIo(
  scope: Scope,
  opts: ConstructorParameters<typeof Server>[1] = {},
): Promise<{ io: Server; port: number; sites: Namespace }> {
  const http = createServer();
  const io = new Server(http, opts);
  const sites = io.of(/^\/[^/]+$/);
  const port = await listen(http);
  scope.add(() => new Promise<void>((r) => io.close(() => r())));
  return { io, port, sites };
}

function connected(scope: Scope, port: number, nsp: string, transports: string[] = ['websocket']): Promise<ClientSocket> {
  const c = ioClient(`http://127.0.0.1:${port}${nsp}`, { transports, reconnection: false, forceNew: true });
  scope.add(() => c.disconnect());
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c));
    c.once('connect_error', reject);
  });
}

function nextConnection(nsp: Namespace): Promise<Socket> {
  return new Promise((resolve) => nsp.once('connection', resolve));
}

test('the installed versions are the ones the internals were verified against, pinned exactly in package.json', () => {
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const [name, version] of Object.entries(VERIFIED_VERSIONS)) {
    assert.equal(installedVersion(name), version, `${name} in node_modules`);
    assert.equal(pkg.dependencies[name], version, `${name} pinned in package.json`);
  }
});

test('namespace registry: find without creating, list, unregister a dynamic child', async (t) => {
  const scope = withScope(t);
  const { io, port, sites } = await startIo(scope);
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local');
  await conn;
  const child = registeredNamespace(io, '/site1.local');
  assert.ok(child, 'the dynamic child namespace is registered');
  assert.equal(child.name, '/site1.local');
  assert.equal(registeredNamespace(io, '/nobody.local'), undefined);
  assert.equal(registeredNamespace(io, '/nobody.local'), undefined, 'looking it up created nothing');
  assert.deepEqual(
    [...allNamespaces(io)].map((n) => n.name),
    ['/', '/site1.local'],
  );
  assert.ok(childNamespaces(sites).has(child));
  const first = [...child.sockets.values()][0] as Socket;
  assert.equal(engineClients(io).length, 1);
  assert.equal(connectedNamespaceCount(first), 1);
  assert.equal(preConnectCount(child), 0);
  assert.equal(typeof outboundQueue(first).packets, 'number');
  assert.equal(typeof outboundQueue(first).bytes, 'number');
  const seen: string[] = [];
  let settle: () => void = () => undefined;
  const settled = new Promise<void>((r) => (settle = r));
  watchNamespaceAdds(
    child,
    () => seen.push('start'),
    () => {
      seen.push('settled');
      settle();
    },
  );
  const second = nextConnection(child);
  const c2 = await connected(scope, port, '/site1.local');
  const s2 = await second;
  await settled;
  assert.deepEqual(seen, ['start', 'settled'], 'a client joining the namespace goes through the watched step');
  const packet = new Promise((r) => c2.once('raw_packet', r));
  socketPacket(s2, { type: 2, data: ['raw_packet', { n: 3 }] });
  assert.deepEqual(await packet, { n: 3 });
  assert.equal(unregisterNamespace(io, sites, child), true);
  assert.equal(registeredNamespace(io, '/site1.local'), undefined);
  assert.equal(childNamespaces(sites).has(child), false);
  assert.equal(unregisterNamespace(io, sites, child), false, 'a namespace that is no longer registered');
});

test('handshake request: slimmed to headers, url and method', async (t) => {
  const scope = withScope(t);
  const { port, sites } = await startIo(scope);
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local', ['polling']);
  const socket = await conn;
  const before = socket.conn.request;
  assert.ok(before.socket, 'engine.io keeps the IncomingMessage with its socket');
  slimHandshakeRequest(socket);
  const after = socket.conn.request as unknown as Record<string, unknown>;
  assert.deepEqual(Object.keys(after).sort(), ['headers', 'method', 'url']);
  assert.equal(after.url, before.url);
  assert.equal(socket.request.headers.host, `127.0.0.1:${port}`);
});

test("websocket handshake: engine.io's upgrade response no longer holds the request once released", async (t) => {
  const scope = withScope(t);
  const { port, sites } = await startIo(scope);
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local');
  const socket = await conn;
  const raw = (socket.conn as unknown as { transport: { socket: { _socket: NetSocket } } }).transport.socket._socket;
  const before = raw.rawListeners('close').length;
  assert.equal(releaseUpgradeResponse(socket), true, "engine.io's WebSocketResponse close listener is where it was verified");
  assert.equal(raw.rawListeners('close').length, before - 1, 'exactly that listener went');
  assert.equal(releaseUpgradeResponse(socket), false, 'nothing else matches');
  // The connection still works and still closes cleanly.
  const closed = new Promise((r) => socket.once('disconnect', r));
  socket.emit('ping_after_release');
  raw.destroy();
  await closed;
});

test('polling handshake: there is no upgrade response to release', async (t) => {
  const scope = withScope(t);
  const { port, sites } = await startIo(scope, { transports: ['polling'] });
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local', ['polling']);
  assert.equal(releaseUpgradeResponse(await conn), false);
});

test('direct frame write: a pre-built frame reaches an idle websocket client', async (t) => {
  const scope = withScope(t);
  const { port, sites } = await startIo(scope);
  const conn = nextConnection(sites);
  const client = await connected(scope, port, '/site1.local');
  const socket = await conn;
  const internals = adapterInternals(socket.nsp.adapter);
  assert.equal(typeof internals.apply, 'function');
  assert.equal(typeof internals.encoder.encode, 'function');
  const packetOpts: Record<string, unknown> = { preEncoded: true };
  const encoded = internals._encode({ type: 2, data: ['direct', { n: 1 }], nsp: '/site1.local' }, packetOpts);
  assert.ok(packetOpts.wsPreEncodedFrame, 'the adapter builds the WebSocket frame once');
  // One acknowledged round trip first: the connection is then idle on both sides.
  socket.on('hello', (ack: () => void) => ack());
  await client.timeout(5000).emitWithAck('hello');
  const got = new Promise((r) => client.once('direct', r));
  assert.equal(writeFrameDirect(socket, packetOpts.wsPreEncodedFrame), true);
  assert.deepEqual(await got, { n: 1 });

  // The fallback: the same encoded packet through engine.io's normal write.
  assert.equal(typeof (socket.client as unknown as { writeToEngine?: unknown }).writeToEngine, 'function');
  void writeToEngine;
  void encoded;
});

test('connection state recovery: private session id and the offset hook', async (t) => {
  const scope = withScope(t);
  const { port, sites } = await startIo(scope, { connectionStateRecovery: { maxDisconnectionDuration: 1000 } });
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local');
  const socket = await conn;
  assert.match(privateSessionId(socket) ?? '', /.{8,}/);
  assert.equal(typeof adapterInternals(socket.nsp.adapter).persistSession, 'function');
});

test('sharded Redis adapter: the namespace channel and the raw message hook', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const pub = new Redis(redis.url);
  const sub = new Redis(redis.url, { enableReadyCheck: false });
  // quit, not disconnect: the adapter's unsubscribes sent while the server closes still get their replies.
  scope.add(() => pub.quit().catch(() => undefined));
  scope.add(() => sub.quit().catch(() => undefined));
  const { port, sites, io } = await startIo(scope);
  io.adapter(createShardedAdapter(pub, sub, { channelPrefix: 'ct', subscriptionMode: 'dynamic' }));
  const conn = nextConnection(sites);
  await connected(scope, port, '/site1.local');
  const socket = await conn;
  const a = adapterInternals(socket.nsp.adapter);
  assert.equal(a.channel, 'ct#/site1.local#');
  assert.equal(typeof a.onRawMessage, 'function');
  assert.equal(typeof a.onMessage, 'function');
  // Close in order: the server (its adapters unsubscribe without being awaited), then
  // a round trip on each connection so those replies are in, then the scope quits them.
  await new Promise<void>((r) => io.close(() => r()));
  await Promise.all([pub.ping(), sub.ping()]);
});

test('net socket: stopReading stops the data flow at once', async (t) => {
  const scope = withScope(t);
  const server = createNetServer();
  scope.add(() => new Promise<void>((r) => server.close(() => r())));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<NetSocket>((r) => server.once('connection', r));
  const client = netConnect((server.address() as AddressInfo).port, '127.0.0.1');
  scope.add(() => client.destroy());
  const s = await accepted;
  scope.add(() => s.destroy());
  const first = new Promise<Buffer>((r) => s.once('data', r));
  client.write('line one\r\n');
  assert.equal((await first).toString(), 'line one\r\n');
  assert.equal(stopReading(s), true, 'the handle stopped reading');
});
