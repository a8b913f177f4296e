/**
 * failover: two hosts (1 worker each) sharing Redis; clients on the standby
 * host; events at 1,000/s; the leader host is SIGKILLed (crash) or SIGTERMed
 * (hand-over) mid-stream. Reports the delivery gap (longest silence between
 * consecutive first arrivals), the worst publish-to-client latency, lost and
 * duplicated events.
 *
 * GAP (not in the default modes): an unaligned take-over. The standby's
 * primary is stopped (SIGSTOP), its events subscription killed in Redis
 * (CLIENT KILL: what Redis buffered for it is gone), and the leader host
 * SIGKILLed 300 ms later; then the standby resumes and re-subscribes. Its
 * buffer misses the leader's last batches, so it cannot find their progress
 * and leads from its buffer: what it re-broadcast of the events before its
 * gap shows as duplicated, what was published between the leader's death and
 * the re-subscription as lost.
 */
import { flagList, flagNumber, fmtSpread, makeClients, printTable, startEnv, userRooms, warmUp, type Flags } from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import { longestGap, lossAndDuplicates, spread } from '../lib/stats';
import { CHANNEL, SITE, sleep, startGatewayTarget, type Target } from '../lib/topology';
import type { Redis } from 'ioredis';
import { uniqueKeyPrefix } from '../../test/harness';

interface FailoverRun {
  mode: string;
  sent: number;
  lost: number;
  duplicated: number;
  gapMs: number;
  maxLatencyMs: number;
  killAtMs: number;
  publisherBehind: boolean;
}

/** Kills, in Redis, the events subscription of the primary with this pid (its connection is named `<host>-<pid>-<rand>:events`). */
async function killEventsSubscription(redis: Redis, pid: number): Promise<void> {
  const list = String(await redis.client('LIST'));
  const line = list.split('\n').find((l) => new RegExp(`name=[^ ]*-${pid}-[0-9a-f]+:events `).test(l));
  const id = line?.match(/^id=(\d+) /)?.[1];
  if (id === undefined) throw new Error(`no events subscription of pid ${pid} in CLIENT LIST`);
  await redis.client('KILL', 'ID', id);
}

async function leaderOf(hosts: Target[]): Promise<Target> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    for (const h of hosts) {
      const c = (await h.gateway?.cluster()) as { node?: { leader?: boolean } } | undefined;
      if (c?.node?.leader) return h;
    }
    await sleep(100);
  }
  throw new Error('no leader elected');
}

export async function failover(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const rate = flagNumber(flags, 'rate', 1000);
  const durationMs = flags['duration'] === undefined ? 8000 : flags.durationMs;
  const killAfterMs = flagNumber(flags, 'killAfter', 3) * 1000;
  const modes = flagList(flags, 'modes', ['SIGKILL', 'SIGTERM']);
  const env = await startEnv();
  const publisher = await Publisher.start();
  const rooms = userRooms(n);
  const clients = makeClients(env, n);
  const admin = env.redis.client();
  const results: Record<string, FailoverRun[]> = {};
  try {
    for (const mode of modes) {
      results[mode] = [];
      for (let run = 0; run < flags.runs; run++) {
        const keyPrefix = uniqueKeyPrefix();
        const hosts = [
          await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: 1, keyPrefix, name: 'host-a' }),
          await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: 1, keyPrefix, name: 'host-b' }),
        ];
        const loadgen = await LoadGen.start(1);
        try {
          const leader = await leaderOf(hosts);
          const standby = hosts.find((h) => h !== leader) as Target;
          const c = await loadgen.connect({ url: standby.url, site: SITE, origin: standby.origin, clients, ratePerSec: 2000 });
          if (c.connected !== n) throw new Error(`only ${c.connected}/${n} connected`);
          await warmUp(standby, loadgen, rooms, n);
          const total = Math.round((rate * durationMs) / 1000);
          await loadgen.window(total);
          const pub = publisher.run({
            mode: 'redis',
            redisUrl: env.redis.url,
            channel: CHANNEL,
            rate,
            durationMs,
            targets: rooms,
            seqStart: 0,
            padBytes: 0,
          });
          await sleep(killAfterMs);
          const killAt = performance.timeOrigin + performance.now();
          if (mode === 'SIGKILL') await leader.gateway?.kill();
          else if (mode === 'GAP') {
            const primary = standby.gateway;
            if (!primary) throw new Error('GAP needs a gateway standby');
            process.kill(primary.pid, 'SIGSTOP');
            try {
              await killEventsSubscription(admin, primary.pid);
              await sleep(300);
              await leader.gateway?.kill();
            } finally {
              process.kill(primary.pid, 'SIGCONT');
            }
          } else void leader.gateway?.stop(15_000);
          const p = await pub;
          // Drain: every event delivered, or 3 s without progress.
          let last = -1;
          for (let i = 0; i < 100; i++) {
            const r = await loadgen.report();
            if (r.deliveries >= p.sent || r.deliveries === last) break;
            last = r.deliveries;
            await sleep(300);
          }
          const rep = await loadgen.report(true);
          const counts = (rep.seqCounts ?? []).slice(0, p.sent);
          const ld = lossAndDuplicates(counts);
          const firsts = (rep.seqFirst ?? []).slice(0, p.sent).filter((x) => x > 0);
          const lat = (rep.seqLatency ?? []).filter((x) => Number.isFinite(x));
          const r: FailoverRun = {
            mode,
            sent: p.sent,
            lost: ld.lost,
            duplicated: ld.duplicated,
            gapMs: longestGap(firsts).gap,
            maxLatencyMs: lat.length ? Math.max(...lat) : NaN,
            killAtMs: killAt,
            publisherBehind: p.behind,
          };
          console.error(
            `[failover] ${mode} run ${run + 1}: gap ${r.gapMs.toFixed(0)} ms, max latency ${r.maxLatencyMs.toFixed(0)} ms, lost ${r.lost}, duplicated ${r.duplicated} of ${r.sent}`,
          );
          results[mode]?.push(r);
        } finally {
          await loadgen.close();
          for (const h of hosts) await h.close();
        }
      }
    }
  } finally {
    publisher.close();
    admin.disconnect();
    await env.close();
  }
  const rows = Object.entries(results).map(([mode, runs]) => [
    mode === 'SIGKILL'
      ? 'SIGKILL leader host (crash)'
      : mode === 'GAP'
        ? 'standby subscription cut + leader SIGKILL (unaligned)'
        : 'SIGTERM leader host (hand-over)',
    fmtSpread(spread(runs.map((r) => r.gapMs))),
    fmtSpread(spread(runs.map((r) => r.maxLatencyMs))),
    fmtSpread(spread(runs.map((r) => r.lost))),
    fmtSpread(spread(runs.map((r) => r.duplicated))),
    String(runs.reduce((a, r) => a + r.sent, 0)),
  ]);
  printTable(
    `failover: two hosts, ${n} clients on the standby host, ${rate} events/s, median (min-max) of ${flags.runs} runs`,
    ['event', 'delivery gap ms', 'max latency ms', 'lost', 'duplicated', 'events sent (all runs)'],
    rows,
  );
  return { clients: n, rate, results };
}
