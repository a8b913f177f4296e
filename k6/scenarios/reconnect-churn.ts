/**
 * Reconnect churn: VUS clients that connect, subscribe, stay a random
 * HOLD_MIN..HOLD_MAX, leave, pause up to PAUSE_MAX, and come back, for
 * DURATION. ABRUPT_RATIO of the leaves skip the Socket.IO DISCONNECT and just
 * close the websocket (a closed tab or a dropped network), so the gateway has
 * to clean up by itself. Measures connect latency and errors under constant
 * join/leave load, the pattern of rolling deploys and flaky mobile networks.
 *
 *   k6 run -e BASE_URL=https://erp.example.com -e SID=... -e VUS=200 -e DURATION=10m k6/scenarios/reconnect-churn.ts
 */
import { check, sleep } from 'k6';
import type { Options } from 'k6/options';
import { EnvReader, formatDuration, readGatewayTarget, readSubscriptions, readThresholdSettings } from '../lib/config.ts';
import { openFrappeSocket } from '../lib/frappe.ts';
import type { SocketOutcome } from '../lib/frappe.ts';
import { randomBetween, writeSummary } from '../lib/run.ts';
import type { SummaryData } from '../lib/summary.ts';

const env = new EnvReader(__ENV);
const target = readGatewayTarget(env);
const subscriptions = readSubscriptions(env);
const VUS = env.int('VUS', 50, 1);
const DURATION_MS = env.durationMs('DURATION', '5m');
const HOLD_MIN_MS = env.durationMs('HOLD_MIN', '1s');
const HOLD_MAX_MS = env.durationMs('HOLD_MAX', '10s');
const PAUSE_MAX_MS = env.durationMs('PAUSE_MAX', '1s');
const ABRUPT_RATIO = env.number('ABRUPT_RATIO', 0.3, 0, 1);
const SUMMARY_DIR = env.string('SUMMARY_DIR', '.');
const limits = readThresholdSettings(env, {
  connectP95Ms: 1000,
  connectP99Ms: 3000,
  maxConnectErrorRate: 0.01,
  minChecksRate: 0.99,
});
if (HOLD_MAX_MS < HOLD_MIN_MS) env.problem('HOLD_MAX must not be shorter than HOLD_MIN');
env.done();

export const options: Options = {
  scenarios: {
    churn: {
      executor: 'constant-vus',
      vus: VUS,
      duration: formatDuration(DURATION_MS),
      gracefulStop: formatDuration(HOLD_MAX_MS + target.connectTimeoutMs + 5000),
    },
  },
  thresholds: {
    sio_connect_errors: [`rate<${limits.maxConnectErrorRate}`],
    sio_connect_duration: [`p(95)<${limits.connectP95Ms}`, `p(99)<${limits.connectP99Ms}`],
    sio_unexpected_disconnects: ['count<1'],
    sio_protocol_errors: ['count<1'],
    checks: [`rate>${limits.minChecksRate}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

export default function (): void {
  sleep(randomBetween(0, PAUSE_MAX_MS) / 1000);
  const holdMs = randomBetween(HOLD_MIN_MS, HOLD_MAX_MS);
  const graceful = Math.random() >= ABRUPT_RATIO;
  openFrappeSocket({
    target,
    vu: __VU,
    tags: { leave: graceful ? 'graceful' : 'abrupt' },
    onConnected: (socket) => {
      // Frappe's v15+ client does not re-subscribe after a reconnect; a page
      // load does. Churn simulates page loads.
      socket.subscribe(subscriptions);
      socket.after(holdMs, () => socket.close(graceful));
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
  return writeSummary('reconnect-churn', data, SUMMARY_DIR, {
    BASE_URL: target.baseUrl,
    SITE: target.site,
    VUS,
    DURATION: formatDuration(DURATION_MS),
    HOLD_MIN: formatDuration(HOLD_MIN_MS),
    HOLD_MAX: formatDuration(HOLD_MAX_MS),
    PAUSE_MAX: formatDuration(PAUSE_MAX_MS),
    ABRUPT_RATIO,
  });
}
