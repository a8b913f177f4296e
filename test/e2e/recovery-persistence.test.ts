/**
 * Redis restarted WITH persistence (append-only file, fsync always) under
 * steady load: the history stream, the sessions and the lease survive, so
 * nothing is lost. Connected clients get what their worker's subscriber
 * missed from history once its subscriptions are back; clients whose
 * transport dropped during the outage come back recovered with every event
 * they missed. The variant without persistence is in recovery-faults.test.ts
 * (clients are told `history_lost` there).
 *
 * Frappe's publishes while Redis is down queue in its client and may reach
 * Redis before the leader subscribed again (pub/sub keeps nothing for
 * nobody): what counts as accepted is what the leader wrote to history.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope } from '../harness';
import { newKeyPrefix, sidOf, startBackend, startHost, USERS } from './cluster-support';
import { assertInOrder, frontProxy, historySeqs, recoveringClient, RoomSequence, subscribeAll, SUBSCRIBED_ROOMS } from './recovery-support';

test('Redis restarted with persistence under steady load: 0 lost for connected clients, dropped ones recover with every missed event', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope, args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const host = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url });
  let open = true;
  const front = await frontProxy(scope, () => (open ? [host.port] : []));
  const stay = [];
  for (const user of USERS) stay.push({ user, ...(await recoveringClient(scope, host.url, sidOf(user))) });
  const away = [];
  for (const user of [USERS[0], USERS[1]])
    away.push({ user, ...(await recoveringClient(scope, `http://127.0.0.1:${front}`, sidOf(user))) });
  for (const c of [...stay, ...away]) await subscribeAll(c.socket);
  const disconnects: string[] = [];
  for (const c of stay) c.socket.on('disconnect', (r) => disconnects.push(`${c.user}: ${r}`));

  const seq = scope.add(new RoomSequence(redis.client(), SUBSCRIBED_ROOMS, 2));
  await seq.start();
  await Promise.all([...stay, ...away].map((c) => c.rec.waitForCount('replay_seq', 20, undefined, 10_000)));
  const admin = redis.client();
  const before = await historySeqs(admin, keyPrefix);
  const genesis = await admin.get(`{${keyPrefix}}:history:genesis`);

  await redis.stop();
  // The outage cuts these clients off; they cannot come back until Redis is.
  const gone = away.map((c) => new Promise<void>((r) => c.socket.once('disconnect', () => r())));
  open = false;
  for (const c of away) (c.socket.io.engine as unknown as { close(): void }).close();
  await Promise.all(gone);
  await redis.restart();
  assert.equal(await admin.get(`{${keyPrefix}}:history:genesis`), genesis, 'the same history stream after the restart');
  const kept = new Set(await historySeqs(admin, keyPrefix));
  assert.deepEqual(
    before.filter((s) => !kept.has(s)),
    [],
    'every event in history before the stop is still there',
  );
  await host.ready(15_000);
  await pollUntil(async () => ((await historySeqs(admin, keyPrefix)).length > kept.size + 50 ? true : undefined), {
    timeoutMs: 15_000,
    intervalMs: 50,
    description: 'the leader to broadcast again after the restart',
  });
  const back = away.map((c) => new Promise<void>((r) => c.socket.once('connect', () => r())));
  open = true;
  await Promise.all(back);
  await seq.waitPublished(100);
  await seq.stop({ allowFailures: true });
  // Everything published is answered; the leader may still be broadcasting the last ones.
  const published = seq.published;
  const accepted = await pollUntil(
    async () => {
      const h = await historySeqs(admin, keyPrefix);
      return h.at(-1) === published ? h : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 50, description: 'the last publish to reach history' },
  );
  const reordered = accepted.filter((s, i) => i > 0 && s < (accepted[i - 1] as number)).length;
  t.diagnostic(
    `${published} published, ${accepted.length} accepted (in history), ${reordered} reached Redis out of seq order, gap events read by the workers: ${String(await host.metricValue('gateway_history_gap_events_total'))}`,
  );
  for (const c of away) assert.equal(c.socket.recovered, true, `${c.user} (dropped during the outage) recovered`);
  for (const c of [...stay, ...away]) {
    await assertInOrder(c.rec, accepted, c.user);
    assert.equal(c.rec.count('rtg_missed_updates'), 0, `${c.user} was not told it missed updates`);
  }
  assert.deepEqual(disconnects, [], 'the connected clients stayed connected');
});
