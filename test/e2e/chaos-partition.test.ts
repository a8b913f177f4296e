/**
 * A host cut off from Redis while its processes stay alive: two hosts share
 * one Redis, host A (the events leader) reaches it through a TCP proxy that
 * is blackholed for longer than the leader lease, host B directly.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope, withTimeout, type GatewayHandle } from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';
import {
  assertExactlyOnce,
  clusterInfo,
  connectTracked,
  defaultSpecs,
  DOCTYPE,
  findLeader,
  logDiagnostic,
  newKeyPrefix,
  processAlive,
  SEQ_EVENT,
  SeqPublisher,
  SITE,
  startBackend,
  startHost,
  summarise,
  waitDelivered,
  waitSpread,
  warmUp,
  websiteBarrier,
  type TrackedClient,
  USERS,
} from './cluster-support';

/** Leader lease of this test (GATEWAY_LEADER_LEASE_MS); the blackhole lasts many of them. */
const LEASE_MS = 1000;
/**
 * Long enough to tell a bounded queue from one that grows with the
 * partition: with GATEWAY_PRESENCE_TTL_MS of 3 s every process of host A
 * has a heartbeat due every second, 60 between MID_MS and the heal if each
 * were queued.
 */
const BLACKHOLE_MS = 30_000;
/** When the first sample of what host A holds is taken: every connection with a command in flight is stalled by then (STALL_MS 3 s). */
const MID_MS = 10_000;
const PRESENCE_TTL_MS = 3000;
/**
 * /readyz of the cut-off host answers 503 within this bound: its health ping
 * times out after 1 s (HEALTH_PING_TIMEOUT_MS), plus one poll interval and
 * scheduling slack on a shared 2-core machine.
 */
const READYZ_503_BOUND_MS = 3000;
/**
 * Commands host A (primary + 2 workers) may hold unanswered after the
 * blackhole: at most one run of each periodic task (heartbeats, lease
 * renewals until the step-down, the probes of /readyz and /api/v1/cluster),
 * not events (which Redis holds for its subscribers). Measured 10-16.
 */
const UNANSWERED_BOUND = 40;
/** What host A may add between MID_MS and the heal: nothing periodic is sent on a stalled connection. */
const UNANSWERED_GROWTH_BOUND = 2;
/** /api/v1/cluster of the cut-off host answers 503 within GATEWAY_OPS_TIMEOUT_MS (2 s) plus slack on a shared machine. */
const CLUSTER_503_BOUND_MS = 2000 + 2000;
/** A publish on a stalled connection is refused at once, not after GATEWAY_PUBLISH_TIMEOUT_MS (2 s). */
const PUBLISH_503_BOUND_MS = 1500;

/** Open by every client before the cut; some of host A's clients close it (and try to open it again) during the cut. */
const DOC_CUT = 'PARTITION-1';
/** Only ever opened during the cut: nobody may be its viewer afterwards. */
const DOC_NEW = 'PARTITION-2';
/** Subscribed to during the cut by a client of the cut-off host. */
const DOC_HELD = 'PARTITION-3';
/** The opening counter's field in a presence hash (src/presence/redis-presence.ts). */
const SEQ_FIELD = '__seq';
/**
 * A client event on the cut-off host is answered at once (refused or
 * recorded), not after the partition: an acknowledgement round trip plus
 * scheduling slack on a shared 2-core machine.
 */
const ACK_BOUND_MS = 1500;
/** How often each looping client of host A sends doc_open, doc_close, doc_open during the cut. */
const LOOP_MS = 250;

function presenceKey(keyPrefix: string, docname: string): string {
  return `${keyPrefix}:presence:${SITE}:${DOCTYPE}/${docname}`;
}

/** Socket ids with a presence entry for the document (every field but the opening counter). */
async function viewers(redis: { client(): { hkeys(key: string): Promise<string[]> } }, keyPrefix: string, docname: string) {
  return (await redis.client().hkeys(presenceKey(keyPrefix, docname))).filter((f) => f !== SEQ_FIELD).sort();
}

/** What one acknowledged client event got: its answer (or 'timeout') and how long it took. */
interface Ack {
  event: string;
  answer: boolean | 'timeout';
  ms: number;
}

/** Sends an event with an acknowledgement and records the answer without waiting for it. */
function sendTimed(c: TrackedClient, acks: Promise<Ack>[], event: string, docname: string): void {
  const t0 = Date.now();
  acks.push(
    c.socket
      .timeout(5000)
      .emitWithAck(event, DOCTYPE, docname)
      .then(
        (answer: boolean) => ({ event, answer, ms: Date.now() - t0 }),
        () => ({ event, answer: 'timeout' as const, ms: Date.now() - t0 }),
      ),
  );
}

/** An ops request, timed; bounded so that a hang fails the test instead of stalling it. */
async function timedRequest(host: GatewayHandle, path: string): Promise<{ ms: number; status: number; body: string }> {
  const t0 = Date.now();
  const res = await withTimeout(host.opsRequest(path), 15_000, `${path} of the cut-off host to answer`);
  return { ms: Date.now() - t0, status: res.status, body: res.body };
}

test('host cut off from Redis (blackhole longer than the lease): the other host takes over without split brain, loses and duplicates nothing; the cut-off host is 503 meanwhile, its ops endpoints answer in time, what it queues for Redis stays bounded, and its clients get every event exactly once after heal', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = {
    GATEWAY_LEADER_LEASE_MS: String(LEASE_MS),
    GATEWAY_LEADER_RENEW_MS: '200',
    GATEWAY_PRESENCE_TTL_MS: String(PRESENCE_TTL_MS),
    // No socket-secret reads and no per-user counter refreshes from the workers'
    // fail-fast connections: connections that had nothing in flight when the
    // partition began are not known to be stalled, and these periodic reads
    // would each add one (bounded, but not by MID_MS).
    GATEWAY_SOCKET_SECRET: 'partition-secret',
    GATEWAY_MAX_CONNECTIONS_PER_USER: '0',
  };
  // A first, so it takes the lease; then B.
  const hostA = await startHost({ scope, backend, keyPrefix, redisUrl: proxy.url, env });
  assert.equal((await findLeader([hostA])).host, hostA);
  const hostB = await startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env });
  const clients: TrackedClient[] = [];
  for (const host of [hostA, hostB]) clients.push(...(await connectTracked(scope, host, defaultSpecs())));
  for (const host of [hostA, hostB]) await waitSpread(host, clients, 2);
  const onA = clients.filter((c) => c.host === hostA);
  const onB = clients.filter((c) => c.host === hostB);
  // Viewers of DOC_CUT: everyone, plus one more client of A that leaves during the cut.
  const [leaver] = await connectTracked(scope, hostA, [{ user: USERS[0], transports: ['websocket'], docRoom: false }]);
  assert.ok(leaver);
  for (const c of [...clients, leaver]) assert.equal(await c.socket.timeout(5000).emitWithAck('doc_open', DOCTYPE, DOC_CUT), true);
  assert.equal((await viewers(redis, keyPrefix, DOC_CUT)).length, clients.length + 1);
  // Half of A's clients keep closing and re-opening documents during the cut; the others keep DOC_CUT open.
  const loopers = onA.filter((_c, i) => i % 2 === 0);
  const keepers = onA.filter((_c, i) => i % 2 === 1);
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
  // Both workers of A know their command connection is stalled (a bounded
  // poll of the log: the stall is announced nowhere else per worker).
  const workerPidsA = infoA.workers.map((w) => w.pid);
  await pollUntil(
    () => {
      const stalled = new Set(
        hostA
          .jsonLogs()
          .filter((l) => l['connection'] === 'pub' && String(l['msg']).startsWith('redis connection stalled'))
          .map((l) => Number(l['pid'])),
      );
      return workerPidsA.every((p) => stalled.has(p)) ? true : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: "both workers of host A to log their command connection's stall" },
  );
  // Clients of A keep sending presence events through the rest of the cut.
  const acks: Promise<Ack>[] = [];
  const loop = setInterval(() => {
    for (const c of loopers) {
      sendTimed(c, acks, 'doc_open', DOC_CUT);
      sendTimed(c, acks, 'doc_close', DOC_CUT);
      sendTimed(c, acks, 'doc_open', DOC_NEW);
    }
  }, LOOP_MS);
  scope.add(() => clearInterval(loop));
  // A subscription sent during the cut is held, not refused: Frappe's page
  // sends no acknowledgement and would stay deaf to the document. This client
  // asks for one, answered once Redis answers again.
  const [holder] = keepers;
  assert.ok(holder);
  const heldSub = holder.socket
    .timeout(BLACKHOLE_MS + 30_000)
    .emitWithAck('doc_subscribe', DOCTYPE, DOC_HELD)
    .then(
      (ok: unknown) => ok,
      (err: unknown) => err,
    );
  leaver.socket.disconnect();
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
  // The cluster API of the cut-off host: 503 with what timed out and its own part, instead of hanging.
  const clusterCut = await timedRequest(hostA, '/api/v1/cluster');
  // The rooms API is this host's own (workers over IPC): it answers.
  const roomsCut = await timedRequest(hostA, `/api/v1/cluster/rooms?site=${encodeURIComponent(SITE)}&room=website`);
  const toMid = MID_MS - (Date.now() - cutAt);
  if (toMid > 0) await new Promise((r) => setTimeout(r, toMid)); // the fault's duration, not a wait for an event
  const unansweredMid = (await hostA.metricValue('gateway_redis_commands_unanswered')) ?? NaN;
  const skippedMid = (await hostA.metricValue('gateway_redis_periodic_skipped_total', { task: 'heartbeat' })) ?? 0;
  // Every connection of A is stalled by now: a publish is refused at once, and queues nothing.
  const p0 = Date.now();
  const publishCut = await hostA.publish({ event: 'partition_probe', message: {}, namespace: SITE, room: 'nobody-here' });
  const publishCutMs = Date.now() - p0;
  // Polled again: the probes share the command already in flight.
  const clusterCut2 = await timedRequest(hostA, '/api/v1/cluster');
  const readyzCut2 = await hostA.readyz();
  const remaining = BLACKHOLE_MS - (Date.now() - cutAt);
  if (remaining > 0) await new Promise((r) => setTimeout(r, remaining)); // the fault's duration, not a wait for an event
  // What A holds meanwhile: the commands it sent and got no reply for (a
  // few periodic ones per process), and its Redis connections count as down.
  const unansweredAtHeal = (await hostA.metricValue('gateway_redis_commands_unanswered')) ?? NaN;
  const skippedAtHeal = (await hostA.metricValue('gateway_redis_periodic_skipped_total', { task: 'heartbeat' })) ?? 0;
  const redisUpAtHeal = await hostA.metricValue('gateway_redis_up');
  const connectedAtHeal = onA.filter((c) => c.socket.connected).length;
  const seqAtHeal = publisher.published;
  clearInterval(loop);
  const answered = await Promise.all(acks);
  const viewersBeforeHeal = await viewers(redis, keyPrefix, DOC_CUT);
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
  assert.equal(await heldSub, true, 'the doc_subscribe sent during the cut took effect once Redis answered');
  const heldEvent = holder.recorder.waitFor('held_doc_update', undefined, 10_000);
  const heldPublish = { event: 'held_doc_update', message: { n: 1 }, namespace: SITE, room: `doc:${DOCTYPE}/${DOC_HELD}` };
  assert.equal((await hostB.publish(heldPublish)).status, 202);
  assert.deepEqual(await heldEvent, { n: 1 }, 'the held subscription receives the document room');
  // A keeps publishing traffic flowing after heal, then everything settles.
  await waitDelivered(clients, seqAtHeal + 200, 20_000);
  const last = await publisher.stop();
  await waitDelivered(clients, last, 20_000);
  await websiteBarrier(pub, clients, 20_000);

  // Presence once the recorded closes were applied: exactly the viewers that never closed DOC_CUT, nobody on DOC_NEW.
  const expectedViewers = [...onB, ...keepers].map((c) => c.socket.id ?? '').sort();
  let viewersAfter: string[] = [];
  await pollUntil(
    async () => {
      viewersAfter = await viewers(redis, keyPrefix, DOC_CUT);
      return JSON.stringify(viewersAfter) === JSON.stringify(expectedViewers) ? true : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 100, description: () => `viewers of ${DOC_CUT} = ${expectedViewers.join(',')}` },
  ).catch(() => undefined);
  const newDocKey = await redis.client().exists(presenceKey(keyPrefix, DOC_NEW));
  const refusedOpens =
    (await hostA.metricValue('gateway_client_events_refused_total', { event: 'doc_open', reason: 'redis_unavailable' })) ?? 0;
  const deferredCloses = (await hostA.metricValue('gateway_redis_deferred_total', { what: 'presence_close' })) ?? 0;
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
    unansweredMid,
    unansweredAtHeal,
    skippedHeartbeats: { mid: skippedMid, heal: skippedAtHeal },
    clusterCut: { ms: clusterCut.ms, status: clusterCut.status, body: clusterCut.body.slice(0, 400) },
    clusterCut2: { ms: clusterCut2.ms, status: clusterCut2.status },
    roomsCut: { ms: roomsCut.ms, status: roomsCut.status },
    publishCut: { ms: publishCutMs, status: publishCut.status, body: publishCut.body },
    readyzCut2: readyzCut2.status,
    redisUpAtHeal,
    epochBefore,
    epochAfter: takeover.info.node.epoch,
    leaderAfter: leaderAfter.info.leader,
    fencedBatches: fencedAfter - fencedBefore,
    disconnectsA: onA.map((c) => c.disconnects),
    deliveriesA: summarise(onA, 1, last),
    deliveriesB: summarise(onB, 1, last),
    proxy: { connections: proxy.connections, forwarded: proxy.forwarded },
    presenceEvents: {
      sent: answered.length,
      timeouts: answered.filter((a) => a.answer === 'timeout').length,
      slowestMs: Math.max(0, ...answered.map((a) => a.ms)),
      refusedOpens,
      deferredCloses,
      viewersBeforeHeal: viewersBeforeHeal.length,
      viewersAfter,
      expectedViewers,
      newDocKey,
    },
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
  // Bounded, not growing with the partition: nothing periodic was queued after MID_MS, it was skipped and counted.
  assert.ok(
    unansweredAtHeal - unansweredMid <= UNANSWERED_GROWTH_BOUND,
    `host A's unanswered commands grew from ${unansweredMid} at ${MID_MS} ms to ${unansweredAtHeal} at ${BLACKHOLE_MS} ms`,
  );
  assert.ok(skippedAtHeal - skippedMid >= (BLACKHOLE_MS - MID_MS) / 1000, 'the heartbeats not sent meanwhile are counted');
  // Ops endpoints of the cut-off host answer within their deadlines.
  for (const c of [clusterCut, clusterCut2]) {
    assert.equal(c.status, 503, c.body);
    assert.ok(c.ms <= CLUSTER_503_BOUND_MS, `/api/v1/cluster answered after ${c.ms} ms (bound ${CLUSTER_503_BOUND_MS})`);
    const body = JSON.parse(c.body) as { error: string; message: string; partial: boolean; workers: unknown[]; node: { pid: number } };
    assert.equal(body.error, 'GW_ERR_REDIS_UNAVAILABLE');
    assert.match(body.message, /^redis unavailable: .*within 2000 ms \(GATEWAY_OPS_TIMEOUT_MS\)/);
    assert.equal(body.partial, true);
    assert.equal(body.node.pid, infoA.node.pid, "this host's own part is in the answer");
    assert.equal(body.workers.length, 2);
  }
  assert.equal(roomsCut.status, 200, roomsCut.body);
  assert.ok(roomsCut.ms <= CLUSTER_503_BOUND_MS, `/api/v1/cluster/rooms answered after ${roomsCut.ms} ms`);
  assert.equal(publishCut.status, 503, JSON.stringify(publishCut.body));
  assert.match(JSON.stringify(publishCut.body), /redis connection is down or stalled/);
  assert.ok(publishCutMs <= PUBLISH_503_BOUND_MS, `a publish on the stalled host answered after ${publishCutMs} ms`);
  assert.equal(readyzCut2.status, 503);
  // Client events during the cut: answered at once (doc_open refused, doc_close recorded), none queued for Redis
  // (the bound on unanswered commands above held while they were sent); presence exact after heal.
  const opens = answered.filter((a) => a.event === 'doc_open');
  const closes = answered.filter((a) => a.event === 'doc_close');
  assert.ok(opens.length >= 2 * loopers.length * ((BLACKHOLE_MS - MID_MS) / LOOP_MS / 2), `${opens.length} doc_open sent during the cut`);
  for (const a of answered) {
    assert.notEqual(a.answer, 'timeout', `${a.event} during the cut was answered`);
    assert.ok(a.ms <= ACK_BOUND_MS, `${a.event} during the cut was answered after ${a.ms} ms (bound ${ACK_BOUND_MS})`);
  }
  assert.ok(
    opens.every((a) => a.answer === false),
    'doc_open is refused (acknowledged with false) while the worker cannot reach Redis',
  );
  assert.ok(
    closes.every((a) => a.answer === true),
    'doc_close is accepted (recorded) while the worker cannot reach Redis',
  );
  assert.equal(
    refusedOpens,
    opens.length,
    'gateway_client_events_refused_total{event="doc_open",reason="redis_unavailable"} counts every refusal',
  );
  assert.ok(
    deferredCloses >= loopers.length + 1,
    'gateway_redis_deferred_total{what="presence_close"} counts the recorded closes (loopers and the leaver)',
  );
  // Meanwhile host B's primary took A's workers for dead (no liveness for GATEWAY_PRESENCE_TTL_MS) and swept their entries.
  assert.deepEqual(viewersBeforeHeal, onB.map((c) => c.socket.id ?? '').sort(), "only host B's viewers are left in Redis during the cut");
  assert.deepEqual(viewersAfter, expectedViewers, `presence of ${DOC_CUT} after heal: no ghost viewer, none missing`);
  assert.equal(newDocKey, 0, `nobody views ${DOC_NEW}, and no key was left for it`);
  // Every client got every event of its rooms exactly once: B's through the
  // partition, A's after heal (what Redis held for their subscriptions).
  assertExactlyOnce(onB, 1, last, 'client of the host that kept Redis');
  for (const c of onB) assert.deepEqual(c.disconnects, [], `${c.spec.user} on host B was not disconnected`);
  assertExactlyOnce(onA, 1, last, 'client of the cut-off host, after heal');
  for (const c of onA) assert.deepEqual(c.disconnects, [], `${c.spec.user} on host A stayed connected through the partition`);
});
