import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HistoryEntry } from '../../src/recovery/history';
import { ReadWindow } from '../../src/recovery/read-window';

const e = (id: string): HistoryEntry => ({ id, namespace: 's', room: 'r', args: `["ev",${JSON.stringify(id)}` });
const ids = (w: ReadWindow, after: string): string[] => {
  const out: string[] = [];
  w.visitAfter(after, (x) => out.push(x.id));
  return out;
};

test('read window: an empty window covers nothing', () => {
  const w = new ReadWindow(100, 60_000);
  assert.equal(w.covers('1-0'), false);
  assert.equal(w.from, null);
});

test('read window: seed, then visit what follows any covered offset, in order', () => {
  const w = new ReadWindow(100, 60_000);
  w.seed('1000-0', [e('1000-1'), e('1001-0'), e('1002-0')], '1003-0', 'g');
  assert.equal(w.covers('1000-0'), true);
  assert.equal(w.covers('999-9'), false, 'older than the window');
  assert.equal(w.covers('1003-1'), false, 'beyond what was read');
  assert.deepEqual(ids(w, '1000-0'), ['1000-1', '1001-0', '1002-0']);
  assert.deepEqual(ids(w, '1001-0'), ['1002-0']);
  assert.deepEqual(ids(w, '1002-5'), []);
  assert.equal(
    w.visitAfter('1001-0', () => undefined),
    '1003-0',
    'covered up to the last id read',
  );
});

test('read window: append extends it; entries at or below the old end are not doubled', () => {
  const w = new ReadWindow(100, 60_000);
  w.seed('1000-0', [e('1001-0')], '1001-0', 'g');
  w.append([e('1001-0'), e('1002-0'), e('1003-0')], '1003-0');
  assert.deepEqual(ids(w, '1000-0'), ['1001-0', '1002-0', '1003-0']);
  assert.equal(w.to, '1003-0');
});

test('read window: prepend makes it start earlier; a range that does not reach back is ignored', () => {
  const w = new ReadWindow(100, 60_000);
  w.seed('1002-0', [e('1003-0')], '1003-0', 'g');
  w.prepend('1000-0', [e('1001-0'), e('1002-0'), e('1003-0')]);
  assert.equal(w.from, '1000-0');
  assert.deepEqual(ids(w, '1000-0'), ['1001-0', '1002-0', '1003-0']);
  w.prepend('1001-0', [e('1002-0')]);
  assert.deepEqual(ids(w, '1000-0'), ['1001-0', '1002-0', '1003-0'], 'already covered: unchanged');
});

test('read window: the count bound drops the oldest entries and moves the start past them', () => {
  const w = new ReadWindow(3, 60_000);
  w.seed('1000-0', [e('1001-0'), e('1002-0'), e('1003-0'), e('1004-0'), e('1005-0')], '1005-0', 'g');
  assert.equal(w.size, 3);
  assert.equal(w.from, '1002-0');
  assert.equal(w.covers('1001-0'), false);
  assert.deepEqual(ids(w, '1002-0'), ['1003-0', '1004-0', '1005-0']);
});

test('read window: the age bound is measured from the newest id read', () => {
  const w = new ReadWindow(100, 5_000);
  w.seed('1000-0', [e('1000-1'), e('4000-0'), e('7000-0')], '7000-0', 'g');
  assert.deepEqual(ids(w, w.from ?? ''), ['4000-0', '7000-0']);
  w.append([e('20000-0')], '20000-0');
  assert.equal(w.size, 1);
  assert.equal(w.from, '7000-0');
  // Everything aged out: the window still covers (last entry, end], which holds nothing.
  w.append([], '30000-0');
  assert.equal(w.size, 0);
  assert.equal(w.covers('20000-0'), true);
  assert.deepEqual(ids(w, '20000-0'), []);
});

test('read window: reset empties it', () => {
  const w = new ReadWindow(100, 60_000);
  w.seed('1-0', [e('2-0')], '2-0', 'g');
  w.reset();
  assert.equal(w.covers('1-0'), false);
  assert.equal(w.genesis, null);
  w.append([e('3-0')], '3-0');
  assert.equal(w.size, 0, 'append on an empty window does nothing');
});
