/**
 * Admission control (src/shared/admission.ts): which requests are handshakes,
 * the host's bucket at its threshold, the handshakes in flight per process
 * at theirs, and when a handshake counts as over.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import { test } from 'node:test';
import type { Server as IoServer } from 'socket.io';
import {
  ADMISSION_REFUSAL,
  ADMISSION_REFUSAL_RESPONSE,
  Admission,
  AdmissionQueue,
  HandshakeSlots,
  HandshakeTracker,
  isHandshake,
  requestLineParts,
  slotHoldMs,
} from '../../src/shared/admission';

test('admission: exactly `burst` handshakes at once, then one per 1/rate, never more than burst saved up', () => {
  let now = 1000;
  const a = new Admission(4, 3, () => now);
  assert.equal(a.tokens(), 3);
  assert.deepEqual([a.admit(), a.admit(), a.admit(), a.admit()], [true, true, true, false]);
  now += 249;
  assert.equal(a.admit(), false, 'less than one token after 249 ms at 4/s');
  now += 1;
  assert.equal(a.admit(), true, 'one token after 250 ms');
  assert.equal(a.admit(), false);
  now += 60_000;
  assert.equal(a.tokens(), 3, 'an idle minute saves up the burst, no more');
  assert.deepEqual([a.admit(), a.admit(), a.admit(), a.admit()], [true, true, true, false]);
});

test('admission: rate 0 is off, every handshake is admitted', () => {
  const a = new Admission(0, 1);
  assert.equal(a.enabled, false);
  for (let i = 0; i < 1000; i++) assert.equal(a.admit(), true);
});

test('isHandshake: a GET on the Socket.IO path without a sid; session requests and upgrades are not', () => {
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling'), true);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=websocket'), true);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling&t=x&sid=1.abc'), false);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=websocket&sid=2.abc'), false);
  assert.equal(isHandshake('POST', '/socket.io/?EIO=4&transport=polling&sid=1.abc'), false);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling&notsid=1'), true);
  assert.equal(isHandshake('GET', '/metrics'), false);
  assert.equal(isHandshake('GET', '/socket.iox/?EIO=4'), false);
  assert.deepEqual(requestLineParts('GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n'), { method: 'GET', target: '/socket.io/?EIO=4' });
  assert.equal(requestLineParts('garbage'), undefined);
});

test('the refusal is an HTTP 503 with Retry-After and the documented JSON body', () => {
  const [head, body] = ADMISSION_REFUSAL_RESPONSE.split('\r\n\r\n');
  assert.match(head ?? '', /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.match(head ?? '', /\r\nRetry-After: 1(\r\n|$)/);
  assert.match(head ?? '', new RegExp(`\\r\\nContent-Length: ${Buffer.byteLength(body ?? '')}(\\r\\n|$)`));
  assert.deepEqual(JSON.parse(body ?? ''), ADMISSION_REFUSAL);
});

test('slots: exactly `limit` handshakes in flight per process, each release frees one, processes are independent', () => {
  const s = new HandshakeSlots(3, 20_000, () => 0);
  assert.deepEqual([s.take(1), s.take(1), s.take(1), s.take(1)], [true, true, true, false]);
  assert.equal(s.hasRoom(1), false);
  assert.equal(s.hasRoom(2), true, 'another worker has its own slots');
  assert.deepEqual([s.take(2), s.take(2), s.take(2), s.take(2)], [true, true, true, false]);
  assert.equal(s.inFlight(), 6);
  s.release(1);
  assert.equal(s.inFlight(), 5);
  assert.deepEqual([s.take(1), s.take(1)], [true, false], 'one release, one slot');
  s.release(2);
  s.release(2);
  s.release(2);
  s.release(2);
  assert.equal(s.inFlight(), 3, 'a report beyond what is in flight frees nothing of another process');
  s.forget(1);
  assert.equal(s.inFlight(), 0);
  assert.deepEqual([s.take(1), s.take(1), s.take(1), s.take(1)], [true, true, true, false], 'a new process with the same id starts empty');
});

test('slots: a slot whose report never comes is free again after holdMs, not before', () => {
  let now = 0;
  const s = new HandshakeSlots(2, 1000, () => now);
  s.take(1);
  now = 500;
  s.take(1);
  assert.equal(s.take(1), false);
  now = 999;
  assert.equal(s.hasRoom(1), false, 'the oldest slot is held for 1000 ms');
  now = 1000;
  assert.equal(s.inFlight(), 1, 'the oldest expired');
  assert.equal(s.take(1), true);
  assert.equal(s.take(1), false);
  now = 1500;
  assert.equal(s.inFlight(), 1, 'the second expired at 1500');
  assert.equal(slotHoldMs(10_000), 20_000);
});

test('slots: limit 0 is off, every handshake is admitted and nothing is counted', () => {
  const s = new HandshakeSlots(0, 1000);
  assert.equal(s.enabled, false);
  for (let i = 0; i < 1000; i++) assert.equal(s.take(1), true);
  assert.equal(s.hasRoom(1), true);
  assert.equal(s.inFlight(), 0);
});

/** The parts of socket.io and Engine.IO the tracker listens to. */
function fakeIo(): { io: IoServer; engine: EventEmitter; newNamespace(): EventEmitter } {
  const engine = new EventEmitter();
  const top = new EventEmitter();
  const io = Object.assign(top, { engine }) as unknown as IoServer;
  const newNamespace = (): EventEmitter => {
    const nsp = new EventEmitter();
    top.emit('new_namespace', nsp);
    return nsp;
  };
  return { io, engine, newNamespace };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('tracker: a handshake is over when its session connects to a namespace, once; the session closing later counts nothing', async () => {
  const { io, engine, newNamespace } = fakeIo();
  let done = 0;
  const t = new HandshakeTracker(io, 60_000, () => done++);
  const nsp = newNamespace();
  const req = {} as IncomingMessage;
  const res = new EventEmitter();
  t.track(req, res);
  const conn = Object.assign(new EventEmitter(), { request: req });
  engine.emit('connection', conn);
  res.emit('close');
  await turn();
  assert.equal(done, 0, 'the response closing does not end a handshake that has a session');
  nsp.emit('connection', { conn });
  assert.equal(done, 1);
  nsp.emit('connection', { conn });
  conn.emit('close');
  assert.equal(done, 1);
});

test('tracker: over when the request ends without a session, or when the session closes before connecting', async () => {
  const { io, engine } = fakeIo();
  let done = 0;
  const t = new HandshakeTracker(io, 60_000, () => done++);
  const refusedReq = {} as IncomingMessage;
  const refusedRes = new EventEmitter();
  t.track(refusedReq, refusedRes);
  refusedRes.emit('close');
  assert.equal(done, 0, 'checked one turn later (Engine.IO may still claim it)');
  await turn();
  assert.equal(done, 1, 'refused by Engine.IO: no session came');

  const req = {} as IncomingMessage;
  const socket = new EventEmitter();
  t.track(req, socket);
  const conn = Object.assign(new EventEmitter(), { request: req });
  engine.emit('connection', conn);
  conn.emit('close');
  assert.equal(done, 2, 'the session closed before any namespace connected');
  socket.emit('close');
  await turn();
  assert.equal(done, 2);
  // A session the tracker never took a slot for counts nothing.
  const other = Object.assign(new EventEmitter(), { request: {} as IncomingMessage });
  engine.emit('connection', other);
  other.emit('close');
  assert.equal(done, 2);
});

test('tracker: a handshake that neither connects nor closes is over after holdMs', async () => {
  const { io, engine } = fakeIo();
  let done = 0;
  const t = new HandshakeTracker(io, 20, () => done++);
  const req = {} as IncomingMessage;
  t.track(req, new EventEmitter());
  const conn = Object.assign(new EventEmitter(), { request: req });
  engine.emit('connection', conn);
  await new Promise<void>((resolve) => {
    const check = (): void => (done > 0 ? resolve() : void setTimeout(check, 5));
    check();
  });
  assert.equal(done, 1);
  conn.emit('close');
  assert.equal(done, 1, 'and only once');
});

test('tracker: work of the connected socket that belongs to its handshake (a replay) keeps it in flight until it settles', async () => {
  const { io, engine, newNamespace } = fakeIo();
  let done = 0;
  let finish: () => void = () => undefined;
  const replay = new Promise<void>((r) => (finish = r));
  const replayed = { conn: undefined as unknown };
  const t = new HandshakeTracker(
    io,
    60_000,
    () => done++,
    (s) => (s === replayed ? replay : undefined),
  );
  const nsp = newNamespace();
  for (const socket of [replayed, { conn: undefined as unknown }]) {
    const req = {} as IncomingMessage;
    t.track(req, new EventEmitter());
    const conn = Object.assign(new EventEmitter(), { request: req });
    engine.emit('connection', conn);
    socket.conn = conn;
    nsp.emit('connection', socket);
  }
  assert.equal(done, 1, 'the socket without a replay is over at its connection');
  await turn();
  assert.equal(done, 1, 'the replaying one is not');
  finish();
  await turn();
  assert.equal(done, 2);
});

/** A queue whose expiries are collected; `now` is the test's clock, the timer Node's. */
function queueOf(limit: number, maxWaitMs: number, now: () => number = Date.now) {
  const expired: string[] = [];
  let onExpire: () => void = () => undefined;
  const q = new AdmissionQueue<string>(
    limit,
    maxWaitMs,
    (item) => {
      expired.push(item);
      onExpire();
    },
    now,
  );
  // The queue's timer does not keep a process alive (unref): the test's own timer does, until the expiry.
  const nextExpiry = (): Promise<void> =>
    new Promise((r) => {
      const alive = setTimeout(() => undefined, 60_000);
      onExpire = () => {
        clearTimeout(alive);
        r();
      };
    });
  return { q, expired, nextExpiry };
}

test('queue: slots go to the oldest waiting first; beyond `limit` an arrival is refused', () => {
  const { q, expired } = queueOf(3, 60_000, () => 0);
  assert.equal(q.enabled, true);
  assert.deepEqual(
    ['a', 'b', 'c', 'd'].map((x) => q.add(x)),
    [true, true, true, false],
  );
  assert.equal(q.length, 3);
  assert.equal(q.add('a'), false, 'an item already waiting is not queued twice');
  assert.equal(q.shift(), 'a');
  assert.equal(q.add('d'), true, 'a place freed by a hand-over is taken by the next arrival, at the end');
  assert.deepEqual([q.shift(), q.shift(), q.shift(), q.shift()], ['b', 'c', 'd', undefined]);
  assert.equal(q.length, 0);
  assert.deepEqual(expired, []);
});

test('queue: a wait is over after maxWaitMs, not before: the oldest expire first, and a freed slot skips them', () => {
  let now = 0;
  const { q, expired } = queueOf(10, 1000, () => now);
  q.add('a');
  now = 400;
  q.add('b');
  now = 999;
  assert.equal(q.length, 2);
  now = 1000;
  assert.equal(q.shift(), 'b', 'a waited 1000 ms: expired, b gets the slot');
  assert.deepEqual(expired, ['a']);
  q.add('c');
  now = 2400;
  assert.equal(q.shift(), undefined, 'c expired at 2000');
  assert.deepEqual(expired, ['a', 'c']);
  assert.equal(q.length, 0);
});

test('queue: nobody taking slots, a waiting item expires by itself, each once and in order', async () => {
  const { q, expired, nextExpiry } = queueOf(10, 30);
  const first = nextExpiry();
  q.add('a');
  q.add('b');
  await first;
  while (expired.length < 2) await nextExpiry();
  assert.deepEqual(expired, ['a', 'b']);
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
});

test('queue: an item that left while waiting (its socket closed) is forgotten: it takes no slot and never expires', async () => {
  const { q, expired, nextExpiry } = queueOf(2, 30);
  q.add('gone');
  q.add('b');
  assert.equal(q.remove('gone'), true);
  assert.equal(q.remove('gone'), false, 'a second close counts nothing');
  assert.equal(q.remove('never-queued'), false);
  assert.equal(q.length, 1);
  assert.equal(q.add('c'), true, 'its place is free');
  assert.equal(q.add('d'), false);
  await nextExpiry();
  while (expired.length < 2) await nextExpiry();
  assert.deepEqual(expired, ['b', 'c'], 'the one that left was never handed to anyone');
});

test('queue: nothing is kept: churn leaves only what waits now, and clear() hands it back', () => {
  const { q, expired } = queueOf(5, 60_000);
  for (let i = 0; i < 10_000; i++) {
    q.add(`a${i}`);
    if (i % 2 === 0) q.remove(`a${i}`);
    else assert.equal(q.shift(), `a${i}`);
  }
  assert.equal(q.length, 0);
  for (let i = 0; i < 7; i++) q.add(`x${i}`);
  assert.deepEqual(q.clear(), ['x0', 'x1', 'x2', 'x3', 'x4'], 'the bound held: 5 of 7');
  assert.equal(q.length, 0);
  assert.equal(q.shift(), undefined);
  assert.deepEqual(expired, []);
});

test('queue: off when either bound is 0: nothing is ever held', () => {
  for (const [limit, ms] of [
    [0, 1000],
    [10, 0],
  ] as const) {
    const { q } = queueOf(limit, ms);
    assert.equal(q.enabled, false);
    assert.equal(q.add('a'), false);
    assert.equal(q.length, 0);
  }
});
