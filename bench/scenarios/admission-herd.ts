/**
 * admission-herd: N established clients receive events to their user rooms
 * while a herd of H new clients (unique sessions, backend answering in 5 ms)
 * arrives at once on a host of 2 workers, with admission control off and on
 * (GATEWAY_ADMISSION_RATE / _BURST) in the same run. Reports the established
 * clients' publish-to-client latency during the herd, events lost, and how
 * long the herd took to be connected (refused attempts are retried by the
 * load generator, as socket.io-client would).
 */
import {
  flagList,
  flagNumber,
  fmtSpread,
  makeClients,
  measure,
  printTable,
  startEnv,
  userRooms,
  warmUp,
  type Flags,
  type RunResult,
} from '../lib/common';
import { LoadGen } from '../lib/loadgen';
import { Publisher } from '../lib/publisher';
import { spread } from '../lib/stats';
import { SITE, startGatewayTarget } from '../lib/topology';

interface HerdRun {
  rate: string;
  established: RunResult;
  herdConnected: number;
  herdMs: number;
  herdRetries: number;
  herdErrors: Record<string, number>;
}

export async function admissionHerd(flags: Flags): Promise<unknown> {
  const n = flags.clients;
  const herd = flagNumber(flags, 'herd', 4000);
  const eventRate = flagNumber(flags, 'rate', 200);
  const workers = flagNumber(flags, 'workers', 2);
  // "<rate>/<burst>" per host; "0" = off.
  const settings = flagList(flags, 'admission', ['0', '250/500']);
  const env = await startEnv(5);
  const publisher = await Publisher.start();
  const runs: HerdRun[] = [];
  try {
    for (let run = 0; run < flags.runs; run++) {
      for (const s of settings) {
        const [rate = '0', burst = '1'] = s.split('/');
        const target = await startGatewayTarget({
          fake: env.fake,
          redis: env.redis,
          workers,
          env: { GATEWAY_ADMISSION_RATE: rate, GATEWAY_ADMISSION_BURST: burst },
        });
        const established = await LoadGen.start(1);
        const herdGen = await LoadGen.start(flags.loadgens);
        try {
          const rooms = userRooms(n, 'e');
          const c = await established.connect({
            url: target.url,
            site: SITE,
            origin: target.origin,
            clients: makeClients(env, n, { prefix: 'e' }),
            ratePerSec: 200,
            retries: 100,
          });
          if (c.connected !== n) throw new Error(`only ${c.connected}/${n} established clients connected: ${JSON.stringify(c.errors)}`);
          await warmUp(target, established, rooms, n);
          // Fresh sessions per run: nothing in the auth cache.
          const herdClients = makeClients(env, herd, { prefix: `h${run}-${rate}-` });
          const herdDone = herdGen.connect({
            url: target.url,
            site: SITE,
            origin: target.origin,
            clients: herdClients,
            ratePerSec: 0,
            retries: 10_000,
            timeoutMs: 180_000,
          });
          const m = await measure({
            target,
            loadgen: established,
            publisher,
            redis: env.redis,
            rate: eventRate,
            durationMs: flags.durationMs,
            rooms,
            perEvent: 1,
          });
          const h = await herdDone;
          const r: HerdRun = {
            rate: s,
            established: m,
            herdConnected: h.connected,
            herdMs: h.durationMs,
            herdRetries: h.retries,
            herdErrors: h.errors,
          };
          console.error(
            `[admission-herd] run ${run + 1} admission ${s}: established p50 ${m.latencyMs.p50.toFixed(1)} p99 ${m.latencyMs.p99.toFixed(1)} max ${m.latencyMs.max.toFixed(1)} ms, lost ${m.lost}, disconnects ${m.disconnects}; herd ${h.connected}/${herd} in ${Math.round(h.durationMs)} ms, ${h.retries} refused attempts retried, errors ${JSON.stringify(h.errors)}${m.valid ? '' : ` INVALID: ${m.invalid.join('; ')}`}`,
          );
          runs.push(r);
        } finally {
          await herdGen.close();
          await established.close();
          await target.close();
        }
      }
    }
  } finally {
    publisher.close();
    await env.close();
  }
  const rows = settings.map((s) => {
    const rs = runs.filter((r) => r.rate === s);
    return [
      s === '0' ? 'off' : s,
      fmtSpread(spread(rs.map((r) => r.established.latencyMs.p50)), 1),
      fmtSpread(spread(rs.map((r) => r.established.latencyMs.p99)), 1),
      fmtSpread(spread(rs.map((r) => r.established.latencyMs.max)), 1),
      fmtSpread(spread(rs.map((r) => r.established.lost))),
      fmtSpread(spread(rs.map((r) => r.herdConnected))),
      fmtSpread(spread(rs.map((r) => r.herdMs / 1000)), 1),
      fmtSpread(spread(rs.map((r) => r.herdRetries))),
      `${rs.filter((r) => r.established.valid).length}/${rs.length}`,
    ];
  });
  printTable(
    `admission-herd: ${n} established clients at ${eventRate} events/s, herd of ${herd} new clients on ${workers} workers, ${flags.durationMs / 1000} s window, median (min-max) of ${flags.runs} runs`,
    ['admission rate/burst', 'p50 ms', 'p99 ms', 'max ms', 'events lost', 'herd connected', 'herd time (s)', 'refused attempts', 'valid'],
    rows,
  );
  return { runs };
}
