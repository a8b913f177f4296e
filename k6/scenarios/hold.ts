/**
 * Hold: ramp up to VUS concurrent Frappe clients, keep them connected for
 * DURATION, ramp down. Each client subscribes like a desk page does
 * (doctype list, optional docs with presence, a task) and answers the
 * gateway's Engine.IO pings. Measures idle-connection capacity and stability.
 *
 *   k6 run -e BASE_URL=https://erp.example.com -e SID=... -e VUS=2000 -e DURATION=10m k6/scenarios/hold.ts
 */
import { sleep } from 'k6';
import type { Options } from 'k6/options';
import { EnvReader, formatDuration, readGatewayTarget, readSubscriptions, readThresholdSettings } from '../lib/config.ts';
import { openFrappeSocket } from '../lib/frappe.ts';
import { backoffAfterFailure, checkHeldSocket } from '../lib/hold-checks.ts';
import { randomBetween, scenarioStartedAt, writeSummary } from '../lib/run.ts';
import type { SummaryData } from '../lib/summary.ts';

const env = new EnvReader(__ENV);
const target = readGatewayTarget(env);
const subscriptions = readSubscriptions(env);
const VUS = env.int('VUS', 100, 1);
const RAMP_UP_MS = env.durationMs('RAMP_UP', '1m');
const DURATION_MS = env.durationMs('DURATION', '5m');
const RAMP_DOWN_MS = env.durationMs('RAMP_DOWN', '30s');
/** Closes are spread over this window before the hold ends. */
const CLOSE_SPREAD_MS = env.durationMs('CLOSE_SPREAD', '5s');
/** Frappe `ping` -> `pong` every this often per client; 0 = off. */
const FRAPPE_PING_MS = env.durationMs('FRAPPE_PING_INTERVAL', '0s');
const MAX_UNEXPECTED_DISCONNECTS = env.int('MAX_UNEXPECTED_DISCONNECTS', 0);
const SUMMARY_DIR = env.string('SUMMARY_DIR', '.');
const limits = readThresholdSettings(env, {
  connectP95Ms: 1000,
  connectP99Ms: 3000,
  maxConnectErrorRate: 0.01,
  minChecksRate: 0.99,
});
env.done();

// Per VU (module scope runs once per VU), so a reconnecting VU keeps its slot.
const closeJitterMs = randomBetween(0, CLOSE_SPREAD_MS);

const thresholds: NonNullable<Options['thresholds']> = {
  sio_connect_errors: [`rate<${limits.maxConnectErrorRate}`],
  sio_connect_duration: [`p(95)<${limits.connectP95Ms}`, `p(99)<${limits.connectP99Ms}`],
  sio_unexpected_disconnects: [`count<=${MAX_UNEXPECTED_DISCONNECTS}`],
  sio_ping_timeouts: ['count<1'],
  sio_protocol_errors: ['count<1'],
  checks: [`rate>${limits.minChecksRate}`],
};
if (FRAPPE_PING_MS > 0) {
  thresholds['frappe_pong_received'] = ['rate>0.99'];
  thresholds['frappe_pong_latency'] = ['p(95)<500', 'p(99)<1500'];
}

export const options: Options = {
  scenarios: {
    hold: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: formatDuration(RAMP_UP_MS), target: VUS },
        { duration: formatDuration(DURATION_MS), target: VUS },
        { duration: formatDuration(RAMP_DOWN_MS), target: 0 },
      ],
      gracefulRampDown: formatDuration(RAMP_DOWN_MS + 10000),
      gracefulStop: '30s',
    },
  },
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

export default function (): void {
  // Every client holds until the end of the hold stage, whenever it joined;
  // a client whose socket dropped reconnects in its next iteration.
  const holdUntil = scenarioStartedAt() + RAMP_UP_MS + DURATION_MS - closeJitterMs;
  if (Date.now() >= holdUntil) {
    sleep(1);
    return;
  }
  backoffAfterFailure();
  openFrappeSocket({
    target,
    vu: __VU,
    onConnected: (socket) => {
      socket.subscribe(subscriptions);
      if (FRAPPE_PING_MS > 0) socket.every(FRAPPE_PING_MS, () => socket.frappePing());
      socket.after(holdUntil - Date.now(), () => socket.close());
    },
    onClose: checkHeldSocket,
  });
}

export function handleSummary(data: SummaryData): Record<string, string> {
  return writeSummary('hold', data, SUMMARY_DIR, {
    BASE_URL: target.baseUrl,
    SITE: target.site,
    VUS,
    RAMP_UP: formatDuration(RAMP_UP_MS),
    DURATION: formatDuration(DURATION_MS),
    RAMP_DOWN: formatDuration(RAMP_DOWN_MS),
    DOCTYPES: subscriptions.doctypes,
    DOCS: subscriptions.docs.map(([dt, dn]) => `${dt}/${dn}`),
    FRAPPE_PING_INTERVAL: formatDuration(FRAPPE_PING_MS),
  });
}
