/**
 * A worker that hangs before its first message to the primary (its event
 * loop stuck while booting, or stopped right after the fork): the silence
 * watchdog (GATEWAY_WORKER_KILL_MS) only starts at its hello, so
 * GATEWAY_WORKER_BOOT_MS bounds the boot. The hang comes from a preloaded
 * test hook (test/e2e/fixtures/hang-before-hello.cjs), inert unless its
 * variable is set.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { pollUntil, startGateway, startRedis, withScope, type GatewayHandle } from '../harness';
import { clusterInfo, connectTracked, newKeyPrefix, processAlive, SITE, startBackend, type ClusterInfo, USERS } from './cluster-support';

const HOOK = path.join(__dirname, 'fixtures', 'hang-before-hello.cjs');
/** How long a worker may boot in these tests: a real boot took 0.5-3.1 s on this shared 2-core machine under test load (load average up to 30). */
const BOOT_MS = 4000;
/** The first test connects clients while the worker hangs: more time for that on a loaded machine. */
const CONNECT_WHILE_HUNG_BOOT_MS = 8000;

type Worker = ClusterInfo['workers'][number] & { id: number; slot: number; startedAt: number };

async function workers(host: GatewayHandle): Promise<Worker[]> {
  return (await clusterInfo(host)).workers as Worker[];
}

async function startHanging(t: Parameters<typeof withScope>[0], hang: string, mode: 'stop' | 'spin', bootMs: number) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const backend = await startBackend(scope);
  const host = await startGateway({
    scope,
    redisUrl: redis.url,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 2,
    keyPrefix: newKeyPrefix(),
    nodeArgs: ['--require', HOOK],
    env: { GATEWAY_WORKER_BOOT_MS: String(bootMs) },
    extraEnv: { RTGW_TEST_HANG_BOOT: hang, RTGW_TEST_HANG_MODE: mode },
  });
  return { scope, host };
}

/** Boot-timeout kills of a slot the host logged, in order (on a loaded machine the other slot's first boot may be one too). */
function bootKills(host: GatewayHandle, slot: number): Record<string, unknown>[] {
  return host.jsonLogs().filter((l) => l['msg'] === 'worker killed for not booting in time, respawning' && l['slot'] === slot);
}

test('a worker whose event loop is stuck before its hello is killed after GATEWAY_WORKER_BOOT_MS, counted and logged, and replaced; new sessions go to the other worker meanwhile', async (t) => {
  // Worker 1 (slot 0's first fork) spins forever at boot; its replacement boots normally.
  const { scope, host } = await startHanging(t, 'ids:1', 'spin', CONNECT_WHILE_HUNG_BOOT_MS);
  const before = await workers(host);
  const victim = before.find((w) => w.id === 1);
  assert.ok(victim && victim.nodeId === null, 'worker 1 hangs before its hello');
  const clients = await connectTracked(
    scope,
    host,
    USERS.slice(0, 2).map((user) => ({ user, transports: ['websocket'], docRoom: false })),
  );
  const stillBooting = (await workers(host)).find((w) => w.id === 1);

  const replaced = await pollUntil(
    async () => {
      const now = await workers(host);
      return now.length === 2 && now.every((w) => w.nodeId !== null && w.pid !== victim.pid) ? now : undefined;
    },
    {
      timeoutMs: CONNECT_WHILE_HUNG_BOOT_MS + 15_000,
      intervalMs: 100,
      description: `the hanging worker ${victim.pid} to be killed and replaced`,
    },
  );
  const replacedMs = Date.now() - victim.startedAt;
  const bootTimeouts = await host.metricValue('gateway_worker_restarts_total', { reason: 'boot_timeout' });
  const exits = await host.metricValue('gateway_worker_restarts_total', { reason: 'exit' });
  const killLog = host.jsonLogs().find((l) => String(l['msg']).startsWith('worker did not finish booting within GATEWAY_WORKER_BOOT_MS'));
  t.diagnostic(JSON.stringify({ victim, stillBooting, replacedMs, replaced, bootTimeouts, exits, killLog }));

  assert.equal(stillBooting?.nodeId, null, 'the clients connected while the worker still hung');
  for (const c of clients) {
    assert.equal(c.socket.connected, true, `${c.spec.user} connected while a worker hung at boot`);
    assert.deepEqual(c.disconnects, [], `${c.spec.user} was served by the other worker all along`);
  }
  assert.ok(!processAlive(victim.pid), 'the hanging worker was killed');
  assert.ok(
    replacedMs >= CONNECT_WHILE_HUNG_BOOT_MS,
    `killed ${replacedMs} ms after its fork, not before GATEWAY_WORKER_BOOT_MS (${CONNECT_WHILE_HUNG_BOOT_MS} ms)`,
  );
  assert.ok(
    replaced.some((w) => w.slot === 0 && w.id !== 1),
    'slot 0 has a new worker',
  );
  assert.ok(
    replaced.some((w) => w.id === 2),
    'the other worker was left alone',
  );
  assert.equal(bootTimeouts, 1, 'gateway_worker_restarts_total{reason="boot_timeout"} counts the kill');
  assert.equal(exits, 0, 'and not as a crash');
  assert.ok(killLog !== undefined, 'the kill is logged');
  assert.equal(killLog['level'], 50, 'at error level');
  assert.equal(killLog['pid'], victim.pid);
});

test('a worker that hangs at every boot (stopped right after the fork) is killed each time and respawned with the crash backoff, not in a loop; the other worker serves', async (t) => {
  const bootMs = BOOT_MS;
  const { scope, host } = await startHanging(t, 'slot:0', 'stop', bootMs);
  const [client] = await connectTracked(scope, host, [{ user: USERS[0], transports: ['websocket'], docRoom: false }]);
  assert.ok(client);
  const ROUNDS = 3;
  const kills = await pollUntil(async () => (bootKills(host, 0).length >= ROUNDS ? bootKills(host, 0) : undefined), {
    timeoutMs: 30_000,
    intervalMs: 200,
    description: () => `${ROUNDS} boot-timeout kills of slot 0; logged so far: ${JSON.stringify(bootKills(host, 0))}`,
  });
  const delays = kills.map((l) => l['respawnInMs']);
  const times = kills.map((l) => Date.parse(String(l['time'])));
  const gaps = times.slice(1).map((t1, i) => t1 - (times[i] ?? 0));
  const counted = await host.metricValue('gateway_worker_restarts_total', { reason: 'boot_timeout' });
  const now = await workers(host);
  t.diagnostic(JSON.stringify({ delays, gaps, counted, workers: now }));

  assert.deepEqual(delays.slice(0, ROUNDS), [100, 200, 400], 'the respawn delay doubles from kill to kill');
  for (const g of gaps) assert.ok(g >= bootMs, `${g} ms between two kills: each worker had its GATEWAY_WORKER_BOOT_MS`);
  assert.ok((counted ?? 0) >= ROUNDS, 'every kill is counted');
  assert.ok((counted ?? 0) < 2 * ROUNDS, `${String(counted)} boot-timeout kills: slot 1 booted`);
  assert.ok(
    now.some((w) => w.slot === 1 && w.nodeId !== null),
    'slot 1 serves',
  );
  assert.equal(client.socket.connected, true);
  assert.deepEqual(client.disconnects, [], 'its client was never disconnected');
});
