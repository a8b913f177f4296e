/**
 * connect-storm: N clients opening at once against a backend answering in
 * 5 ms: time until all are connected, errors, get_user_info calls. Shared
 * credential (one sid, the auth cache absorbs the storm) and unique sids.
 */
import { flagList, flagNumber, fmtSpread, makeClients, printTable, startEnv, type Flags } from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { cpuDelta, readMachineCpu, readSchedSeconds, sampleCpu, sum } from '../lib/proc';
import { spread } from '../lib/stats';
import { SITE, startBaseline, startGatewayTarget } from '../lib/topology';

interface StormRun {
  connected: number;
  errors: Record<string, number>;
  durationMs: number;
  backendCalls: number;
  /** CPU seconds over the storm: the gateway's primary, its workers (summed), the load generators, redis-server, the bench process (fake backend). */
  cpu: { primary: number; workers: number; loadgens: number; redis: number; bench: number; machineBusy: number };
  /**
   * Main threads of the primary and of each worker over the storm: seconds
   * running, runnable but waiting for a CPU, and sleeping (the rest of the
   * storm's wall clock). A worker that sleeps while clients wait is not
   * short of CPU: it waits for work (a hand-over, the backend, Redis).
   */
  sched: { pid: number; role: 'primary' | 'worker'; run: number; wait: number; sleep: number }[];
}

export async function connectStorm(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const latency = flagNumber(flags, 'latency', 5);
  const targets = flagList(flags, 'targets', ['gateway-standalone', 'gateway-2w', 'stock']);
  const creds = flagList(flags, 'credentials', ['shared', 'unique']);
  const env = await startEnv(latency);
  const results: Record<string, StormRun[]> = {};
  try {
    for (const name of targets) {
      for (const cred of creds) {
        const key = `${name} / ${cred} sid`;
        results[key] = [];
        const clients = makeClients(env, n, { sharedSid: cred === 'shared', prefix: cred === 'shared' ? 'storm' : 'u' });
        for (let run = 0; run < flags.runs; run++) {
          const t =
            name === 'gateway-standalone'
              ? await startGatewayTarget({ fake: env.fake })
              : name === 'stock'
                ? await startBaseline({ kind: 'stock', redis: env.redis, fake: env.fake })
                : await startGatewayTarget({ fake: env.fake, redis: env.redis, workers: Number(name.slice(8, -1)) });
          const loadgen = await LoadGen.start(flags.loadgens);
          try {
            env.fake.clearRequests();
            const workerPids = t.workerPids().filter((p) => p !== t.primaryPid);
            const pids = [t.primaryPid, ...workerPids, ...loadgen.pids, env.redis.pid];
            const cpu0 = sampleCpu(pids);
            const bench0 = process.cpuUsage();
            const machine0 = readMachineCpu();
            const schedPids = [t.primaryPid, ...workerPids];
            const sched0 = schedPids.map(readSchedSeconds);
            const c = await loadgen.connect({
              url: t.url,
              site: SITE,
              origin: t.origin,
              clients,
              ratePerSec: 0,
              retries: 0,
              timeoutMs: flagNumber(flags, 'timeout', 60) * 1000,
            });
            const d = cpuDelta(cpu0, sampleCpu(pids));
            const benchUsage = process.cpuUsage(bench0);
            const machine1 = readMachineCpu();
            const sched = schedPids.map((pid, i) => {
              const a = sched0[i] ?? { run: NaN, wait: NaN };
              const b = readSchedSeconds(pid);
              const run = b.run - a.run;
              const wait = b.wait - a.wait;
              return {
                pid,
                role: i === 0 ? ('primary' as const) : ('worker' as const),
                run,
                wait,
                sleep: c.durationMs / 1000 - run - wait,
              };
            });
            const of = (ps: readonly number[]): number => sum(ps.map((p) => d.get(p) ?? 0));
            const r: StormRun = {
              connected: c.connected,
              errors: c.errors,
              durationMs: c.durationMs,
              backendCalls: env.fake.callsTo('get_user_info').length,
              cpu: {
                primary: of([t.primaryPid]),
                workers: of(workerPids),
                loadgens: of(loadgen.pids),
                redis: of([env.redis.pid]),
                bench: (benchUsage.user + benchUsage.system) / 1e6,
                machineBusy: (machine1.busy - machine0.busy) / Math.max(1, machine1.total - machine0.total),
              },
              sched,
            };
            const cs = r.cpu;
            console.error(
              `[connect-storm] ${key} run ${run + 1}: ${c.connected}/${n} in ${Math.round(c.durationMs)} ms, errors ${JSON.stringify(c.errors)}, get_user_info calls ${r.backendCalls}; ` +
                `CPU s: primary ${cs.primary.toFixed(2)}, workers ${cs.workers.toFixed(2)}, load generators ${cs.loadgens.toFixed(2)}, redis ${cs.redis.toFixed(2)}, bench/backend ${cs.bench.toFixed(2)}; machine busy ${(cs.machineBusy * 100).toFixed(0)}%; ` +
                `main threads run/wait/sleep s: ${sched.map((x) => `${x.role} ${x.run.toFixed(1)}/${x.wait.toFixed(1)}/${x.sleep.toFixed(1)}`).join(', ')}`,
            );
            results[key]?.push(r);
          } finally {
            await loadgen.close();
            await t.close();
          }
        }
      }
    }
  } finally {
    await env.close();
  }
  const rows = Object.entries(results).map(([key, runs]) => [
    key,
    fmtSpread(spread(runs.map((r) => r.connected))),
    fmtSpread(spread(runs.map((r) => r.durationMs / 1000)), 2),
    fmtSpread(spread(runs.map((r) => Object.values(r.errors).reduce((a, b) => a + b, 0)))),
    fmtSpread(spread(runs.map((r) => r.backendCalls))),
    fmtSpread(spread(runs.map((r) => r.cpu.primary + r.cpu.workers)), 2),
    fmtSpread(spread(runs.map((r) => r.cpu.loadgens)), 2),
  ]);
  printTable(
    `connect-storm: ${n} clients at once, backend latency ${latency} ms, median (min-max) of ${flags.runs} runs`,
    [
      'target / credentials',
      'connected',
      'time to all connected (s)',
      'errors',
      'get_user_info calls',
      'gateway CPU s',
      'load generators CPU s',
    ],
    rows,
  );
  return { clients: n, latencyMs: latency, results };
}
