/**
 * Property-based checks of the client events (docs/protocol.md section 4),
 * driving registerFrappeHandlers with a fake socket, backend and presence:
 * for any argument list a handler never throws or fails, and joins (or
 * leaves) only the room the protocol names for valid arguments, with the
 * permission check asked about the same names.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Socket } from 'socket.io';
import type { FrappeBackend, RequestContext } from '../../src/frappe/backend';
import { nameArg, registerFrappeHandlers, type SocketData } from '../../src/frappe/handlers';
import { createMetrics } from '../../src/metrics/metrics';
import type { PresenceStore } from '../../src/presence/presence';

type Spec = { arity: 1 | 2; room: ((a: string, b: string) => string) | null; op: 'join' | 'leave' | 'pong'; check: boolean };
const SPECS: Record<string, Spec> = {
  doctype_subscribe: { arity: 1, room: (a) => `doctype:${a}`, op: 'join', check: true },
  doctype_unsubscribe: { arity: 1, room: (a) => `doctype:${a}`, op: 'leave', check: false },
  doc_subscribe: { arity: 2, room: (a, b) => `doc:${a}/${b}`, op: 'join', check: true },
  doc_unsubscribe: { arity: 2, room: (a, b) => `doc:${a}/${b}`, op: 'leave', check: false },
  doc_open: { arity: 2, room: (a, b) => `open_doc:${a}/${b}`, op: 'join', check: true },
  doc_close: { arity: 2, room: (a, b) => `open_doc:${a}/${b}`, op: 'leave', check: false },
  task_subscribe: { arity: 1, room: (a) => `task_progress:${a}`, op: 'join', check: false },
  progress_subscribe: { arity: 1, room: (a) => `task_progress:${a}`, op: 'join', check: false },
  task_unsubscribe: { arity: 1, room: (a) => `task_progress:${a}`, op: 'leave', check: false },
  ping: { arity: 1, room: null, op: 'pong', check: false },
};

/** The protocol's rule, written out independently of the code under test. */
function expectedName(v: unknown): string | undefined {
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) <= Number.MAX_SAFE_INTEGER ? `${v}` : undefined;
  if (typeof v !== 'string' || v.length < 1 || v.length > 512) return undefined;
  for (const ch of v) {
    const c = ch.codePointAt(0) ?? 0;
    if (c < 0x20 || c === 0x7f) return undefined;
  }
  return v;
}

interface Harness {
  listeners: Map<string, (...args: unknown[]) => void>;
  joined: string[];
  left: string[];
  emitted: string[];
  checks: [string, string | undefined][];
  failures: string[];
}

function harness(allow: boolean): Harness {
  const h: Harness = { listeners: new Map(), joined: [], left: [], emitted: [], checks: [], failures: [] };
  const sink = new EventEmitter();
  const socket = {
    id: 'sock-1',
    connected: true,
    recovered: false,
    data: { site: 'site1.local', user: 'ana@example.com', user_type: 'System User' } satisfies SocketData,
    nsp: { to: () => ({ emit: () => true }) },
    on(event: string, fn: (...args: unknown[]) => void) {
      // As an EventEmitter calls it: with the socket as `this`.
      const listener = (...args: unknown[]): void => fn.apply(socket, args);
      h.listeners.set(event, listener);
      sink.on(event, listener);
      return socket;
    },
    leave(room: string) {
      h.left.push(room);
    },
    emit(event: string) {
      h.emitted.push(event);
      return true;
    },
  };
  const backend = {
    canSubscribe: (_ctx: RequestContext, doctype: string, name?: string) => {
      h.checks.push([doctype, name]);
      return Promise.resolve(allow);
    },
  } as unknown as FrappeBackend;
  const presence: PresenceStore = {
    open: () => Promise.resolve(['ana@example.com']),
    close: () => Promise.resolve([]),
    stop: () => Promise.resolve(),
  };
  const log = pino({ level: 'warn' }, { write: (line: string) => void h.failures.push(line) });
  registerFrappeHandlers(
    socket as unknown as Socket,
    { site: 'site1.local', credential: { kind: 'sid', value: 's' }, origin: undefined },
    {
      join: (_s, rooms) => {
        h.joined.push(...rooms);
        return Promise.resolve();
      },
      backend,
      presence,
      metrics: createMetrics(new Registry(), { defaults: false }),
      log,
    },
  );
  return h;
}

/** Arguments a client can send: JSON values plus numbers JSON cannot carry (other parsers can). */
const arg = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.string({ maxLength: 600 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.double(),
  fc.integer(),
  fc.constantFrom(NaN, Infinity, -Infinity, 1.5, 2 ** 53, -0, 42, 'ToDo', 'x'.repeat(512), 'x'.repeat(513), 'a\nb', 'a\u0000'),
);

describe('client events, for arbitrary argument lists', () => {
  for (const [event, spec] of Object.entries(SPECS)) {
    test(`${event}: never throws; joins/leaves only the protocol's room, permission asked with the same names`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(arg, { maxLength: 4 }), fc.boolean(), async (args, allow) => {
          const h = harness(allow);
          const listener = h.listeners.get(event);
          assert.ok(listener, `no listener for ${event}`);
          let acked: (ok: boolean) => void = () => undefined;
          const done = new Promise<boolean>((resolve) => (acked = resolve));
          listener(...args, (ok: boolean) => acked(ok));
          if (spec.op === 'pong') {
            assert.deepEqual(h.emitted, ['pong']);
            assert.deepEqual(h.joined, []);
            return;
          }
          const ok = await done;
          const a = expectedName(args[0]);
          const b = spec.arity === 2 ? expectedName(args[1]) : '';
          const valid = a !== undefined && b !== undefined;
          const room = valid && spec.room ? spec.room(a, b) : undefined;
          const effective = valid && (!spec.check || allow);
          assert.equal(ok, effective, `ack for ${JSON.stringify(args)}`);
          assert.deepEqual(h.joined, spec.op === 'join' && effective ? [room] : []);
          assert.deepEqual(h.left, spec.op === 'leave' && valid ? [room] : []);
          assert.deepEqual(h.checks, spec.check && valid ? [[a, spec.arity === 2 ? b : undefined]] : []);
          assert.deepEqual(h.failures, [], 'no handler failure was logged');
        }),
        { numRuns: 400 },
      );
    });
  }

  test('without an acknowledgement callback nothing throws either', () => {
    fc.assert(
      fc.property(fc.constantFrom(...Object.keys(SPECS)), fc.array(arg, { maxLength: 4 }), (event, args) => {
        const listener = harness(true).listeners.get(event);
        assert.doesNotThrow(() => listener?.(...args));
      }),
      { numRuns: 500 },
    );
  });

  test('numbers as Frappe interpolates them: 42 -> "42"; NaN, Infinity, fractions and unsafe integers are refused', () => {
    assert.equal(nameArg(42), '42');
    assert.equal(nameArg(0), '0');
    assert.equal(nameArg(-0), '0');
    for (const v of [NaN, Infinity, -Infinity, 1.5, 2 ** 53]) assert.equal(nameArg(v), undefined, String(v));
    for (const v of ['a\u0000b', 'tab\there', 'del\u007f', '', 'x'.repeat(513), null, true, {}, []]) {
      assert.equal(nameArg(v), undefined, JSON.stringify(v));
    }
    assert.equal(nameArg('Søren/ToDo 1'), 'Søren/ToDo 1');
  });
});
