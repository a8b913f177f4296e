/**
 * Client events of docs/protocol.md section 4 driven through
 * registerFrappeHandlers with a fake socket, a fake permission backend and a
 * recording presence store: which room each event joins, what a denial or a
 * failing backend does, how bad arguments are counted, and the presence
 * bookkeeping of doc_open / doc_close / disconnect.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import { Registry, type Counter } from 'prom-client';
import pino from 'pino';
import type { Socket } from 'socket.io';
import type { FrappeBackend, RequestContext } from '../../src/frappe/backend';
import { MAX_HELD_SUBSCRIPTIONS, registerFrappeHandlers, type SocketData } from '../../src/frappe/handlers';
import { createMetrics } from '../../src/metrics/metrics';
import { LocalPresence, type DocRef, type PresenceStore } from '../../src/presence/presence';

const SITE = 'site1.local';
const ctx: RequestContext = { site: SITE, credential: { kind: 'sid', value: 's1' }, origin: undefined };

type Answer = boolean | Error | Promise<boolean>;

/** The slice of a Socket.IO socket the handlers use; `emit` records what goes to the client. */
class FakeSocket extends EventEmitter {
  readonly id: string;
  readonly data: SocketData;
  connected = true;
  recovered = false;
  readonly rooms = new Set<string>();
  readonly joins: string[][] = [];
  readonly leaves: string[] = [];
  readonly sent: unknown[][] = [];
  readonly broadcasts: { room: string; event: string; args: unknown[] }[] = [];
  readonly nsp = {
    to: (room: string) => ({
      emit: (event: string, ...args: unknown[]) => {
        this.broadcasts.push({ room, event, args });
        return true;
      },
    }),
  };

  constructor(id: string, user = 'ana@example.com', data: Partial<SocketData> = {}) {
    super();
    this.id = id;
    this.data = { site: SITE, user, user_type: 'System User', ...data };
  }

  join(rooms: string | string[]): void {
    const list = typeof rooms === 'string' ? [rooms] : rooms;
    this.joins.push(list);
    for (const r of list) this.rooms.add(r);
  }

  leave(room: string): void {
    this.leaves.push(room);
    this.rooms.delete(room);
  }

  override emit(event: string, ...args: unknown[]): boolean {
    this.sent.push([event, ...args]);
    return true;
  }

  /** An event from the client. */
  receive(event: string, ...args: unknown[]): void {
    super.emit(event, ...args);
  }
}

class RecordingPresence implements PresenceStore {
  readonly calls: { op: 'open' | 'close'; ref: DocRef; socketId: string; user?: string }[] = [];
  private readonly inner = new LocalPresence();
  open(ref: DocRef, socketId: string, user: string): Promise<string[]> {
    this.calls.push({ op: 'open', ref, socketId, user });
    return this.inner.open(ref, socketId, user);
  }
  close(ref: DocRef, socketId: string): Promise<string[]> {
    this.calls.push({ op: 'close', ref, socketId });
    return this.inner.close(ref, socketId);
  }
  stop(): Promise<void> {
    return this.inner.stop();
  }
}

/** A Redis that the test takes away and brings back: `back()` tells the handlers it answers again. */
function fakeRedis(opts: { notifies?: boolean } = {}) {
  const listeners: (() => void)[] = [];
  const r = {
    up: true,
    redisAvailable: () => r.up,
    onRedisAvailable: opts.notifies === false ? undefined : (l: () => void) => void listeners.push(l),
    back: () => {
      r.up = true;
      for (const l of listeners) l();
    },
  };
  return r;
}

function setup(opts: { answer?: Answer; socket?: FakeSocket; presence?: RecordingPresence; redis?: ReturnType<typeof fakeRedis> } = {}) {
  const socket = opts.socket ?? new FakeSocket('sock-1');
  const checks: { ctx: RequestContext; doctype: string; name: string | undefined }[] = [];
  let answer: Answer = opts.answer ?? true;
  const backend = {
    canSubscribe: (c: RequestContext, doctype: string, name?: string) => {
      checks.push({ ctx: c, doctype, name });
      return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
    },
  } as unknown as FrappeBackend;
  const presence = opts.presence ?? new RecordingPresence();
  const metrics = createMetrics(new Registry(), { defaults: false });
  const joined: string[][] = [];
  registerFrappeHandlers(socket as unknown as Socket, ctx, {
    join: (s, rooms) => {
      joined.push(rooms);
      s.join(rooms);
      return Promise.resolve();
    },
    backend,
    presence,
    metrics,
    log: pino({ level: 'silent' }),
    ...(opts.redis ? { redisAvailable: opts.redis.redisAvailable, onRedisAvailable: opts.redis.onRedisAvailable } : {}),
  });
  return {
    socket,
    checks,
    presence,
    metrics,
    joined,
    setAnswer: (a: Answer) => {
      answer = a;
    },
  };
}

/** Sends a client event with an ack and resolves with what the gateway acknowledged. */
function call(socket: FakeSocket, event: string, ...args: unknown[]): Promise<unknown[]> {
  return new Promise((resolve) => socket.receive(event, ...args, (...ackArgs: unknown[]) => resolve(ackArgs)));
}

async function count(counter: Counter, labels: Record<string, string>): Promise<number> {
  const { values } = await counter.get();
  const v = values.find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

/** Lets already-settled promise chains run (the fakes answer at once; nothing waits on time). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('subscriptions join exactly the documented room after an allowed check', () => {
  const cases: { event: string; args: string[]; room: string; check: [string, string | undefined] | null }[] = [
    { event: 'doctype_subscribe', args: ['ToDo'], room: 'doctype:ToDo', check: ['ToDo', undefined] },
    { event: 'doc_subscribe', args: ['ToDo', 'T-1'], room: 'doc:ToDo/T-1', check: ['ToDo', 'T-1'] },
    { event: 'doc_open', args: ['ToDo', 'T-1'], room: 'open_doc:ToDo/T-1', check: ['ToDo', 'T-1'] },
    { event: 'task_subscribe', args: ['job-7'], room: 'task_progress:job-7', check: null },
    { event: 'progress_subscribe', args: ['job-8'], room: 'task_progress:job-8', check: null },
  ];
  for (const c of cases) {
    test(`${c.event}(${c.args.join(', ')}) -> ${c.room}`, async () => {
      const { socket, checks, joined, metrics } = setup();
      assert.deepEqual(await call(socket, c.event, ...c.args), [true]);
      assert.deepEqual(joined, [[c.room]]);
      assert.deepEqual([...socket.rooms], [c.room]);
      if (c.check) {
        assert.deepEqual(checks, [{ ctx, doctype: c.check[0], name: c.check[1] }]);
        assert.equal(await count(metrics.permissionChecks, { result: 'allowed' }), 1);
      } else {
        assert.deepEqual(checks, [], 'task rooms need no permission');
      }
      assert.equal(await count(metrics.clientEvents, { event: c.event }), 1);
    });
  }

  test('without an ack the subscription still happens', async () => {
    const { socket, joined } = setup();
    socket.receive('doc_subscribe', 'Note', 'N 1');
    await settle();
    assert.deepEqual(joined, [['doc:Note/N 1']]);
  });

  test('a name of exactly 512 characters is accepted', async () => {
    const { socket, joined } = setup();
    const name = 'x'.repeat(512);
    assert.deepEqual(await call(socket, 'doc_subscribe', 'ToDo', name), [true]);
    assert.deepEqual(joined, [[`doc:ToDo/${name}`]]);
  });
});

describe('a refused or failed permission check joins nothing', () => {
  for (const event of ['doctype_subscribe', 'doc_subscribe', 'doc_open']) {
    const args = event === 'doctype_subscribe' ? ['ToDo'] : ['ToDo', 'T-1'];
    test(`${event}: denied -> ack false, no room, counted as denied`, async () => {
      const { socket, joined, metrics, presence } = setup({ answer: false });
      assert.deepEqual(await call(socket, event, ...args), [false]);
      assert.deepEqual(joined, []);
      assert.equal(socket.rooms.size, 0);
      assert.equal(await count(metrics.permissionChecks, { result: 'denied' }), 1);
      assert.deepEqual(presence.calls, []);
      assert.equal(socket.data.openDocs?.size ?? 0, 0);
    });
    test(`${event}: backend throws -> ack false, no room, counted as error`, async () => {
      const { socket, joined, metrics, presence } = setup({ answer: new Error('GW_ERR_BACKEND_TIMEOUT') });
      assert.deepEqual(await call(socket, event, ...args), [false]);
      assert.deepEqual(joined, []);
      assert.equal(await count(metrics.permissionChecks, { result: 'error' }), 1);
      assert.equal(await count(metrics.permissionChecks, { result: 'allowed' }), 0);
      assert.deepEqual(presence.calls, []);
    });
  }

  test('a socket that disconnected while the check was pending joins nothing', async () => {
    let release: (ok: boolean) => void = () => undefined;
    const pending = new Promise<boolean>((resolve) => (release = resolve));
    const { socket, joined, checks } = setup({ answer: pending });
    const acked = call(socket, 'doc_subscribe', 'ToDo', 'T-1');
    await settle();
    assert.equal(checks.length, 1);
    socket.connected = false;
    release(true);
    assert.deepEqual(await acked, [false]);
    assert.deepEqual(joined, []);
  });

  test('a denial is per call: the next allowed call joins', async () => {
    const { socket, joined, setAnswer } = setup({ answer: false });
    assert.deepEqual(await call(socket, 'doctype_subscribe', 'ToDo'), [false]);
    setAnswer(true);
    assert.deepEqual(await call(socket, 'doctype_subscribe', 'ToDo'), [true]);
    assert.deepEqual(joined, [['doctype:ToDo']]);
  });
});

describe('bad arguments are ignored and counted by event', () => {
  const bad: [string, unknown][] = [
    ['empty string', ''],
    ['513 characters', 'x'.repeat(513)],
    ['null', null],
    ['undefined', undefined],
    ['true', true],
    ['false', false],
    ['object', { name: 'ToDo' }],
    ['array', ['ToDo']],
  ];
  const events = ['doctype_subscribe', 'doc_subscribe', 'doc_open', 'doc_close', 'task_subscribe', 'doc_unsubscribe'];
  for (const [label, value] of bad) {
    test(`${label} as first argument`, async () => {
      const { socket, checks, joined, metrics, presence } = setup();
      for (const event of events) {
        const args = event.startsWith('doc_') ? [value, 'T-1'] : [value];
        assert.deepEqual(await call(socket, event, ...args), [false], event);
        assert.equal(await count(metrics.clientEventsRejected, { event }), 1, event);
        assert.equal(await count(metrics.clientEvents, { event }), 0, event);
      }
      assert.deepEqual(checks, []);
      assert.deepEqual(joined, []);
      assert.deepEqual(socket.leaves, []);
      assert.deepEqual(presence.calls, []);
    });
    test(`${label} as docname`, async () => {
      const { socket, checks, joined, metrics } = setup();
      assert.deepEqual(await call(socket, 'doc_subscribe', 'ToDo', value), [false]);
      assert.deepEqual(await call(socket, 'doc_open', 'ToDo', value), [false]);
      assert.equal(await count(metrics.clientEventsRejected, { event: 'doc_subscribe' }), 1);
      assert.equal(await count(metrics.clientEventsRejected, { event: 'doc_open' }), 1);
      assert.deepEqual(checks, []);
      assert.deepEqual(joined, []);
    });
  }

  test('a missing docname, and no arguments at all (ack only)', async () => {
    const { socket, checks, metrics } = setup();
    assert.deepEqual(await call(socket, 'doc_subscribe', 'ToDo'), [false]);
    assert.deepEqual(await call(socket, 'doctype_subscribe'), [false]);
    assert.equal(await count(metrics.clientEventsRejected, { event: 'doc_subscribe' }), 1);
    assert.equal(await count(metrics.clientEventsRejected, { event: 'doctype_subscribe' }), 1);
    assert.deepEqual(checks, []);
  });

  test('without an ack a bad argument is counted and nothing throws', () => {
    const { socket, metrics, joined } = setup();
    socket.receive('doctype_subscribe', null);
    socket.receive('doc_subscribe', 'ToDo', {});
    return Promise.all([
      count(metrics.clientEventsRejected, { event: 'doctype_subscribe' }),
      count(metrics.clientEventsRejected, { event: 'doc_subscribe' }),
    ]).then((n) => {
      assert.deepEqual(n, [1, 1]);
      assert.deepEqual(joined, []);
    });
  });
});

describe('unsubscribes leave the matching room', () => {
  test('doctype_unsubscribe, doc_unsubscribe, task_unsubscribe', async () => {
    const { socket } = setup();
    await call(socket, 'doctype_subscribe', 'ToDo');
    await call(socket, 'doc_subscribe', 'ToDo', 'T-1');
    await call(socket, 'task_subscribe', 'job-7');
    assert.deepEqual(await call(socket, 'doctype_unsubscribe', 'ToDo'), [true]);
    assert.deepEqual(await call(socket, 'doc_unsubscribe', 'ToDo', 'T-1'), [true]);
    assert.deepEqual(await call(socket, 'task_unsubscribe', 'job-7'), [true]);
    assert.deepEqual(socket.leaves, ['doctype:ToDo', 'doc:ToDo/T-1', 'task_progress:job-7']);
    assert.equal(socket.rooms.size, 0);
  });
});

test('ping -> pong, counted', async () => {
  const { socket, metrics } = setup();
  socket.receive('ping');
  assert.deepEqual(socket.sent, [['pong']]);
  assert.equal(await count(metrics.clientEvents, { event: 'ping' }), 1);
});

describe('presence: doc_open, doc_close, disconnect', () => {
  const ref = { site: SITE, doctype: 'ToDo', docname: 'T-1' };

  test('doc_open records the viewer; doc_viewers goes to the open_doc room once another user is there', async () => {
    const presence = new RecordingPresence();
    const a = setup({ presence, socket: new FakeSocket('sa', 'ana@example.com') });
    assert.deepEqual(await call(a.socket, 'doc_open', 'ToDo', 'T-1'), [true]);
    assert.deepEqual(presence.calls, [{ op: 'open', ref, socketId: 'sa', user: 'ana@example.com' }]);
    assert.deepEqual(a.socket.broadcasts, [], 'no update when the only viewer is the user who opened it');
    assert.deepEqual([...(a.socket.data.openDocs?.entries() ?? [])], [['open_doc:ToDo/T-1', { doctype: 'ToDo', docname: 'T-1' }]]);

    const b = setup({ presence, socket: new FakeSocket('sb', 'bo@example.com') });
    assert.deepEqual(await call(b.socket, 'doc_open', 'ToDo', 'T-1'), [true]);
    assert.deepEqual(b.socket.broadcasts, [
      {
        room: 'open_doc:ToDo/T-1',
        event: 'doc_viewers',
        args: [{ doctype: 'ToDo', docname: 'T-1', users: ['ana@example.com', 'bo@example.com'] }],
      },
    ]);
  });

  test('doc_close leaves the room, forgets the document and tells the remaining viewers', async () => {
    const presence = new RecordingPresence();
    const a = setup({ presence, socket: new FakeSocket('sa', 'ana@example.com') });
    const b = setup({ presence, socket: new FakeSocket('sb', 'bo@example.com') });
    await call(a.socket, 'doc_open', 'ToDo', 'T-1');
    await call(b.socket, 'doc_open', 'ToDo', 'T-1');
    b.socket.broadcasts.length = 0;
    assert.deepEqual(await call(b.socket, 'doc_close', 'ToDo', 'T-1'), [true]);
    assert.deepEqual(b.socket.leaves, ['open_doc:ToDo/T-1']);
    assert.equal(b.socket.data.openDocs?.size, 0);
    assert.deepEqual(presence.calls.at(-1), { op: 'close', ref, socketId: 'sb' });
    assert.deepEqual(
      b.socket.broadcasts,
      [{ room: 'open_doc:ToDo/T-1', event: 'doc_viewers', args: [{ doctype: 'ToDo', docname: 'T-1', users: ['ana@example.com'] }] }],
      'the one remaining viewer is someone else than the user who left: it is told',
    );
  });

  test('doc_close by one of three viewers sends the two remaining users', async () => {
    const presence = new RecordingPresence();
    const sockets = ['ana', 'bo', 'cy'].map((u) => setup({ presence, socket: new FakeSocket(`s-${u}`, u) }).socket);
    for (const s of sockets) await call(s, 'doc_open', 'ToDo', 'T-1');
    const first = sockets[0];
    assert.ok(first);
    first.broadcasts.length = 0;
    await call(first, 'doc_close', 'ToDo', 'T-1');
    assert.deepEqual(first.broadcasts, [
      { room: 'open_doc:ToDo/T-1', event: 'doc_viewers', args: [{ doctype: 'ToDo', docname: 'T-1', users: ['bo', 'cy'] }] },
    ]);
  });

  test('disconnect closes every document the socket had open, and only those', async () => {
    const presence = new RecordingPresence();
    const a = setup({ presence, socket: new FakeSocket('sa', 'ana') });
    const b = setup({ presence, socket: new FakeSocket('sb', 'bo') });
    await call(a.socket, 'doc_open', 'ToDo', 'T-1');
    await call(a.socket, 'doc_open', 'Note', 'N-1');
    await call(a.socket, 'doc_open', 'ToDo', 'T-2');
    await call(a.socket, 'doc_close', 'ToDo', 'T-2');
    await call(b.socket, 'doc_open', 'ToDo', 'T-1');
    presence.calls.length = 0;
    a.socket.broadcasts.length = 0;
    a.socket.receive('disconnect', 'transport close');
    await settle();
    assert.deepEqual(presence.calls, [
      { op: 'close', ref: { site: SITE, doctype: 'ToDo', docname: 'T-1' }, socketId: 'sa' },
      { op: 'close', ref: { site: SITE, doctype: 'Note', docname: 'N-1' }, socketId: 'sa' },
    ]);
    assert.equal(a.socket.data.openDocs?.size, 0);
    // Frappe only skips the update when the sole remaining viewer is the user
    // who caused it; bo is someone else, and an emptied document is announced too.
    assert.deepEqual(a.socket.broadcasts, [
      { room: 'open_doc:ToDo/T-1', event: 'doc_viewers', args: [{ doctype: 'ToDo', docname: 'T-1', users: ['bo'] }] },
      { room: 'open_doc:Note/N-1', event: 'doc_viewers', args: [{ doctype: 'Note', docname: 'N-1', users: [] }] },
    ]);
  });

  test('a disconnect without open documents touches no presence', async () => {
    const { socket, presence } = setup();
    await call(socket, 'doc_subscribe', 'ToDo', 'T-1');
    socket.receive('disconnect', 'client namespace disconnect');
    await settle();
    assert.deepEqual(presence.calls, []);
  });

  test('a recovered session re-opens its documents on the new process', async () => {
    const openDocs = new Map([['open_doc:ToDo/T-9', { doctype: 'ToDo', docname: 'T-9' }]]);
    const socket = new FakeSocket('s-rec', 'ana', { openDocs });
    socket.recovered = true;
    const { presence } = setup({ socket });
    await settle();
    assert.deepEqual(presence.calls, [
      { op: 'open', ref: { site: SITE, doctype: 'ToDo', docname: 'T-9' }, socketId: 's-rec', user: 'ana' },
    ]);
  });
});

describe('while Redis is unavailable', () => {
  test('subscribe events are held and run once Redis answers, acknowledged then; doc_open is refused at once', async () => {
    const redis = fakeRedis();
    const { socket, joined, checks, metrics } = setup({ redis });
    redis.up = false;
    const acks = [
      call(socket, 'doc_subscribe', 'ToDo', 'T-1'),
      call(socket, 'doctype_subscribe', 'ToDo'),
      call(socket, 'task_subscribe', 'job-1'),
      call(socket, 'progress_subscribe', 'job-2'),
    ];
    assert.deepEqual(await call(socket, 'doc_open', 'ToDo', 'T-1'), [false]);
    await settle();
    assert.deepEqual(joined, [], 'nothing joined (and nothing sent to Redis) during the outage');
    assert.deepEqual(checks, []);
    assert.equal(await count(metrics.redisDeferred, { what: 'subscribe' }), 4);
    assert.equal(await count(metrics.clientEventsRefused, { event: 'doc_open', reason: 'redis_unavailable' }), 1);
    redis.back();
    assert.deepEqual(await Promise.all(acks), [[true], [true], [true], [true]]);
    // Task rooms need no permission check, so they are joined first.
    assert.deepEqual(joined.flat().sort(), ['doc:ToDo/T-1', 'doctype:ToDo', 'task_progress:job-1', 'task_progress:job-2']);
    assert.equal(checks.length, 2, 'the permission checks run when the subscription does');
    assert.equal(await count(metrics.clientEventsRefused, { event: 'doc_subscribe', reason: 'redis_unavailable' }), 0);
  });

  test('an unsubscribe cancels a held subscribe; a repeat replaces it; a disconnect drops what its socket held', async () => {
    const redis = fakeRedis();
    const a = setup({ redis, socket: new FakeSocket('sa') });
    redis.up = false;
    const cancelled = call(a.socket, 'doc_subscribe', 'ToDo', 'T-1');
    a.socket.receive('doc_unsubscribe', 'ToDo', 'T-1');
    assert.deepEqual(await cancelled, [false]);
    const first = call(a.socket, 'task_subscribe', 'job-1');
    const second = call(a.socket, 'task_subscribe', 'job-1');
    assert.deepEqual(await first, [false], 'the repeat supersedes it');
    const gone = new FakeSocket('sb');
    const b = setup({ redis, socket: gone });
    b.socket.receive('doc_subscribe', 'Note', 'N-1');
    gone.connected = false;
    b.socket.receive('disconnect', 'transport close');
    redis.back();
    assert.deepEqual(await second, [true]);
    await settle();
    assert.deepEqual(a.joined, [['task_progress:job-1']], 'one join for the repeat, none for the cancelled one');
    assert.deepEqual(b.joined, [], 'the disconnected socket joins nothing');
  });

  test(`at most ${MAX_HELD_SUBSCRIPTIONS} held per socket, the next one refused and counted; without a way to learn that Redis is back, refused at once`, async () => {
    const redis = fakeRedis();
    const { socket, metrics } = setup({ redis });
    redis.up = false;
    for (let i = 0; i < MAX_HELD_SUBSCRIPTIONS; i++) socket.receive('task_subscribe', `job-${i}`);
    assert.deepEqual(await call(socket, 'task_subscribe', 'one-too-many'), [false]);
    const repeat: unknown[][] = [];
    socket.receive('task_subscribe', 'job-0', (...ackArgs: unknown[]) => repeat.push(ackArgs));
    await settle();
    assert.deepEqual(repeat, [], 'a repeat of a held one is still held, not refused');
    assert.equal(await count(metrics.clientEventsRefused, { event: 'task_subscribe', reason: 'redis_unavailable' }), 1);

    const silent = fakeRedis({ notifies: false });
    const old = setup({ redis: silent });
    silent.up = false;
    assert.deepEqual(await call(old.socket, 'doc_subscribe', 'ToDo', 'T-1'), [false]);
    assert.deepEqual(old.joined, []);
  });
});
