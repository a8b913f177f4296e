/**
 * The cluster session store against a real redis-server: one key per
 * session with a TTL, GETDEL so a session is restored by exactly one worker,
 * touch extends the TTL, remove deletes, and expiry is Redis's own.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createKeys } from '../../src/redis/keys';
import { RedisSessionStore, type StoredSession } from '../../src/recovery/session-recovery';
import { pollUntil, startRedis, uniqueKeyPrefix, withScope } from '../harness';

const session = (pid: string, rooms: string[] = ['user:ana', 'doctype:ToDo']): StoredSession => ({
  sid: `sid-${pid}`,
  pid,
  rooms,
  data: { site: 'site1.local', user: 'ana', user_type: 'System User', openDocs: [['ToDo', 'T-1']] },
});

test('RedisSessionStore against redis-server', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const client = redis.client();
  const keys = createKeys(uniqueKeyPrefix());
  const store = new RedisSessionStore(client, keys);

  await t.test('save one and a batch; each is its own key with the TTL', async () => {
    await store.save([session('p1')], 60_000);
    await store.save([session('p2'), session('p3', [])], 30_000);
    const ttl1 = await client.pttl(keys.session('p1'));
    const ttl3 = await client.pttl(keys.session('p3'));
    assert.ok(ttl1 > 59_000 && ttl1 <= 60_000, `p1 ttl ${ttl1}`);
    assert.ok(ttl3 > 29_000 && ttl3 <= 30_000, `p3 ttl ${ttl3}`);
    assert.deepEqual(JSON.parse((await client.get(keys.session('p2'))) ?? 'null'), session('p2'));
  });

  await t.test('take returns the session once and deletes its key; concurrent takes: one winner', async () => {
    assert.deepEqual(await store.take('p1'), session('p1'));
    assert.equal(await client.exists(keys.session('p1')), 0);
    assert.equal(await store.take('p1'), null);
    const racers = await Promise.all([store.take('p2'), store.take('p2'), new RedisSessionStore(redis.client(), keys).take('p2')]);
    assert.deepEqual(
      racers.filter((r) => r !== null),
      [session('p2')],
    );
  });

  await t.test('touch extends the TTL of existing sessions and creates none', async () => {
    await store.save([session('p4')], 1000);
    await store.touch(['p4', 'ghost'], 120_000);
    assert.ok((await client.pttl(keys.session('p4'))) > 119_000);
    assert.equal(await client.exists(keys.session('ghost')), 0);
  });

  await t.test('remove deletes the key', async () => {
    await store.remove('p4');
    assert.equal(await client.exists(keys.session('p4')), 0);
    assert.equal(await store.take('p4'), null);
  });

  await t.test('a session expires after its TTL (Redis expiry)', async () => {
    await store.save([session('p5')], 60);
    assert.ok(await client.exists(keys.session('p5')));
    await pollUntil(async () => ((await client.exists(keys.session('p5'))) === 0 ? true : undefined), {
      timeoutMs: 3000,
      intervalMs: 20,
      description: 'the session key to expire',
    });
    assert.equal(await store.take('p5'), null);
  });

  await t.test('an unparsable stored value is not a session, and is consumed', async () => {
    await client.set(keys.session('junk'), '{not json', 'PX', 60_000);
    assert.equal(await store.take('junk'), null);
    assert.equal(await client.exists(keys.session('junk')), 0);
  });

  await t.test('sessions of another key prefix are invisible', async () => {
    const other = new RedisSessionStore(client, createKeys(uniqueKeyPrefix()));
    await other.save([session('shared-pid')], 60_000);
    assert.equal(await store.take('shared-pid'), null);
    assert.ok(await other.take('shared-pid'));
  });
});
