/**
 * Process and Redis faults of a running cluster: a worker crash, and Redis
 * going away and coming back (without persistence, so with an empty dataset).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope, type GatewayHandle, type RedisServer } from '../harness';
import {
  assertExactlyOnce,
  clusterInfo,
  connectTracked,
  defaultSpecs,
  deliveryOf,
  findLeader,
  largestGap,
  logDiagnostic,
  newKeyPrefix,
  processAlive,
  SEQ_EVENT,
  SeqPublisher,
  startBackend,
  startHost,
  summarise,
  waitDelivered,
  waitSpread,
  waitWorkersUp,
  warmUp,
  websiteBarrier,
  workerIndexOf,
  type TrackedClient,
} from './cluster-support';

test('worker crash: the SIGKILLed worker is respawned, /readyz stays ok, clients of the other worker keep receiving without a disconnect', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startHost({ scope, backend, keyPrefix: newKeyPrefix(), redisUrl: redis.url });
  const clients = await connectTracked(scope, host, defaultSpecs());
  await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);

  const before = await clusterInfo(host);
  const oldPids = before.workers.map((w) => w.pid);
  // Rooms API answers come in worker order, like /api/v1/cluster's list; the
  // disconnects below confirm which clients really were on the victim.
  const index = await workerIndexOf(host, clients);
  const victimPid = oldPids[0];
  assert.ok(victimPid !== undefined);
  const onVictim = clients.filter((c) => index.get(c) === 0);
  const others = clients.filter((c) => index.get(c) === 1);
  assert.ok(onVictim.length > 0 && others.length > 0, 'clients on both workers');

  const publisher = scope.add(new SeqPublisher(pub, 400));
  publisher.start();
  const killAt = Date.now();
  process.kill(victimPid, 'SIGKILL');
  await Promise.all(onVictim.map((c) => (c.socket.connected ? new Promise((r) => c.socket.once('disconnect', r)) : Promise.resolve())));

  const after = await pollUntil(
    async () => {
      const info = await waitWorkersUp(host, 2, 5000);
      return info.workers.some((w) => !oldPids.includes(w.pid)) ? info : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 100, description: 'a respawned worker with a new pid' },
  );
  const respawnMs = Date.now() - killAt;
  assert.equal((await host.readyz()).status, 200);
  assert.ok(((await host.metricValue('gateway_worker_restarts_total')) ?? 0) >= 1, 'gateway_worker_restarts_total counts the respawn');
  assert.ok(!processAlive(victimPid));

  // Keep publishing past the respawn, then settle.
  const seqAtRespawn = publisher.published;
  await Promise.all(
    others.map((c) => c.recorder.waitForCount(SEQ_EVENT, deliveryOf(c, 1, seqAtRespawn + 200).expected, undefined, 15_000)),
  );
  const last = await publisher.stop();
  await waitDelivered(others, last);
  await websiteBarrier(pub, others);

  const gap = largestGap(others, killAt - 200, Date.now());
  logDiagnostic(t, 'worker crash', {
    respawnMs,
    newWorkers: after.workers.map((w) => w.pid),
    oldWorkers: oldPids,
    othersLargestGapMs: gap.gapMs,
    deliveries: summarise(others, 1, last),
  });
  assertExactlyOnce(others, 1, last, 'client of the surviving worker');
  for (const c of others) assert.deepEqual(c.disconnects, [], `${c.spec.user} on the surviving worker was not disconnected`);
  for (const c of onVictim) assert.equal(c.socket.connected, false, `${c.spec.user} was on the killed worker`);
});

/** Restarts Redis on its port and waits for every host to be ready with a leader again. */
async function restartRedis(redis: RedisServer, hosts: readonly GatewayHandle[]): Promise<void> {
  await redis.restart();
  for (const h of hosts) await h.ready(20_000);
  await findLeader(hosts, 20_000);
}

async function redisDown(redis: RedisServer, hosts: readonly GatewayHandle[]): Promise<Record<string, unknown>[]> {
  await redis.kill();
  return Promise.all(
    hosts.map((h) =>
      pollUntil(
        async () => {
          const r = await h.readyz();
          return r.status === 503 ? (r.body as Record<string, unknown>) : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 50, description: `${h.opsUrl}/readyz to answer 503 without Redis` },
      ),
    ),
  );
}

test('Redis killed and restarted on the same port: clients stay connected, /readyz is 503 with a reason meanwhile, nothing crashes; afterwards subscriptions, adapter and lease recover and every event is delivered exactly once', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url })));
  const clients: TrackedClient[] = [];
  for (const host of hosts) clients.push(...(await connectTracked(scope, host, defaultSpecs())));
  for (const host of hosts) await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);
  const leaderBefore = await findLeader(hosts);
  const pids = (await Promise.all(hosts.map(clusterInfo))).flatMap((i) => [i.node.pid, ...i.workers.map((w) => w.pid)]);

  const publisher = scope.add(new SeqPublisher(pub, 1000));
  for (let i = 0; i < 300; i++) publisher.publishOne();
  const beforeOutage = await publisher.stop();
  await waitDelivered(clients, beforeOutage);

  const down = await redisDown(redis, hosts);
  logDiagnostic(t, 'readyz without Redis', down[0]);
  for (const body of down) {
    assert.equal(body['status'], 'not ready');
    assert.equal(body['redis'], false);
    assert.match(String(body['reason']), /redis/i);
  }
  assert.ok(pids.every(processAlive), 'no gateway process died with Redis');
  assert.ok(
    clients.every((c) => c.socket.connected && c.disconnects.length === 0),
    'clients stay connected while Redis is down',
  );

  const restartAt = Date.now();
  await restartRedis(redis, hosts);
  // The adapter resubscribes by itself: markers reach every room again.
  await warmUp(pub, clients, 20_000);
  const recoveredMs = Date.now() - restartAt;
  for (let i = 0; i < 300; i++) publisher.publishOne();
  const last = await publisher.stop();
  await waitDelivered(clients, last);
  await websiteBarrier(pub, clients);

  const leaderAfter = await findLeader(hosts);
  logDiagnostic(t, 'Redis restart', {
    recoveredMs,
    leaderBefore: leaderBefore.info.leader,
    leaderAfter: leaderAfter.info.leader,
    deliveries: summarise(clients, 1, last),
  });
  assert.ok(pids.every(processAlive), 'no gateway process died');
  assert.ok(
    clients.every((c) => c.socket.connected && c.disconnects.length === 0),
    'no client was disconnected',
  );
  assertExactlyOnce(clients, 1, last, 'across a Redis restart');
});

test('Redis restart during which the leader host dies: the standby that takes over replays nothing from before the outage', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url })));
  const leader = await findLeader(hosts);
  const standby = hosts.find((h) => h !== leader.host);
  assert.ok(standby);
  const clients = await connectTracked(scope, standby, defaultSpecs().slice(0, 4));
  await waitSpread(standby, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);

  const publisher = scope.add(new SeqPublisher(pub, 1000));
  for (let i = 0; i < 300; i++) publisher.publishOne();
  const beforeOutage = await publisher.stop();
  await waitDelivered(clients, beforeOutage);

  await redisDown(redis, hosts);
  await leader.host.kill();
  await restartRedis(redis, [standby]);
  await warmUp(pub, clients, 20_000);
  for (let i = 0; i < 300; i++) publisher.publishOne();
  const last = await publisher.stop();
  await waitDelivered(clients, last);
  await websiteBarrier(pub, clients);

  const replayed = (await standby.metricValue('gateway_replayed_events_total')) ?? 0;
  logDiagnostic(t, 'takeover after Redis restart', { replayed, deliveries: summarise(clients, 1, last) });
  assertExactlyOnce(clients, 1, last, 'standby host');
});
