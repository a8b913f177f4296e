/**
 * Soak: VUS Frappe clients held for a long DURATION (default 1h) with
 * low-rate traffic both ways: every client sends Frappe's `ping` every
 * FRAPPE_PING_INTERVAL and expects `pong`, cycles `doc_open`/`doc_close` on
 * DOCS every DOC_CYCLE_INTERVAL, and (when PUBLISH_PER_MINUTE > 0) the
 * publish API sends events to FANOUT_ROOM whose latency is measured.
 * Thresholds are strict on errors: a soak exists to find the rare failure
 * (leaks, stuck sockets, missed pings) that a short run never shows.
 *
 *   k6 run -e BASE_URL=https://erp.example.com -e SID=... -e VUS=500 -e DURATION=4h k6/scenarios/soak.ts
 */
import { sleep } from 'k6';
import type { Options, Scenario } from 'k6/options';
import {
  EnvReader,
  formatDuration,
  readGatewayTarget,
  readPublishTarget,
  readSubscriptions,
  readThresholdSettings,
  subscriptionForRoom,
} from '../lib/config.ts';
import { openFrappeSocket } from '../lib/frappe.ts';
import { backoffAfterFailure, checkHeldSocket } from '../lib/hold-checks.ts';
import { fanoutLatency, publishSync } from '../lib/publish.ts';
import { newRunId, randomBetween, scenarioStartedAt, writeSummary } from '../lib/run.ts';
import type { SummaryData } from '../lib/summary.ts';

const env = new EnvReader(__ENV);
const target = readGatewayTarget(env);
const subscriptions = readSubscriptions(env);
const publishTarget = readPublishTarget(env, target);
const VUS = env.int('VUS', 100, 1);
const RAMP_UP_MS = env.durationMs('RAMP_UP', '2m');
const DURATION_MS = env.durationMs('DURATION', '1h');
const RAMP_DOWN_MS = env.durationMs('RAMP_DOWN', '1m');
const FRAPPE_PING_MS = env.durationMs('FRAPPE_PING_INTERVAL', '30s');
const DOC_CYCLE_MS = env.durationMs('DOC_CYCLE_INTERVAL', '5m');
const PUBLISH_PER_MINUTE = env.int('PUBLISH_PER_MINUTE', 0);
const ROOM = env.string('FANOUT_ROOM', 'website');
const EVENT = env.string('FANOUT_EVENT', 'k6_soak');
const MAX_UNEXPECTED_DISCONNECTS = env.int('MAX_UNEXPECTED_DISCONNECTS', 0);
const SUMMARY_DIR = env.string('SUMMARY_DIR', '.');
const limits = readThresholdSettings(env, {
  connectP95Ms: 1000,
  connectP99Ms: 3000,
  maxConnectErrorRate: 0.001,
  minChecksRate: 0.999,
});
env.done();

const closeJitterMs = randomBetween(0, 5000);

const scenarios: Record<string, Scenario> = {
  holders: {
    executor: 'ramping-vus',
    exec: 'holder',
    startVUs: 0,
    stages: [
      { duration: formatDuration(RAMP_UP_MS), target: VUS },
      { duration: formatDuration(DURATION_MS), target: VUS },
      { duration: formatDuration(RAMP_DOWN_MS), target: 0 },
    ],
    gracefulRampDown: formatDuration(RAMP_DOWN_MS + 10000),
    gracefulStop: '30s',
  },
};
const thresholds: NonNullable<Options['thresholds']> = {
  sio_connect_errors: [`rate<${limits.maxConnectErrorRate}`],
  sio_connect_duration: [`p(95)<${limits.connectP95Ms}`, `p(99)<${limits.connectP99Ms}`],
  sio_unexpected_disconnects: [`count<=${MAX_UNEXPECTED_DISCONNECTS}`],
  sio_ping_timeouts: ['count<1'],
  sio_protocol_errors: ['count<1'],
  checks: [`rate>${limits.minChecksRate}`],
};
if (FRAPPE_PING_MS > 0) {
  thresholds['frappe_pong_received'] = ['rate>0.999'];
  thresholds['frappe_pong_latency'] = ['p(95)<250', 'p(99)<1000'];
}
if (PUBLISH_PER_MINUTE > 0) {
  scenarios['publisher'] = {
    executor: 'constant-arrival-rate',
    exec: 'publish',
    rate: PUBLISH_PER_MINUTE,
    timeUnit: '1m',
    startTime: formatDuration(RAMP_UP_MS),
    duration: formatDuration(DURATION_MS),
    preAllocatedVUs: 2,
    maxVUs: 10,
  };
  thresholds['fanout_latency'] = ['p(95)<500', 'p(99)<2000'];
  thresholds['fanout_publish_errors'] = ['rate<0.01'];
}

export const options: Options = {
  scenarios,
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

interface SetupData {
  runId: string;
}

export function setup(): SetupData {
  return { runId: newRunId() };
}

export function holder(data: SetupData): void {
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
      const join = subscriptionForRoom(ROOM);
      if (PUBLISH_PER_MINUTE > 0 && join !== undefined) socket.emit(join.event, ...join.args);
      // Offset each client's timers so pings do not arrive in lockstep.
      if (FRAPPE_PING_MS > 0) {
        socket.after(randomBetween(0, FRAPPE_PING_MS), () => {
          socket.frappePing();
          socket.every(FRAPPE_PING_MS, () => socket.frappePing());
        });
      }
      if (DOC_CYCLE_MS > 0 && subscriptions.docs.length > 0) {
        let open = subscriptions.openDocs;
        socket.every(DOC_CYCLE_MS, () => {
          for (const [doctype, name] of subscriptions.docs) {
            if (open) socket.docClose(doctype, name);
            else socket.docOpen(doctype, name);
          }
          open = !open;
        });
      }
      socket.after(holdUntil - Date.now(), () => socket.close());
    },
    onEvent: (name, args) => {
      if (name !== EVENT) return;
      const payload = args[0];
      if (typeof payload !== 'object' || payload === null) return;
      const message = payload as Record<string, unknown>;
      const publishedAt = message['k6_published_at'];
      if (message['k6_run'] === data.runId && typeof publishedAt === 'number') {
        fanoutLatency.add(Math.max(0, Date.now() - publishedAt));
      }
    },
    onClose: checkHeldSocket,
  });
}

export function publish(data: SetupData): void {
  publishSync(publishTarget, {
    event: EVENT,
    message: { k6_run: data.runId, k6_published_at: Date.now() },
    room: ROOM,
    namespace: target.site,
  });
}

export function handleSummary(data: SummaryData): Record<string, string> {
  return writeSummary('soak', data, SUMMARY_DIR, {
    BASE_URL: target.baseUrl,
    SITE: target.site,
    VUS,
    RAMP_UP: formatDuration(RAMP_UP_MS),
    DURATION: formatDuration(DURATION_MS),
    FRAPPE_PING_INTERVAL: formatDuration(FRAPPE_PING_MS),
    DOC_CYCLE_INTERVAL: formatDuration(DOC_CYCLE_MS),
    PUBLISH_PER_MINUTE,
    FANOUT_ROOM: ROOM,
  });
}
