/**
 * HistoryReader against a real redis-server: concurrent replays (a burst of
 * recovering clients) share the reads of the stream instead of each reading
 * everything after its own offset, and every reader still gets exactly the
 * entries after its offset, in order, up to the end of the stream as it was
 * when it asked.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Redis } from 'ioredis';
import { createKeys, type Keys } from '../../src/redis/keys';
import { HistoryReader } from '../../src/recovery/history';
import { startRedis, uniqueKeyPrefix, withScope } from '../harness';

/** Appends `n` entries; with `ms`, their ids are in that millisecond (`<ms>-*`) instead of now. */
async function append(client: Redis, keys: Keys, n: number, tag: string, ms?: number): Promise<string[]> {
  const pipe = client.pipeline();
  const id = ms === undefined ? '*' : `${ms}-*`;
  for (let i = 0; i < n; i++) pipe.xadd(keys.history, id, 'n', 's', 'r', `user:u${i % 10}`, 'a', `["ev",${JSON.stringify(`${tag}${i}`)}`);
  const res = (await pipe.exec()) ?? [];
  const ids = res.map(([, id]) => String(id));
  if ((await client.exists(keys.historyGenesis)) === 0) await client.set(keys.historyGenesis, ids[0] ?? '0-0');
  return ids;
}

/** Counts the stream entries the reader fetched from Redis. */
function countFetched(client: Redis): { entries: number; calls: number } {
  const seen = { entries: 0, calls: 0 };
  const xrange = client.xrange.bind(client) as (...a: unknown[]) => Promise<unknown[]>;
  (client as unknown as { xrange: (...a: unknown[]) => Promise<unknown[]> }).xrange = async (...a: unknown[]) => {
    const r = await xrange(...a);
    seen.calls++;
    seen.entries += r.length;
    return r;
  };
  return seen;
}

async function readIds(reader: HistoryReader, offset: string): Promise<{ ids: string[]; last: string }> {
  const ids: string[] = [];
  const last = await reader.readAfter(offset, (e) => ids.push(e.id));
  return { ids, last };
}

test('history read window', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });

  for (const order of ['oldest first', 'newest first'] as const) {
    await t.test(`50 concurrent replays from different offsets (${order}): each exact, the stream read about once`, async () => {
      const client = redis.client();
      const keys = createKeys(uniqueKeyPrefix());
      const ids = await append(client, keys, 3000, 'a');
      const fetched = countFetched(client);
      const reader = new HistoryReader(client, keys);
      const at = Array.from({ length: 50 }, (_, i) => i * 50);
      if (order === 'newest first') at.reverse();
      const results = await Promise.all(at.map((i) => readIds(reader, ids[i] as string)));
      results.forEach((r, k) => {
        assert.deepEqual(r.ids, ids.slice((at[k] as number) + 1), `reader ${k}: every entry after its offset, in order`);
        assert.equal(r.last, ids.at(-1));
      });
      // Without the window: the sum over readers of what follows each offset, ~76,000 entries.
      assert.ok(fetched.entries <= 2 * ids.length, `fetched ${fetched.entries} entries for ${ids.length} in the stream`);
    });
  }

  await t.test('a later read sees what was appended since; an older offset is read back to the window', async () => {
    const client = redis.client();
    const keys = createKeys(uniqueKeyPrefix());
    const first = await append(client, keys, 200, 'b');
    const reader = new HistoryReader(client, keys);
    assert.deepEqual((await readIds(reader, first[100] as string)).ids, first.slice(101));
    const more = await append(client, keys, 50, 'c');
    const fetched = countFetched(client);
    const r = await readIds(reader, first[150] as string);
    assert.deepEqual(r.ids, [...first.slice(151), ...more], 'window plus the new tail');
    assert.equal(r.last, more.at(-1));
    assert.equal(fetched.entries, 50, 'only the new tail was fetched');
    const older = await readIds(reader, first[10] as string);
    assert.deepEqual(older.ids, [...first.slice(11), ...more], 'older than the window: read back, then the window');
    const again = await readIds(reader, first[20] as string);
    assert.deepEqual(again.ids, [...first.slice(21), ...more]);
    assert.ok(fetched.entries <= 50 + 91, `the read back is kept (fetched ${fetched.entries})`);
  });

  await t.test('reads racing with appends end at or after the stream end at the time of the call', async () => {
    const client = redis.client();
    const keys = createKeys(uniqueKeyPrefix());
    const base = await append(client, keys, 100, 'd');
    const reader = new HistoryReader(client, keys);
    const all = [...base];
    const reads: Promise<{ ids: string[]; last: string; endAtCall: string; from: string }>[] = [];
    for (let round = 0; round < 10; round++) {
      const endAtCall = all.at(-1) as string;
      const from = all[Math.floor(all.length / 2)] as string;
      reads.push(readIds(reader, from).then((r) => ({ ...r, endAtCall, from })));
      all.push(...(await append(client, keys, 20, `e${round}-`)));
    }
    for (const r of await Promise.all(reads)) {
      assert.ok(r.ids.includes(r.endAtCall), 'the read reached the end as it was when it was asked');
      const expected = all.slice(all.indexOf(r.from) + 1, all.indexOf(r.last) + 1);
      assert.deepEqual(r.ids, expected, 'contiguous and in order');
    }
  });

  await t.test('a replaced stream (new genesis) is not served from the old window', async () => {
    const client = redis.client();
    const keys = createKeys(uniqueKeyPrefix());
    const old = await append(client, keys, 30, 'f');
    const reader = new HistoryReader(client, keys);
    assert.equal((await readIds(reader, old[0] as string)).ids.length, 29);
    await client.del(keys.history, keys.historyGenesis);
    // A stream that Redis lost is replaced by one that starts later. Within one millisecond
    // (a fast machine) '*' would give the new stream the old one's first id, i.e. the same genesis.
    const fresh = await append(client, keys, 10, 'g', Number(String(old.at(-1)).split('-')[0]) + 1);
    const r = await readIds(reader, old[5] as string);
    assert.deepEqual(r.ids, fresh, 'read from Redis: the new stream after the offset, none of the old entries');
  });
});
