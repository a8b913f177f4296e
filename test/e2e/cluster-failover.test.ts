/**
 * Leader failover under a steady publish rate: graceful hand-over (SIGTERM),
 * crash (SIGKILL of the leader's primary) and a paused leader (SIGSTOP past
 * its lease, then SIGCONT) must neither lose nor duplicate a delivery.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pollUntil, startRedis, withScope, type GatewayHandle } from '../harness';
import {
  assertExactlyOnce,
  clusterInfo,
  connectTracked,
  defaultSpecs,
  deliveryOf,
  findLeader,
  largestDelay,
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
  warmUp,
  websiteBarrier,
  type ClientSpec,
  type TrackedClient,
} from './cluster-support';

const RATE = 600;

/** Fewer clients per host than the delivery suite: three hosts and a steady rate must fit two cores. */
function failoverSpecs(): ClientSpec[] {
  return defaultSpecs().slice(0, 4);
}

/** Resolves once every client of `clients` that should get seq `seq` has it: the stream is flowing past that point. */
async function deliveredUpTo(clients: readonly TrackedClient[], seq: number, timeoutMs = 15_000): Promise<void> {
  await Promise.all(
    clients.map((c) => {
      const wanted = deliveryOf(c, 1, seq).expected;
      return c.recorder.waitForCount(SEQ_EVENT, wanted, (p) => (p as { seq: number }).seq <= seq, timeoutMs);
    }),
  );
}

test('leader hand-over (SIGTERM) and leader crash (SIGKILL of its primary) mid-stream: zero lost, zero duplicated; the hand-over gap is shorter than the crash gap', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_DRAIN_MS: '300', GATEWAY_SHUTDOWN_GRACE_MS: '5000' };
  const hosts = await Promise.all([0, 1, 2].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env })));
  const clients: TrackedClient[] = [];
  for (const host of hosts) clients.push(...(await connectTracked(scope, host, failoverSpecs())));
  for (const host of hosts) await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);
  const clientsOf = (hs: readonly GatewayHandle[]): TrackedClient[] => clients.filter((c) => hs.includes(c.host));

  const publisher = scope.add(new SeqPublisher(pub, RATE));
  publisher.start();
  await deliveredUpTo(clients, Math.floor(RATE / 2));

  // 1. Graceful hand-over.
  const first = await findLeader(hosts);
  const afterTerm = hosts.filter((h) => h !== first.host);
  const termAt = Date.now();
  const seqAtTerm = publisher.published;
  first.host.signal('SIGTERM');
  const second = await findLeader(afterTerm);
  const exit = await first.host.exited;
  assert.equal(exit.code, 0, 'the old leader exits cleanly');
  const beforeKill = publisher.published + RATE / 2;
  await deliveredUpTo(clientsOf(afterTerm), beforeKill);
  const handover = largestGap(clientsOf(afterTerm), termAt - 500, Date.now());
  const handoverDelay = largestDelay(clientsOf(afterTerm), termAt - 500, Date.now());

  // 2. Crash of the new leader's primary (its workers exit when their primary disappears).
  const survivor = afterTerm.find((h) => h !== second.host);
  assert.ok(survivor);
  const killAt = Date.now();
  const seqAtKill = publisher.published;
  process.kill(second.host.pid, 'SIGKILL');
  const third = await findLeader([survivor]);
  await second.host.exited;
  await deliveredUpTo(clientsOf([survivor]), publisher.published + RATE / 2);
  const crash = largestGap(clientsOf([survivor]), killAt - 500, Date.now());
  const crashDelay = largestDelay(clientsOf([survivor]), killAt - 500, Date.now());

  const last = await publisher.stop();
  await waitDelivered(clientsOf([survivor]), last);
  await websiteBarrier(pub, clientsOf([survivor]));

  logDiagnostic(t, 'leaders', {
    first: first.info.leader,
    second: second.info.leader,
    third: third.info.leader,
    published: last,
    seqAtTerm,
    seqAtKill,
  });
  logDiagnostic(t, 'hand-over (SIGTERM) gap', { largestInterArrivalMs: handover.gapMs, largestPublishToDeliveryMs: handoverDelay });
  logDiagnostic(t, 'crash (SIGKILL) gap', { largestInterArrivalMs: crash.gapMs, largestPublishToDeliveryMs: crashDelay });
  const survivorTotals = summarise(clientsOf([survivor]), 1, last);
  logDiagnostic(t, 'surviving host deliveries', survivorTotals);

  // The surviving host saw both failovers: everything, exactly once.
  assertExactlyOnce(clientsOf([survivor]), 1, last, 'surviving host');
  // The host that led second saw the hand-over: exactly once for what reached it before its own crash.
  assertExactlyOnce(clientsOf([second.host]), 1, beforeKill, 'host of the second leader');
  // No client anywhere received anything twice or out of its rooms.
  for (const c of clients) {
    const d = deliveryOf(c, 1, last);
    assert.deepEqual(d.duplicates, [], `${c.spec.user} on ${c.host.url}: duplicates`);
    assert.deepEqual(d.unexpected, [], `${c.spec.user} on ${c.host.url}: strays`);
  }
  assert.ok(third.info.leader && second.info.leader && first.info.leader);
  assert.ok(
    third.info.leader.epoch > second.info.leader.epoch && second.info.leader.epoch > first.info.leader.epoch,
    'every takeover increments the fencing epoch',
  );
  assert.ok(crash.gapMs < 5000, `crash gap ${crash.gapMs} ms within the sanity bound`);
  assert.ok(handover.gapMs < crash.gapMs, `hand-over gap (${handover.gapMs} ms) is shorter than the crash gap (${crash.gapMs} ms)`);
});

test('split-brain guard: a leader paused past its lease (SIGSTOP) is replaced, and after SIGCONT it steps down without a stale or duplicate delivery', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const keyPrefix = newKeyPrefix();
  const env = { GATEWAY_LEADER_LEASE_MS: '600', GATEWAY_LEADER_RENEW_MS: '200' };
  const hosts = await Promise.all([0, 1].map(() => startHost({ scope, backend, keyPrefix, redisUrl: redis.url, env })));
  const clients: TrackedClient[] = [];
  for (const host of hosts) clients.push(...(await connectTracked(scope, host, failoverSpecs())));
  for (const host of hosts) await waitSpread(host, clients, 2);
  const pub = redis.client();
  await warmUp(pub, clients);

  const publisher = scope.add(new SeqPublisher(pub, RATE));
  publisher.start();
  await deliveredUpTo(clients, Math.floor(RATE / 3));

  const paused = await findLeader(hosts);
  const other = hosts.find((h) => h !== paused.host);
  assert.ok(other);
  // Only the primary stops: its workers keep serving their clients through the adapter.
  process.kill(paused.host.pid, 'SIGSTOP');
  let resumed = false;
  scope.add(() => {
    if (!resumed) process.kill(paused.host.pid, 'SIGCONT');
  });
  const stoppedAt = Date.now();
  const successor = await findLeader([other]);
  const takeoverMs = Date.now() - stoppedAt;
  // Let the successor broadcast a while (events the paused one also buffered)
  // before it wakes up. Only the other host's clients can be awaited: every
  // polling request of the paused host passes through its stopped primary.
  await deliveredUpTo(
    clients.filter((c) => c.host === other),
    publisher.published + RATE / 4,
  );
  process.kill(paused.host.pid, 'SIGCONT');
  resumed = true;

  const standby = await pollUntil(
    async () => {
      const info = await clusterInfo(paused.host);
      return info.node.leader ? undefined : info;
    },
    { timeoutMs: 10_000, intervalMs: 50, description: 'the resumed primary to report itself as standby' },
  );
  await deliveredUpTo(clients, publisher.published + RATE / 4);
  const last = await publisher.stop();
  await waitDelivered(clients, last);
  await websiteBarrier(pub, clients);

  const fenced = (await paused.host.metricValue('gateway_fenced_batches_total')) ?? 0;
  const steppedDown = (await paused.host.metricValue('gateway_leader_transitions_total', { to: 'standby' })) ?? 0;
  const stepLog = paused.host.jsonLogs().find((l) => l['msg'] === 'stepped down as events leader');
  logDiagnostic(t, 'paused leader', {
    takeoverMs,
    fencedBatches: fenced,
    stepDownReason: stepLog?.['reason'],
    epochs: { paused: paused.info.leader?.epoch, successor: successor.info.leader?.epoch },
  });
  logDiagnostic(t, 'deliveries', summarise(clients, 1, last));

  assertExactlyOnce(clients, 1, last, 'split brain');
  assert.equal(standby.node.leader, false);
  assert.equal(standby.leader?.nodeId, successor.info.node.id, 'the successor still holds the lease');
  assert.ok(steppedDown >= 1, 'the resumed primary counted its step-down');
  assert.ok(stepLog, 'the resumed primary logged its step-down');
  assert.ok((successor.info.leader?.epoch ?? 0) > (paused.info.leader?.epoch ?? 0));
  assert.ok(processAlive(paused.host.pid), 'the resumed primary keeps running as a standby');
});
