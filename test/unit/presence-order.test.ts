/**
 * doc_viewers contents (docs/protocol.md section 5): users de-duplicated, in order
 * of first opening, for the in-process store (standalone) and the ordering
 * helper the Redis store shares.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LocalPresence, orderedUsers } from '../../src/presence/presence';

describe('orderedUsers', () => {
  test('sorts by opening sequence and keeps each user once, at its first opening', () => {
    assert.deepEqual(
      orderedUsers([
        { seq: 7, user: 'c' },
        { seq: 2, user: 'a' },
        { seq: 5, user: 'b' },
        { seq: 9, user: 'a' },
        { seq: 3, user: 'b' },
      ]),
      ['a', 'b', 'c'],
    );
    assert.deepEqual(orderedUsers([]), []);
  });
});

describe('LocalPresence', () => {
  const doc = { site: 'site1.local', doctype: 'ToDo', docname: 'T-1' };

  test('open: order of first opening, not of connection; a second tab does not duplicate the user', async () => {
    const p = new LocalPresence();
    assert.deepEqual(await p.open(doc, 'sock-b', 'b'), ['b']);
    assert.deepEqual(await p.open(doc, 'sock-a1', 'a'), ['b', 'a']);
    assert.deepEqual(await p.open(doc, 'sock-a2', 'a'), ['b', 'a']);
    assert.deepEqual(await p.open(doc, 'sock-c', 'c'), ['b', 'a', 'c']);
    assert.deepEqual(await p.open(doc, 'sock-b', 'b'), ['b', 'a', 'c'], 'opening twice from one socket changes nothing');
  });

  test('close: a user stays while any of its tabs has the document open; its position follows its earliest open tab', async () => {
    const p = new LocalPresence();
    await p.open(doc, 'a1', 'a');
    await p.open(doc, 'b1', 'b');
    await p.open(doc, 'a2', 'a');
    assert.deepEqual(await p.close(doc, 'a1'), ['b', 'a']);
    assert.deepEqual(await p.close(doc, 'a2'), ['b']);
    assert.deepEqual(await p.close(doc, 'b1'), []);
    assert.equal(p.size, 0, 'a document nobody has open leaves no state');
    assert.deepEqual(await p.close(doc, 'never-opened'), []);
    assert.equal(p.size, 0);
  });

  test('documents and sites are independent', async () => {
    const p = new LocalPresence();
    await p.open(doc, 's1', 'a');
    assert.deepEqual(await p.open({ ...doc, docname: 'T-2' }, 's2', 'b'), ['b']);
    assert.deepEqual(await p.open({ ...doc, site: 'site2.local' }, 's3', 'c'), ['c']);
    await p.stop();
    assert.equal(p.size, 0);
  });
});
