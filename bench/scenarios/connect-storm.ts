/**
 * connect-storm: N clients opening at once against a backend answering in
 * 5 ms: time until all are connected, errors, get_user_info calls. Shared
 * credential (one sid, the auth cache absorbs the storm) and unique sids.
 */
import { flagList, flagNumber, fmtSpread, makeClients, printTable, startEnv, type Flags } from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { spread } from '../lib/stats';
import { SITE, startBaseline, startGatewayTarget } from '../lib/topology';

interface StormRun {
  connected: number;
  errors: Record<string, number>;
  durationMs: number;
  backendCalls: number;
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
            const c = await loadgen.connect({
              url: t.url,
              site: SITE,
              origin: t.origin,
              clients,
              ratePerSec: 0,
              retries: 0,
              timeoutMs: flagNumber(flags, 'timeout', 60) * 1000,
            });
            const r: StormRun = {
              connected: c.connected,
              errors: c.errors,
              durationMs: c.durationMs,
              backendCalls: env.fake.callsTo('get_user_info').length,
            };
            console.error(
              `[connect-storm] ${key} run ${run + 1}: ${c.connected}/${n} in ${Math.round(c.durationMs)} ms, errors ${JSON.stringify(c.errors)}, get_user_info calls ${r.backendCalls}`,
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
  ]);
  printTable(
    `connect-storm: ${n} clients at once, backend latency ${latency} ms, median (min-max) of ${flags.runs} runs`,
    ['target / credentials', 'connected', 'time to all connected (s)', 'errors', 'get_user_info calls'],
    rows,
  );
  return { clients: n, latencyMs: latency, results };
}
