/**
 * A host cut off from Redis while its processes stay alive: two hosts share
 * one Redis, host A (the events leader) reaches it through a TCP proxy that
 * is blackholed for longer than the leader lease, host B directly.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope } from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';
import {
  assertExactlyOnce,
  clusterInfo,
  connectTracked,
  defaultSpecs,
  findLeader,
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
  warmUp,
  websiteBarrier,
  type TrackedClient,
} from './cluster-support';

/** Leader lease of this test (GATEWAY_LEADER_LEASE_MS); the blackhole lasts several of them. */
const LEASE_MS = 1000;
const BLACKHOLE_MS = 10_000;
/**
 * /readyz of the cut-off host answers 503 within this bound: its health ping
 * times out after 1 s (HEALTH_PING_TIMEOUT_MS), plus one poll interval and
 * scheduling slack on a shared 2-core machine.
 */
const READYZ_503_BOUND_MS = 3000;
/**
 * Commands host A (primary + 2 workers) may hold unanswered after the
 * blackhole: periodic heartbeats and probes, not events (which Redis holds
 * for its subscribers). Growth is linear in time, a few per second.
 */
const UNANSWERED_BOUND = 200;

test('host cut off from Redis (blackhole longer than the lease): the other host takes over without split brain, loses and duplicates nothing; the cut-off host is 503 meanwhile and its clients get every event exactly once after heal', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_LEADER_LEASE_MS: String(LEASE_MS), GATEWAY_LEADER_RENEW_MS: '200' };
  // A first, so it takes the lease; then B.
  const hostA = await startHost({ scope, backend, keyPrefix, redisUrl: proxy.url, env });
  assert.equal((await findLeader([hostA])).host, hostA);
  const hostB = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env });
  const clients: TrackedClient[] = [];
  for (const host of [hostA, hostB]) clients.push(...(await connectTracked(scope, host, defaultSpecs())));
  for (const host of [hostA, hostB]) await waitSpread(host, clients, 2);
  const onA = clients.filter((c) => c.host === hostA);
  const onB = clients.filter((c) => c.host === hostB);
  const pub = redis.client();
  await warmUp(pub, clients);
  const infoA = await clusterInfo(hostA);
  const pidsA = [infoA.node.pid, ...infoA.workers.map((w) => w.pid)];
  const epochBefore = infoA.node.epoch;
  const fencedBefore = (await hostA.metricValue('gateway_fenced_batches_total')) ?? 0;

  const publisher = scope.add(new SeqPublisher(pub, 200));
  publisher.start();
  await Promise.all(clients.filter((c) => c.rooms.size > 0).map((c) => c.recorder.waitForCount(SEQ_EVENT, 5, undefined, 10_000)));

  // Cut A off the moment its primary sends a broadcast batch: the batch is
  // held in the partition and reaches Redis after B took over (a stale write).
  await proxy.blackholeOn((chunk) => chunk.includes(SEQ_EVENT));
  const cutAt = Date.now();
  const seqAtCut = publisher.published;

  // A notices through its health ping: /readyz 503 with a reason.
  const notReady = await pollUntil(
    async () => {
      const r = await hostA.readyz();
      return r.status === 503 ? (r.body as Record<string, unknown>) : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: 'host A /readyz to answer 503 while cut off' },
  );
  const readyz503Ms = Date.now() - cutAt;
  // B takes the lease once A's expired in Redis.
  const takeover = await findLeader([hostB], 10_000);
  const takeoverMs = Date.now() - cutAt;
  // A stepped down by itself (its renewals get no answer): no two leaders.
  await pollUntil(async () => ((await hostA.metricValue('gateway_leader')) === 0 ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 100,
    description: 'host A to report gateway_leader 0 while cut off',
  });
  // B's clients keep receiving everything during the partition.
  const seqMid = publisher.published;
  await waitDelivered(onB, seqMid, 10_000);
  const metricsWhileCut = await hostA.metrics();
  const remaining = BLACKHOLE_MS - (Date.now() - cutAt);
  if (remaining > 0) await new Promise((r) => setTimeout(r, remaining)); // the fault's duration, not a wait for an event
  // What A holds meanwhile: the commands it sent and got no reply for (a
  // few periodic ones per process), and its Redis connections count as down.
  const unansweredAtHeal = (await hostA.metricValue('gateway_redis_commands_unanswered')) ?? NaN;
  const redisUpAtHeal = await hostA.metricValue('gateway_redis_up');
  const connectedAtHeal = onA.filter((c) => c.socket.connected).length;
  const seqAtHeal = publisher.published;
  proxy.heal();
  const healAt = Date.now();

  await pollUntil(async () => ((await hostA.readyz()).status === 200 ? true : undefined), {
    timeoutMs: 15_000,
    intervalMs: 100,
    description: 'host A /readyz to answer 200 after heal',
  });
  const readyAgainMs = Date.now() - healAt;
  await pollUntil(
    async () =>
      (await hostA.metricValue('gateway_redis_commands_unanswered')) === 0 && ((await hostA.metricValue('gateway_redis_up')) ?? 0) > 0
        ? true
        : undefined,
    { timeoutMs: 15_000, intervalMs: 200, description: 'host A: every command answered and gateway_redis_up back after heal' },
  );
  // A keeps publishing traffic flowing after heal, then everything settles.
  await waitDelivered(clients, seqAtHeal + 200, 20_000);
  const last = await publisher.stop();
  await waitDelivered(clients, last, 20_000);
  await websiteBarrier(pub, clients, 20_000);

  const leaderAfter = await findLeader([hostA, hostB]);
  const fencedAfter = (await hostA.metricValue('gateway_fenced_batches_total')) ?? 0;
  const transitionsA = await hostA.metricValue('gateway_leader_transitions_total', { to: 'standby' });
  logDiagnostic(t, 'partition', {
    readyz503Ms,
    readyzBody: notReady,
    takeoverMs,
    readyAgainMs,
    seqAtCut,
    seqAtHeal,
    last,
    connectedAtHeal,
    unansweredAtHeal,
    redisUpAtHeal,
    epochBefore,
    epochAfter: takeover.info.node.epoch,
    leaderAfter: leaderAfter.info.leader,
    fencedBatches: fencedAfter - fencedBefore,
    disconnectsA: onA.map((c) => c.disconnects),
    deliveriesA: summarise(onA, 1, last),
    deliveriesB: summarise(onB, 1, last),
    proxy: { connections: proxy.connections, forwarded: proxy.forwarded },
  });

  // Readiness: 503 within the documented bound, with a reason naming Redis.
  assert.ok(readyz503Ms <= READYZ_503_BOUND_MS, `host A /readyz went 503 after ${readyz503Ms} ms (bound ${READYZ_503_BOUND_MS} ms)`);
  assert.equal(notReady['redis'], false);
  assert.match(String(notReady['reason']), /redis unreachable/);
  // No split brain: B leads under a newer epoch, A stepped down and counted it.
  assert.ok(
    takeover.info.node.epoch !== null && epochBefore !== null && takeover.info.node.epoch > epochBefore,
    'B leads under a newer epoch',
  );
  assert.ok((transitionsA ?? 0) >= 1, 'host A counted its step-down');
  assert.ok(fencedAfter - fencedBefore >= 1, "the batch A sent before the cut reached Redis after B's takeover and was fenced");
  assert.match(metricsWhileCut, /^gateway_leader 0$/m, 'host A is not the leader while cut off');
  assert.ok(pidsA.every(processAlive), 'no process of host A died');
  // Stall detection (src/redis/connect.ts STALL_MS): the connections that look open count as down.
  assert.equal(redisUpAtHeal, 0, 'gateway_redis_up is 0 on host A while it is cut off');
  assert.ok(unansweredAtHeal > 0, 'gateway_redis_commands_unanswered shows what waits for Redis');
  assert.ok(
    unansweredAtHeal < UNANSWERED_BOUND,
    `host A queued ${unansweredAtHeal} commands in ${BLACKHOLE_MS} ms (bound ${UNANSWERED_BOUND})`,
  );
  // Every client got every event of its rooms exactly once: B's through the
  // partition, A's after heal (what Redis held for their subscriptions).
  assertExactlyOnce(onB, 1, last, 'client of the host that kept Redis');
  for (const c of onB) assert.deepEqual(c.disconnects, [], `${c.spec.user} on host B was not disconnected`);
  assertExactlyOnce(onA, 1, last, 'client of the cut-off host, after heal');
  for (const c of onA) assert.deepEqual(c.disconnects, [], `${c.spec.user} on host A stayed connected through the partition`);
});
