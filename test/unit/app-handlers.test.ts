/**
 * App handlers (docs/protocol.md section 7): Frappe's own core handlers.js is
 * never loaded, and every listener an app registers through its socket view
 * is guarded (sync throws and rejections are counted and logged with the app
 * name and stack), while the rest of the socket API works through the view.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { AppHandlers } from '../../src/frappe/app-handlers';
import { createMetrics } from '../../src/metrics/metrics';
import { pollUntil } from '../harness';

const bench = mkdtempSync(path.join(os.tmpdir(), 'rtgw-apps-'));
after(() => rmSync(bench, { recursive: true, force: true }));
let seq = 0;
/** Writes `<bench>/apps/<app>/realtime/handlers.js`; a fresh app name each time (require caches by path). */
function app(source: string, name = `app_${++seq}`): string {
  mkdirSync(path.join(bench, name, 'realtime'), { recursive: true });
  writeFileSync(path.join(bench, name, 'realtime', 'handlers.js'), source);
  return name;
}

/** Enough of a Socket.IO socket: EventEmitter plus onAny/offAny, join, emit to self, chaining. */
class FakeSocket extends EventEmitter {
  readonly rooms = new Set<string>();
  readonly sent: unknown[][] = [];
  readonly any: ((...args: unknown[]) => void)[] = [];
  flags: Record<string, boolean> = {};
  user = 'ana@example.com';
  join(room: string): void {
    this.rooms.add(room);
  }
  send(...args: unknown[]): this {
    this.sent.push(args);
    return this;
  }
  get volatile(): this {
    this.flags['volatile'] = true;
    return this;
  }
  onAny(fn: (...args: unknown[]) => void): this {
    this.any.push(fn);
    return this;
  }
  offAny(fn: (...args: unknown[]) => void): this {
    const i = this.any.indexOf(fn);
    if (i !== -1) this.any.splice(i, 1);
    return this;
  }
  /** What socket.io does with an incoming packet: onAny listeners, then the event's. */
  dispatch(event: string, ...args: unknown[]): void {
    for (const fn of [...this.any]) fn(event, ...args);
    this.emit(event, ...args);
  }
}

function setup(): { handlers: AppHandlers; logs: Record<string, unknown>[]; errors: (app: string) => Promise<number> } {
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void logs.push(JSON.parse(l) as Record<string, unknown>) });
  const metrics = createMetrics(new Registry(), { defaults: false });
  return {
    handlers: new AppHandlers(bench, log, metrics),
    logs,
    errors: async (a) => (await metrics.appHandlerErrors.get()).values.find((v) => v.labels.app === a)?.value ?? 0,
  };
}

describe("Frappe's core handlers.js", () => {
  test('apps/frappe/realtime/handlers.js is not loaded, and that is said once at info level', async () => {
    app(`module.exports = (socket) => socket.on('ping', () => socket.send('pong')); globalThis.__frappeCoreLoaded = true;`, 'frappe');
    const { handlers, logs, errors } = setup();
    const a = new FakeSocket();
    const b = new FakeSocket();
    handlers.attach(a, ['frappe']);
    handlers.attach(b, ['frappe']);
    a.dispatch('ping');
    assert.deepEqual(a.sent, []);
    assert.equal(a.listenerCount('ping') + b.listenerCount('ping'), 0);
    assert.equal((globalThis as { __frappeCoreLoaded?: boolean }).__frappeCoreLoaded, undefined);
    const said = logs.filter((l) => l['app'] === 'frappe');
    assert.equal(said.length, 1);
    assert.equal(said[0]?.['level'], 30);
    assert.equal(await errors('frappe'), 0);
  });
});

describe('guarded listeners', () => {
  test('a listener that throws or rejects is counted and logged with app name and stack; the socket and other listeners carry on', async () => {
    const name = app(`module.exports = function (socket) {
      socket.on('sync', () => { throw new Error('sync boom'); });
      socket.on('async', async () => { throw new Error('async boom'); });
      socket.onAny((event) => { if (event === 'any') throw new Error('any boom'); });
      socket.on('nested', () => {
        // Registered from inside a listener, after an await: guarded too.
        Promise.resolve().then(() => socket.once('later', function () { this.send('this-is-the-view'); throw new Error('later boom'); }));
      });
      socket.on('sync', () => socket.send('second listener ran'));
    };`);
    const { handlers, logs, errors } = setup();
    const s = new FakeSocket();
    handlers.attach(s, [name]);
    assert.doesNotThrow(() => s.dispatch('sync'));
    assert.deepEqual(s.sent, [['second listener ran']]);
    s.dispatch('async');
    s.dispatch('any');
    s.dispatch('nested');
    await pollUntil(() => Promise.resolve(s.listenerCount('later') > 0 || undefined), {
      timeoutMs: 2000,
      intervalMs: 1,
      description: 'the nested listener',
    });
    assert.doesNotThrow(() => s.dispatch('later'));
    assert.deepEqual(s.sent[1], ['this-is-the-view']);
    await pollUntil(() => Promise.resolve(logs.filter((l) => l['level'] === 50).length >= 4 || undefined), {
      timeoutMs: 2000,
      intervalMs: 1,
      description: 'four listener errors logged',
    });
    assert.equal(await errors(name), 4);
    const errs = logs.filter((l) => l['level'] === 50);
    assert.deepEqual(errs.map((l) => l['err']).sort(), ['any boom', 'async boom', 'later boom', 'sync boom']);
    for (const l of errs) {
      assert.equal(l['app'], name);
      assert.match(String(l['stack']), /handlers\.js/);
    }
  });

  test('off(event, original) and offAny(original) remove what on/onAny registered', () => {
    const name = app(`module.exports = function (socket) {
      const f = () => socket.send('f');
      const g = () => socket.send('g');
      socket.on('x', f).on('y', f).onAny(g);
      socket.on('stop', () => { socket.off('x', f); socket.removeListener('y', f); socket.offAny(g); });
    };`);
    const { handlers } = setup();
    const s = new FakeSocket();
    handlers.attach(s, [name]);
    s.dispatch('x');
    s.dispatch('y');
    assert.deepEqual(s.sent, [['g'], ['f'], ['g'], ['f']]);
    s.dispatch('stop');
    s.sent.length = 0;
    s.dispatch('x');
    s.dispatch('y');
    assert.deepEqual(s.sent, []);
    assert.equal(s.listenerCount('x') + s.listenerCount('y') + s.any.length, 0);
  });

  test('the rest of the API works through the view: properties, join, getters that return the socket, property writes', () => {
    const name = app(`module.exports = function (socket) {
      socket.join('sensor:' + socket.user);
      socket.note = 'set by app';
      socket.on('v', () => { const v = socket.volatile; v.send(v === socket ? 'chained through the view' : 'escaped the view'); });
    };`);
    const { handlers } = setup();
    const s = new FakeSocket();
    handlers.attach(s, [name]);
    assert.ok(s.rooms.has('sensor:ana@example.com'));
    assert.equal((s as unknown as { note: string }).note, 'set by app');
    s.dispatch('v');
    assert.deepEqual(s.sent, [['chained through the view']]);
    assert.equal(s.flags['volatile'], true);
  });
});
