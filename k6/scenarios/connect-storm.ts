/**
 * Connect storm: new Frappe clients arrive at a constant rate (RATE per
 * second for DURATION), each completes the Socket.IO handshake to `/<SITE>`,
 * stays HOLD, then disconnects. Measures how fast and how reliably the
 * gateway (and its auth path to Frappe) admits connections.
 *
 *   k6 run -e BASE_URL=https://erp.example.com -e SID=... -e RATE=100 k6/scenarios/connect-storm.ts
 */
import { check } from 'k6';
import type { Options } from 'k6/options';
import { EnvReader, formatDuration, readGatewayTarget, readSubscriptions, readThresholdSettings } from '../lib/config.ts';
import { openFrappeSocket } from '../lib/frappe.ts';
import type { SocketOutcome } from '../lib/frappe.ts';
import { writeSummary } from '../lib/run.ts';
import type { SummaryData } from '../lib/summary.ts';

const env = new EnvReader(__ENV);
const target = readGatewayTarget(env);
const subscriptions = readSubscriptions(env);
const RATE = env.int('RATE', 20, 1);
const DURATION_MS = env.durationMs('DURATION', '1m');
const HOLD_MS = env.durationMs('HOLD', '2s');
const SUBSCRIBE = env.bool('SUBSCRIBE', false);
const SUMMARY_DIR = env.string('SUMMARY_DIR', '.');
const limits = readThresholdSettings(env, {
  connectP95Ms: 1000,
  connectP99Ms: 3000,
  maxConnectErrorRate: 0.01,
  minChecksRate: 0.99,
});
// Each iteration is busy for about connect time + HOLD; size the VU pool for that.
const busySeconds = (HOLD_MS + Math.min(target.connectTimeoutMs, 2000)) / 1000;
const PRE_ALLOCATED_VUS = env.int('VUS', Math.max(5, Math.ceil(RATE * busySeconds * 1.2)), 1);
const MAX_VUS = env.int('MAX_VUS', Math.max(PRE_ALLOCATED_VUS, Math.ceil((RATE * (HOLD_MS + target.connectTimeoutMs)) / 1000) + 5), 1);
env.done();

export const options: Options = {
  scenarios: {
    connect_storm: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: formatDuration(DURATION_MS),
      preAllocatedVUs: PRE_ALLOCATED_VUS,
      maxVUs: MAX_VUS,
      gracefulStop: formatDuration(HOLD_MS + target.connectTimeoutMs + 5000),
    },
  },
  thresholds: {
    sio_connect_errors: [
      `rate<${limits.maxConnectErrorRate}`,
      // A deployment refusing most connections is not worth storming for long.
      { threshold: 'rate<0.5', abortOnFail: true, delayAbortEval: '10s' },
    ],
    sio_connect_duration: [`p(95)<${limits.connectP95Ms}`, `p(99)<${limits.connectP99Ms}`],
    sio_protocol_errors: ['count<1'],
    checks: [`rate>${limits.minChecksRate}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

export default function (): void {
  openFrappeSocket({
    target,
    vu: __VU,
    onConnected: (socket) => {
      if (SUBSCRIBE) socket.subscribe(subscriptions);
      if (HOLD_MS === 0) socket.close();
      else socket.after(HOLD_MS, () => socket.close());
    },
    onClose: (outcome) => {
      check(outcome, {
        'socket.io connected': (o: SocketOutcome) => o.connected,
        'closed by the client': (o: SocketOutcome) => o.cause === 'client',
      });
    },
  });
}

export function handleSummary(data: SummaryData): Record<string, string> {
  return writeSummary('connect-storm', data, SUMMARY_DIR, {
    BASE_URL: target.baseUrl,
    SITE: target.site,
    RATE,
    DURATION: formatDuration(DURATION_MS),
    HOLD: formatDuration(HOLD_MS),
    VUS: PRE_ALLOCATED_VUS,
    MAX_VUS,
  });
}
