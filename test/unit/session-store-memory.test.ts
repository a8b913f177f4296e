/**
 * The standalone session store (session recovery, one process): a session is
 * given back once, only within its TTL, touch extends it, and the map is
 * bounded by evicting the session saved longest ago.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { openDocRoom } from '../../src/events/rooms';
import { MemorySessionStore, restoredData, type StoredSession } from '../../src/recovery/session-recovery';

const session = (pid: string, rooms: string[] = ['user:ana', 'doc:ToDo/T-1']): StoredSession => ({
  sid: `sid-${pid}`,
  pid,
  rooms,
  data: { site: 'site1.local', user: 'ana', user_type: 'System User', openDocs: [['ToDo', 'T-1']] },
});

function clock(t: TestContext): { advance(ms: number): void } {
  let now = Date.now();
  t.mock.method(Date, 'now', () => now);
  return {
    advance(ms) {
      now += ms;
    },
  };
}

describe('MemorySessionStore', () => {
  test('take gives a saved session back once', async () => {
    const store = new MemorySessionStore();
    await store.save([session('p1'), session('p2')], 10_000);
    assert.deepEqual(await store.take('p1'), session('p1'));
    assert.equal(await store.take('p1'), null);
    assert.deepEqual(await store.take('p2'), session('p2'));
    assert.equal(await store.take('unknown'), null);
  });

  test('saving a pid again replaces its session', async () => {
    const store = new MemorySessionStore();
    await store.save([session('p1', ['a'])], 10_000);
    await store.save([session('p1', ['b'])], 10_000);
    assert.deepEqual((await store.take('p1'))?.rooms, ['b']);
    assert.equal(await store.take('p1'), null);
  });

  test('a session is valid up to its TTL inclusive, gone after', async (t) => {
    const c = clock(t);
    const store = new MemorySessionStore();
    await store.save([session('p1'), session('p2')], 1000);
    c.advance(1000);
    assert.ok(await store.take('p1'));
    c.advance(1);
    assert.equal(await store.take('p2'), null);
  });

  test('touch extends the TTL of the given pids only, from now', async (t) => {
    const c = clock(t);
    const store = new MemorySessionStore();
    await store.save([session('p1'), session('p2')], 1000);
    c.advance(900);
    await store.touch(['p1', 'not-saved'], 1000);
    c.advance(500);
    assert.ok(await store.take('p1'), 'extended to 1900');
    assert.equal(await store.take('p2'), null, 'expired at 1000');
  });

  test('touch cannot revive an expired session', async (t) => {
    const c = clock(t);
    const store = new MemorySessionStore();
    await store.save([session('p1')], 100);
    c.advance(101);
    await store.touch([], 1000);
    await store.touch(['p1'], 1000);
    assert.equal(await store.take('p1'), null);
  });

  test('remove forgets a session', async () => {
    const store = new MemorySessionStore();
    await store.save([session('p1')], 10_000);
    await store.remove('p1');
    await store.remove('p1');
    assert.equal(await store.take('p1'), null);
  });

  test('bounded at 100,000 sessions: the one saved longest ago is evicted; re-saving refreshes the position', async () => {
    const store = new MemorySessionStore();
    const batch = Array.from({ length: 99_999 }, (_, i) => session(`p${i}`, []));
    await store.save(batch, 60_000);
    await store.save([session('p0', ['again'])], 60_000);
    await store.save([session('new-1', [])], 60_000); // exactly 100,000: nothing evicted yet
    await store.save([session('new-2', [])], 60_000);
    assert.equal(await store.take('p1'), null, 'the oldest is evicted to make room');
    for (const pid of ['p2', 'p99998', 'new-1', 'new-2']) assert.ok(await store.take(pid), pid);
    assert.deepEqual((await store.take('p0'))?.rooms, ['again'], 're-saved: now among the newest');
  });
});

describe('restoredData', () => {
  test('open documents come back keyed by their open_doc room', () => {
    const s: StoredSession = {
      sid: 'x',
      pid: 'p',
      rooms: ['open_doc:ToDo/T-1'],
      data: {
        site: 'site1.local',
        user: 'ana',
        user_type: 'Website User',
        openDocs: [
          ['ToDo', 'T-1'],
          ['Sales Invoice', 'ACC/2026/1'],
        ],
      },
    };
    const d = restoredData(s);
    assert.equal(d.site, 'site1.local');
    assert.equal(d.user, 'ana');
    assert.equal(d.user_type, 'Website User');
    assert.deepEqual(
      [...(d.openDocs?.entries() ?? [])],
      [
        [openDocRoom('ToDo', 'T-1'), { doctype: 'ToDo', docname: 'T-1' }],
        [openDocRoom('Sales Invoice', 'ACC/2026/1'), { doctype: 'Sales Invoice', docname: 'ACC/2026/1' }],
      ],
    );
  });

  test('no open documents: an empty map', () => {
    const d = restoredData({ ...session('p'), data: { site: 's', user: 'u', user_type: 'Guest', openDocs: [] } });
    assert.equal(d.openDocs?.size, 0);
  });
});
