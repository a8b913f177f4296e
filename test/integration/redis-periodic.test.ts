/**
 * What a connection cut off from Redis holds (src/redis/connect.ts): a
 * periodic task keeps at most one run in flight and skips (counted) while
 * its connection is stalled; a probe polled meanwhile shares one command;
 * once the link heals the connection flows again and the task resumes. A
 * fail-fast connection refuses new commands while stalled. TickPipeline: the
 * commands of one event-loop turn go out as one write, each answered as its
 * own, and a stalled fail-fast connection still refuses them at once
 * (ioredis' auto-pipelining would hold them behind the unanswered batch).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import {
  commandsFlowing,
  connectInBackground,
  createRedisClient,
  periodic,
  singleFlight,
  STALLED_REFUSAL,
  TickPipeline,
  withDeadline,
  type ClientOptions,
} from '../../src/redis/connect';
import { pollUntil, startRedis, withScope } from '../harness';
import { startTcpProxy } from '../harness/tcp-proxy';

const log = pino({ level: 'silent' });

/** A Redis, a TCP proxy in front of it, and a gateway client (createRedisClient) connected through the proxy. */
async function throughProxy(t: Parameters<typeof withScope>[0], opts: Omit<ClientOptions, 'onUnanswered'>) {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  const proxy = await startTcpProxy({ scope, targetPort: redis.port });
  let unanswered = 0;
  const client = createRedisClient(
    {
      mode: 'standalone',
      url: proxy.url,
      sentinels: [],
      sentinelName: '',
      sentinelUsername: null,
      sentinelPassword: null,
      clusterNodes: [],
    },
    { ...opts, onUnanswered: (_role, n) => (unanswered = n) },
    log,
  );
  scope.add(() => client.disconnect());
  connectInBackground(client, log, opts.name);
  await pollUntil(() => (commandsFlowing(client) ? true : undefined), { timeoutMs: 5000, intervalMs: 20, description: 'client ready' });
  return { redis, proxy, client, unanswered: () => unanswered };
}

test('periodic task on a blackholed connection: one run in flight, the rest skipped and counted; a shared probe sends one command; all flows again after heal', async (t) => {
  const { redis, proxy, client, unanswered } = await throughProxy(t, { name: 'periodic-test:cmd' });

  let runs = 0;
  let skips = 0;
  const tick = periodic(
    client,
    async () => {
      runs++;
      await client.incr('beats');
    },
    () => skips++,
  );
  tick();
  await pollUntil(async () => ((await redis.client().get('beats')) === '1' ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 20,
    description: 'the first run answered',
  });

  proxy.blackhole();
  // Nothing in flight yet: the connection is not known to be stalled, so the next run is sent, and held.
  tick();
  assert.equal(runs, 2);
  // Every later tick while that run has no reply is skipped: nothing more is queued.
  for (let i = 0; i < 20; i++) tick();
  assert.equal(runs, 2);
  assert.equal(skips, 20);
  // A probe polled meanwhile shares its command.
  const ping = singleFlight(() => client.ping());
  const probes = await Promise.allSettled(Array.from({ length: 5 }, () => withDeadline(ping(), 200, 'ping timed out')));
  assert.deepEqual(
    probes.map((p) => (p.status === 'rejected' ? (p.reason as Error).message : 'answered')),
    Array(5).fill('ping timed out'),
  );
  // STALL_MS (3 s) without a reply: the connection counts as stalled.
  await pollUntil(() => (commandsFlowing(client) ? undefined : true), { timeoutMs: 10_000, intervalMs: 100, description: 'stalled' });
  assert.equal(client.status, 'ready', 'it still looks open');
  await pollUntil(() => (unanswered() === 2 ? true : undefined), {
    timeoutMs: 3000,
    intervalMs: 50,
    description: () => `2 commands unanswered (one run, one shared ping); now ${unanswered()}`,
  });

  proxy.heal();
  await pollUntil(() => (commandsFlowing(client) ? true : undefined), { timeoutMs: 5000, intervalMs: 20, description: 'flowing again' });
  assert.equal(await redis.client().get('beats'), '2', 'the held run reached Redis once; the skipped ones never did');
  assert.equal(await ping(), 'PONG', 'the probe works again');
  tick();
  await pollUntil(async () => ((await redis.client().get('beats')) === '3' ? true : undefined), {
    timeoutMs: 5000,
    intervalMs: 20,
    description: 'the task runs again after heal',
  });
  assert.equal(skips, 20);
});

test('fail-fast connection stalled by a blackhole: new commands are refused at once (not queued) until the held one is answered', async (t) => {
  let errors = 0;
  const { proxy, client, unanswered } = await throughProxy(t, {
    name: 'failfast-test:fast',
    failFast: true,
    onCommandError: () => errors++,
  });

  proxy.blackhole();
  const held = client.incr('n');
  await pollUntil(() => (commandsFlowing(client) ? undefined : true), { timeoutMs: 10_000, intervalMs: 100, description: 'stalled' });
  const refused = await Promise.allSettled(Array.from({ length: 50 }, () => client.incr('n')));
  assert.deepEqual(
    new Set(refused.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'sent'))),
    new Set([STALLED_REFUSAL]),
  );
  assert.equal(errors, 50, 'each refusal counts as a command error');
  await pollUntil(() => (unanswered() === 1 ? true : undefined), {
    timeoutMs: 3000,
    intervalMs: 50,
    description: () => `only the held command unanswered; now ${unanswered()}`,
  });

  proxy.heal();
  assert.equal(await held, 1, 'the held command was answered');
  assert.equal(commandsFlowing(client), true);
  assert.equal(await client.incr('n'), 2, 'the refused commands never reached Redis; new ones do');
});

test('the commands of one event-loop turn go out as one write, each with its own reply, in order', async (t) => {
  const { client: c } = await throughProxy(t, { name: 'tick-test:cmd' });
  const stream = (c as unknown as { stream: { write: (...a: unknown[]) => boolean } }).stream;
  const write = stream.write.bind(stream);
  let writes = 0;
  stream.write = (...a: unknown[]) => {
    writes++;
    return write(...a);
  };
  const batch = new TickPipeline(c);
  const answers = await Promise.all([
    ...Array.from({ length: 100 }, () => batch.run<number>((p) => p.incr('n'))),
    batch.run<unknown>((p) => p.lpush('n', 'x')).catch((err: unknown) => (err as Error).message),
  ]);
  assert.deepEqual(
    answers.slice(0, 100),
    Array.from({ length: 100 }, (_, i) => i + 1),
  );
  // A failing command fails alone.
  assert.match(String(answers[100]), /WRONGTYPE/);
  assert.equal(writes, 1);
});

test('on a stalled fail-fast connection, batched commands are refused at once, not held', async (t) => {
  const { client: c, proxy } = await throughProxy(t, { name: 'tick-test:fast', failFast: true });
  const batch = new TickPipeline(c);
  proxy.blackhole();
  const held = batch.run<number>((p) => p.incr('n'));
  await pollUntil(() => (commandsFlowing(c) ? undefined : true), { timeoutMs: 10_000, intervalMs: 100, description: 'stalled' });
  const refused = await Promise.allSettled(Array.from({ length: 20 }, () => batch.run<number>((p) => p.incr('n'))));
  assert.deepEqual(
    new Set(refused.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'sent'))),
    new Set([STALLED_REFUSAL]),
  );
  proxy.heal();
  assert.equal(await held, 1);
  assert.equal(await batch.run<number>((p) => p.incr('n')), 2);
});
