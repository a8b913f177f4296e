/**
 * Cluster presence against a real redis-server: viewer order and
 * de-duplication across sockets and workers, a socket closing its documents,
 * no keys left once everyone left, sweeping a dead worker's entries, and the
 * liveness classification that decides whose entries still count.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import type { Redis } from 'ioredis';
import { Liveness, RedisPresence, indexMemberToRef, refToIndexMember, sweepDeadWorker } from '../../src/presence/redis-presence';
import { createKeys, type Keys } from '../../src/redis/keys';
import { startRedis, uniqueKeyPrefix, withScope } from '../harness';

const TTL = 1000;
const doc = (docname: string, doctype = 'ToDo') => ({ site: 'site1.local', doctype, docname });

/** Every key of the prefix, by SCAN (what a leak would leave behind). */
async function keysOf(client: Redis, keys: Keys): Promise<string[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', `${keys.prefix}:*`, 'COUNT', 1000);
    cursor = next;
    found.push(...batch);
  } while (cursor !== '0');
  return found.sort();
}

function clock(t: TestContext): { advance(ms: number): void } {
  let now = Date.now();
  t.mock.method(Date, 'now', () => now);
  return {
    advance(ms) {
      now += ms;
    },
  };
}

test('presence in Redis', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();

  /** Two live workers sharing one key prefix. */
  async function cluster() {
    const keys = createKeys(uniqueKeyPrefix());
    const liveness = new Liveness(client, keys, TTL);
    await liveness.beat('w1', { role: 'worker' });
    await liveness.beat('w2', { role: 'worker' });
    return { keys, liveness, w1: new RedisPresence(client, keys, 'w1', liveness), w2: new RedisPresence(client, keys, 'w2', liveness) };
  }

  await t.test('a socket recovered on another worker keeps its place; its old worker closing it late removes nothing', async () => {
    const { w1, w2, keys } = await cluster();
    const d = doc('MOVED-1');
    const key = keys.presenceDoc(d.site, d.doctype, d.docname);
    assert.deepEqual(await w1.open(d, 's-a', 'ana'), ['ana']);
    assert.deepEqual(await w1.open(d, 's-b', 'bo'), ['ana', 'bo']);
    // s-a recovered on w2 (same socket id), while w1 was stopped.
    assert.deepEqual(await w2.open(d, 's-a', 'ana'), ['ana', 'bo']);
    assert.match((await client.hget(key, 's-a')) ?? '', /\tw2\t/);
    // w1 resumes and sees s-a time out: the entry is w2's now.
    assert.deepEqual(await w1.close(d, 's-a'), ['ana', 'bo']);
    assert.deepEqual(await w1.close(d, 's-b'), ['ana']);
    assert.deepEqual(await w2.close(d, 's-a'), []);
    assert.equal(await client.exists(key), 0);
  });

  await t.test('order of first opening across workers, each user once, a second open from a socket changes nothing', async () => {
    const { w1, w2 } = await cluster();
    const d = doc('T-1');
    assert.deepEqual(await w1.open(d, 's-b', 'bo'), ['bo']);
    assert.deepEqual(await w2.open(d, 's-a1', 'ana'), ['bo', 'ana']);
    assert.deepEqual(await w1.open(d, 's-a2', 'ana'), ['bo', 'ana']);
    assert.deepEqual(await w2.open(d, 's-c', 'cy'), ['bo', 'ana', 'cy']);
    assert.deepEqual(await w1.open(d, 's-b', 'bo'), ['bo', 'ana', 'cy']);
    assert.deepEqual(await w2.close(d, 's-a1'), ['bo', 'ana', 'cy'], 'ana still has a tab open');
    assert.deepEqual(await w1.close(d, 's-b'), ['ana', 'cy']);
    assert.deepEqual(await w1.open(d, 's-b', 'bo'), ['ana', 'cy', 'bo'], 'reopening puts bo last');
    assert.deepEqual(await w1.open(doc('T-2'), 's-z', 'zoe'), ['zoe'], 'documents are independent');
  });

  await t.test('once every viewer left, no presence key is left (document hashes and worker indexes)', async () => {
    const { keys, w1, w2 } = await cluster();
    await w1.open(doc('T-1'), 's1', 'ana');
    await w2.open(doc('T-1'), 's2', 'bo');
    await w2.open(doc('T-2'), 's2', 'bo');
    assert.deepEqual(
      await keysOf(client, keys),
      [
        keys.nodes,
        keys.presenceDoc('site1.local', 'ToDo', 'T-1'),
        keys.presenceDoc('site1.local', 'ToDo', 'T-2'),
        keys.presenceIndex('w1'),
        keys.presenceIndex('w2'),
      ].sort(),
    );
    assert.deepEqual(await w1.close(doc('T-1'), 's1'), ['bo']);
    assert.deepEqual(await w2.close(doc('T-1'), 's2'), []);
    assert.deepEqual(await w2.close(doc('T-2'), 's2'), []);
    assert.deepEqual(await keysOf(client, keys), [keys.nodes], 'only the liveness hash remains');
    assert.deepEqual(await w2.close(doc('T-3'), 's9'), [], 'closing what was never open is harmless');
    assert.deepEqual(await keysOf(client, keys), [keys.nodes]);
  });

  await t.test('a socket closing all its documents: the worker index keeps only documents its other sockets still have', async () => {
    const { keys, w1 } = await cluster();
    for (const n of ['T-1', 'T-2', 'T-3']) await w1.open(doc(n), 's1', 'ana');
    await w1.open(doc('T-2'), 's2', 'bo');
    for (const n of ['T-1', 'T-2', 'T-3']) await w1.close(doc(n), 's1');
    assert.deepEqual(await client.smembers(keys.presenceIndex('w1')), [refToIndexMember(doc('T-2'))]);
    assert.deepEqual(await client.hkeys(keys.presenceDoc('site1.local', 'ToDo', 'T-2')), ['__seq', 's2']);
    await w1.close(doc('T-2'), 's2');
    assert.equal(await client.exists(keys.presenceIndex('w1')), 0);
  });

  await t.test('sweepDeadWorker removes exactly the dead worker entries and reports the changed documents', async () => {
    const { keys, liveness, w1, w2 } = await cluster();
    await w1.open(doc('T-1'), 'a1', 'ana');
    await w2.open(doc('T-1'), 'b1', 'bo');
    await w2.open(doc('T-1'), 'a2', 'ana');
    await w2.open(doc('T-2'), 'b1', 'bo');
    await w1.open(doc('T-3'), 'a1', 'ana');
    const changed = await sweepDeadWorker(client, keys, 'w2', liveness);
    changed.sort((x, y) => x.ref.docname.localeCompare(y.ref.docname));
    assert.deepEqual(changed, [
      { ref: doc('T-1'), users: ['ana'] },
      { ref: doc('T-2'), users: [] },
    ]);
    assert.deepEqual((await client.hkeys(keys.presenceDoc('site1.local', 'ToDo', 'T-1'))).sort(), ['__seq', 'a1']);
    assert.equal(await client.exists(keys.presenceDoc('site1.local', 'ToDo', 'T-2')), 0, 'a document only the dead worker had is gone');
    assert.deepEqual(await client.hkeys(keys.presenceDoc('site1.local', 'ToDo', 'T-3')), ['__seq', 'a1'], 'untouched');
    assert.equal(await client.exists(keys.presenceIndex('w2')), 0);
    assert.equal(await client.scard(keys.presenceIndex('w1')), 2);
    assert.deepEqual(await sweepDeadWorker(client, keys, 'w2', liveness), [], 'a second sweep finds nothing');
    assert.deepEqual(await w1.open(doc('T-1'), 'c1', 'cy'), ['ana', 'cy']);
  });

  await t.test('a viewer whose worker stopped beating no longer counts, and its entry is cleaned up', async (tt) => {
    const c = clock(tt);
    const { keys, liveness, w1, w2 } = await cluster();
    await w2.open(doc('T-1'), 'b1', 'bo');
    assert.deepEqual(await w1.open(doc('T-1'), 'a1', 'ana'), ['bo', 'ana']);
    c.advance(TTL + 1);
    await liveness.beat('w1', {});
    assert.deepEqual(await w1.open(doc('T-1'), 'a2', 'ana'), ['ana']);
    assert.deepEqual((await client.hkeys(keys.presenceDoc('site1.local', 'ToDo', 'T-1'))).sort(), ['__seq', 'a1', 'a2']);
  });

  await t.test('Liveness: alive up to the TTL inclusive, dead after; unknown and unparsable entries are dead', async (tt) => {
    const c = clock(tt);
    const keys = createKeys(uniqueKeyPrefix());
    const liveness = new Liveness(client, keys, TTL);
    await liveness.beat('a', { role: 'worker', host: 'h1' });
    c.advance(400);
    await liveness.beat('b', { role: 'primary' });
    await client.hset(keys.nodes, 'junk', '{oops');
    c.advance(TTL - 400);
    let all = await liveness.all();
    assert.deepEqual(all.alive.map((d) => d.id).sort(), ['a', 'b']);
    assert.deepEqual(
      all.alive.find((d) => d.id === 'a'),
      { role: 'worker', host: 'h1', id: 'a', seen: Date.now() - TTL },
    );
    assert.deepEqual(all.dead, ['junk']);
    assert.deepEqual([...(await liveness.deadAmong(['a', 'b', 'junk', 'never']))].sort(), ['junk', 'never']);
    c.advance(1);
    all = await liveness.all();
    assert.deepEqual(
      all.alive.map((d) => d.id),
      ['b'],
    );
    assert.deepEqual(all.dead.sort(), ['a', 'junk']);
    assert.deepEqual([...(await liveness.deadAmong(['a', 'b']))], ['a']);
    assert.deepEqual([...(await liveness.deadAmong([]))], []);
    await liveness.remove('a');
    assert.deepEqual((await liveness.all()).dead, ['junk']);
  });

  await t.test('index members round-trip, whatever characters the names hold; foreign members are ignored', () => {
    const ref = { site: 's:1', doctype: 'Sales Invoice', docname: 'ACC/2026/"1"\t' };
    assert.deepEqual(indexMemberToRef(refToIndexMember(ref)), ref);
    for (const m of ['', 'nope', '[1,2,3]', '["a","b"]', '{"site":"s"}']) assert.equal(indexMemberToRef(m), null, m);
  });
  await t.test(
    'closes made while Redis cannot be written are recorded, not sent, and applied in order once it can; a later open of the same socket wins',
    async () => {
      const { keys, liveness } = await cluster();
      let writable = true;
      let deferred = 0;
      const w = new RedisPresence(
        client,
        keys,
        'w1',
        liveness,
        () => writable,
        () => deferred++,
      );
      const d = doc('CUT-1');
      const key = keys.presenceDoc(d.site, d.doctype, d.docname);
      await w.open(d, 's-a', 'ana');
      await w.open(d, 's-b', 'bo');
      await w.open(d, 's-c', 'cy');
      writable = false;
      let resolved: string[] | undefined;
      const closingA = w.close(d, 's-a').then((users) => (resolved = users));
      const closingA2 = w.close(d, 's-a');
      void w.close(d, 's-b');
      // s-b comes back (same socket id) before Redis does: its open must not be undone by the recorded close.
      const reopenedB = w.open(d, 's-b', 'bo');
      assert.equal(deferred, 2, 'one record per (document, socket), however often it was closed');
      assert.equal(w.deferredCount, 1, "s-b's close was handed to Redis ahead of its open");
      assert.deepEqual(
        await reopenedB,
        ['ana', 'cy', 'bo'],
        "closed, then opened again (last in order); s-a's close is still only recorded",
      );
      assert.ok((await client.hget(key, 's-a')) !== null, 'nothing sent for s-a while Redis could not be written');
      assert.equal(resolved, undefined, 'the close waits for Redis');
      writable = true;
      await w.applyDeferred();
      assert.deepEqual(await closingA, ['cy', 'bo'], 'the close resolves with the remaining users once applied');
      assert.deepEqual(await closingA2, ['cy', 'bo']);
      assert.equal(w.deferredCount, 0);
      assert.equal(await client.hget(key, 's-a'), null);
      assert.deepEqual((await client.hkeys(key)).filter((f) => f !== '__seq').sort(), ['s-b', 's-c']);
    },
  );
  await t.test(
    'reassert: entries swept while the worker looked dead (a partition) are written again for its open sockets, not for closed ones',
    async () => {
      const { keys, liveness, w1, w2 } = await cluster();
      const d = doc('SWEPT-1');
      const key = keys.presenceDoc(d.site, d.doctype, d.docname);
      await w1.open(d, 's-a', 'ana');
      await w1.open(d, 's-b', 'bo');
      await w2.open(d, 's-c', 'cy');
      assert.deepEqual(await w1.reassert(), [], 'nothing missing, nothing written');
      await sweepDeadWorker(client, keys, 'w1', liveness);
      assert.deepEqual(
        (await client.hkeys(key)).filter((f) => f !== '__seq'),
        ['s-c'],
      );
      await w1.close(d, 's-b');
      await liveness.beat('w1', { role: 'worker' });
      assert.deepEqual(await w1.reassert(), [{ ref: d, users: ['cy', 'ana'] }]);
      assert.deepEqual((await client.hkeys(key)).filter((f) => f !== '__seq').sort(), ['s-a', 's-c']);
      assert.deepEqual(
        await client.smembers(keys.presenceIndex('w1')),
        [refToIndexMember(d)],
        "the worker's index lists the document again",
      );
    },
  );
});
