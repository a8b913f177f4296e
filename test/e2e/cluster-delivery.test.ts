/**
 * Several gateway hosts (separate process trees, same key prefix) on one
 * spawned Redis: exactly-once fan-out across hosts and workers, both adapter
 * modes, and cluster-wide doc_viewers that survive a host crash.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connectClient, EventRecorder, pollUntil, startRedis, waitConnect, withScope, type Socket } from '../harness';
import {
  assertExactlyOnce,
  connectTracked,
  defaultSpecs,
  errorLogs,
  DOCNAME,
  DOCTYPE,
  findLeader,
  logDiagnostic,
  newKeyPrefix,
  OUTSIDER,
  SEQ_EVENT,
  SeqPublisher,
  SITE,
  sidOf,
  startBackend,
  startHost,
  summarise,
  USERS,
  waitDelivered,
  waitSpread,
  warmUp,
  websiteBarrier,
  type TrackedClient,
} from './cluster-support';

/** `cmdstat_<name>:calls=N,...` lines of INFO commandstats, as name -> calls. */
function parseCommandStats(info: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([a-z|_]+):calls=(\d+)/gm)) out[m[1] ?? ''] = Number(m[2]);
  return out;
}

async function fanOutExactlyOnce(t: import('node:test').TestContext, adapterMode: 'sharded' | 'classic', events: number): Promise<void> {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_ADAPTER_MODE: adapterMode };
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env })));
  const clients: TrackedClient[] = [];
  for (const host of hosts) clients.push(...(await connectTracked(scope, host, defaultSpecs())));
  for (const host of hosts) await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);

  const publisher = scope.add(new SeqPublisher(pub, 1000));
  for (let i = 0; i < events; i++) publisher.publishOne();
  const last = await publisher.stop();
  await waitDelivered(clients, last);
  // Anything still in flight (a duplicate, a stray) arrives before this marker.
  await websiteBarrier(pub, clients);

  const total = summarise(clients, 1, last);
  logDiagnostic(t, `${adapterMode}: deliveries`, total);
  if (adapterMode === 'sharded') {
    // The leader's broadcasts are SPUBLISHes run inside its fenced batch script (EVALSHA) on standalone Redis 7.
    const stats = parseCommandStats(await pub.info('commandstats'));
    logDiagnostic(t, 'redis commandstats', { evalsha: stats['evalsha'], spublish: stats['spublish'], publish: stats['publish'] });
    assert.ok((stats['spublish'] ?? 0) >= events, `SPUBLISH ran for every broadcast (${stats['spublish'] ?? 0})`);
    assert.ok((stats['evalsha'] ?? 0) + (stats['eval'] ?? 0) > 0, 'broadcast batches ran as scripts');
  }
  assertExactlyOnce(clients, 1, last, adapterMode);
  const outsiders = clients.filter((c) => c.spec.user === OUTSIDER);
  assert.ok(outsiders.length === 2 && outsiders.every((c) => c.recorder.count(SEQ_EVENT) === 0), 'unsubscribed clients receive nothing');
  assert.ok(total.expected > events, 'the doc room fans out to several clients per host');
  // Start-up included: every process connected to Redis without an error.
  for (const host of hosts) assert.deepEqual(errorLogs(host), [], `${host.url} logged errors`);
}

test('two hosts on one Redis, sharded adapter: every event reaches each subscribed client once, across hosts and workers, polling clients included', async (t) => {
  await fanOutExactlyOnce(t, 'sharded', 1500);
});

test('two hosts on one Redis, classic adapter (GATEWAY_ADAPTER_MODE=classic): exactly-once delivery too', async (t) => {
  await fanOutExactlyOnce(t, 'classic', 500);
});

interface DocViewers {
  doctype: string;
  docname: string;
  users: string[];
}

test('doc_viewers spans hosts; a SIGKILLed host’s viewer leaves the list within the presence TTL and the remaining viewer is told', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const presenceTtlMs = 3000;
  const env = { GATEWAY_PRESENCE_TTL_MS: String(presenceTtlMs) };
  const [a, b] = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env })));
  assert.ok(a && b);

  const open = async (url: string, user: string): Promise<{ socket: Socket; rec: EventRecorder }> => {
    const socket = connectClient(url, SITE, { cookie: sidOf(user), scope, transports: ['websocket'] });
    const rec = new EventRecorder(socket);
    await waitConnect(socket);
    return { socket, rec };
  };
  const viewerA = await open(a.url, USERS[0]);
  const viewerB = await open(b.url, USERS[1]);
  const isUsers = (users: string[]) => (p: unknown) => JSON.stringify((p as DocViewers).users) === JSON.stringify(users);

  viewerA.socket.emit('doc_open', DOCTYPE, DOCNAME);
  // A's entry is in Redis before B opens, so the order of first opening is A, B.
  const presenceKey = `${keyPrefix}:presence:${SITE}:${DOCTYPE}/${DOCNAME}`;
  const probe = redis.client();
  await pollUntil(async () => ((await probe.hexists(presenceKey, viewerA.socket.id ?? '')) === 1 ? true : undefined), {
    timeoutMs: 10_000,
    intervalMs: 25,
    description: `presence entry of the first viewer in ${presenceKey}`,
  });
  viewerB.socket.emit('doc_open', DOCTYPE, DOCNAME);
  const both = [USERS[0], USERS[1]];
  const seenByA = await viewerA.rec.waitFor<DocViewers>('doc_viewers', isUsers(both), 10_000);
  const seenByB = await viewerB.rec.waitFor<DocViewers>('doc_viewers', isUsers(both), 10_000);
  assert.deepEqual(seenByA, { doctype: DOCTYPE, docname: DOCNAME, users: both });
  assert.deepEqual(seenByB, seenByA);

  const leaderBefore = (await findLeader([a, b])).host === a ? 'a (the crashed host)' : 'b (the surviving host)';
  const killedAt = Date.now();
  await a.kill();
  const update = await viewerB.rec.waitForRecord('doc_viewers', isUsers([USERS[1]]), 20_000);
  const tookMs = update.at - killedAt;
  logDiagnostic(t, 'doc_viewers update after host crash', { tookMs, presenceTtlMs, leaderBefore });
  assert.deepEqual(update.args[0], { doctype: DOCTYPE, docname: DOCNAME, users: [USERS[1]] });
  assert.ok(tookMs < presenceTtlMs + 5000, `crashed viewer left doc_viewers in ${tookMs} ms (presence TTL ${presenceTtlMs} ms)`);

  // A new viewer on the surviving host sees only live users.
  const late = await open(b.url, USERS[2]);
  late.socket.emit('doc_open', DOCTYPE, DOCNAME);
  const now = await late.rec.waitFor<DocViewers>('doc_viewers', undefined, 10_000);
  assert.deepEqual(now.users, [USERS[1], USERS[2]]);
});
