/**
 * The app-handler API on sockets (src/realtime/socket-api.ts): bound on first
 * read, stable, callable detached, replaceable, absent on sockets that were
 * never decorated, and bound to the server's own backend.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Server, Socket } from 'socket.io';
import type { FrappeBackend, RequestContext } from '../../src/frappe/backend';
import { registerSocketApiServer, setSocketApiContext } from '../../src/realtime/socket-api';

interface Api {
  has_permission?: (doctype: string, name?: string) => Promise<void>;
  frappe_request?: (path: string) => Promise<unknown>;
  gateway?: { roomUsers(room: string): Promise<string[]> };
}

function fakeSocket(io: Server): Socket & Api {
  const s = Object.create(Socket.prototype) as Socket & Api;
  Object.defineProperty(s, 'nsp', { value: { server: io } });
  return s;
}

function backend(name: string, calls: string[], allow: boolean): FrappeBackend {
  return {
    canSubscribe: (ctx: RequestContext, doctype: string, docname?: string) => {
      calls.push(`${name}:${ctx.site}:${doctype}/${docname ?? ''}`);
      return Promise.resolve(allow);
    },
    request: (ctx: RequestContext, path: string) => {
      calls.push(`${name}:${ctx.site}:${path}`);
      return Promise.resolve(new Response('ok'));
    },
  } as unknown as FrappeBackend;
}

const ctx = (site: string): RequestContext => ({ site, credential: { kind: 'sid', value: 's' }, origin: undefined });
const log = pino({ level: 'silent' });

test('socket API: bound per socket on first read, stable, detached-callable, per server backend', async () => {
  const calls: string[] = [];
  const io1 = new Server();
  const io2 = new Server();
  registerSocketApiServer(io1, { backend: backend('b1', calls, true), log });
  registerSocketApiServer(io2, { backend: backend('b2', calls, true), log });
  const a = fakeSocket(io1);
  const b = fakeSocket(io2);
  setSocketApiContext(a, ctx('a.local'));
  setSocketApiContext(b, ctx('b.local'));

  const hp = a.has_permission;
  assert.equal(typeof hp, 'function');
  assert.equal(a.has_permission, hp);
  assert.notEqual(b.has_permission, hp);
  assert.ok(Object.prototype.hasOwnProperty.call(a, 'has_permission'));
  // Detached, as `const { has_permission } = socket` would call it.
  await hp?.('ToDo', 'T1');
  const fr = b.frappe_request;
  await fr?.('/api/method/x');
  assert.equal(typeof a.gateway?.roomUsers, 'function');
  assert.equal(a.gateway, a.gateway);
  assert.deepEqual(calls, ['b1:a.local:ToDo/T1', 'b2:b.local:/api/method/x']);
});

test('socket API: denial never settles; assignment replaces; undecorated sockets have none', async () => {
  const calls: string[] = [];
  const io = new Server();
  registerSocketApiServer(io, { backend: backend('b', calls, false), log });
  const s = fakeSocket(io);
  // Through a function: TypeScript would narrow the properties to undefined for good.
  const read = (x: Api): unknown[] => [x.has_permission, x.frappe_request, x.gateway];
  assert.deepEqual(read(s), [undefined, undefined, undefined]);
  setSocketApiContext(s, ctx('s.local'));
  let settled = false;
  const p = s.has_permission?.('ToDo').then(
    () => (settled = true),
    () => (settled = true),
  );
  assert.ok(p);
  // A marker check of the same backend answered after ours: the denial has been processed.
  await backend('b', calls, false).canSubscribe(ctx('s.local'), 'Marker');
  await new Promise<void>((r) => setImmediate(r));
  assert.equal(settled, false);
  assert.deepEqual(calls, ['b:s.local:ToDo/', 'b:s.local:Marker/']);

  const mine = (): Promise<void> => Promise.resolve();
  s.has_permission = mine;
  assert.equal(s.has_permission, mine);
  assert.deepEqual(read(fakeSocket(io)), [undefined, undefined, undefined]);
});
