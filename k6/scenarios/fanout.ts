/**
 * Fan-out: VUS subscribers join FANOUT_ROOM in `/<SITE>`; after WARMUP one
 * publisher POSTs RATE events per second for DURATION to the gateway's
 * publish API (`${OPS_URL}/api/v1/publish`, bearer PUBLISH_TOKEN). Each
 * message carries its publish time; subscribers record publish-to-receive
 * latency and, from the end marker the publisher sends last, exactly which
 * messages they should have received (the delivered ratio).
 *
 *   k6 run -e BASE_URL=https://erp.example.com -e OPS_URL=https://ops.example.com \
 *          -e PUBLISH_TOKEN=... -e SID=... -e VUS=500 -e RATE=20 k6/scenarios/fanout.ts
 */
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate } from 'k6/metrics';
import type { Options } from 'k6/options';
import { clearInterval, setInterval } from 'k6/timers';
import {
  EnvReader,
  formatDuration,
  readGatewayTarget,
  readPublishTarget,
  readThresholdSettings,
  subscriptionForRoom,
} from '../lib/config.ts';
import { FanoutTracker, fanoutEndMarker, fanoutMessage } from '../lib/fanout-tracker.ts';
import { openFrappeSocket } from '../lib/frappe.ts';
import type { SocketOutcome } from '../lib/frappe.ts';
import { fanoutLatency, publishAsync, publishSync } from '../lib/publish.ts';
import { newRunId, randomBetween, scenarioStartedAt, writeSummary } from '../lib/run.ts';
import type { SummaryData } from '../lib/summary.ts';

const env = new EnvReader(__ENV);
const target = readGatewayTarget(env);
const publishTarget = readPublishTarget(env, target);
const SUBSCRIBERS = env.int('VUS', 50, 1);
const RATE = env.number('RATE', 10, 0.01);
const PUBLISH_MS = env.durationMs('DURATION', '1m');
/** Subscribers connect and subscribe during this time, before publishing starts. */
const WARMUP_MS = env.durationMs('WARMUP', '20s');
/** Subscribers spread their connects over this window (< WARMUP). */
const CONNECT_SPREAD_MS = env.durationMs('CONNECT_SPREAD', '5s');
/** After the end marker, wait this long for stragglers before closing. */
const DRAIN_MS = env.durationMs('DRAIN', '3s');
/** How long after publishing should have ended subscribers wait for the end marker. */
const END_TIMEOUT_MS = env.durationMs('END_TIMEOUT', '30s');
const ROOM = env.string('FANOUT_ROOM', 'website');
const EVENT = env.string('FANOUT_EVENT', 'k6_fanout');
const PAYLOAD_BYTES = env.int('PAYLOAD_BYTES', 0);
const MAX_IN_FLIGHT = env.int('MAX_IN_FLIGHT', 32, 1);
const LATENCY_P95_MS = env.number('LATENCY_P95_MS', 250);
const LATENCY_P99_MS = env.number('LATENCY_P99_MS', 1000);
const MIN_DELIVERED = env.number('MIN_DELIVERED', 0.999, 0, 1);
const MAX_PUBLISH_ERROR_RATE = env.number('MAX_PUBLISH_ERROR_RATE', 0.01, 0, 1);
const SUMMARY_DIR = env.string('SUMMARY_DIR', '.');
const limits = readThresholdSettings(env, {
  connectP95Ms: 1000,
  connectP99Ms: 3000,
  maxConnectErrorRate: 0.01,
  minChecksRate: 0.99,
});
if (CONNECT_SPREAD_MS >= WARMUP_MS) env.problem('CONNECT_SPREAD must be shorter than WARMUP');
env.done();

/** Messages the publisher will attempt (sequence numbers 0..PLANNED-1). */
const PLANNED = Math.max(1, Math.round((RATE * PUBLISH_MS) / 1000));
const TICK_MS = Math.max(5, Math.min(100, Math.floor(1000 / RATE)));

/** One sample per expected message per subscriber: true when it arrived. */
const delivered = new Rate('fanout_delivered');
const received = new Counter('fanout_received');
const duplicates = new Counter('fanout_duplicates');
/** Subscribers that were not connected when publishing started. */
const lateSubscribers = new Counter('fanout_late_subscribers');

export const options: Options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: formatDuration(WARMUP_MS + PUBLISH_MS + END_TIMEOUT_MS + DRAIN_MS + 30000),
    },
    publisher: {
      executor: 'per-vu-iterations',
      exec: 'publisher',
      vus: 1,
      iterations: 1,
      startTime: formatDuration(WARMUP_MS),
      maxDuration: formatDuration(PUBLISH_MS + END_TIMEOUT_MS),
    },
  },
  thresholds: {
    fanout_latency: [`p(95)<${LATENCY_P95_MS}`, `p(99)<${LATENCY_P99_MS}`],
    fanout_delivered: [`rate>=${MIN_DELIVERED}`],
    fanout_duplicates: ['count<1'],
    fanout_publish_errors: [`rate<${MAX_PUBLISH_ERROR_RATE}`],
    sio_connect_errors: [`rate<${limits.maxConnectErrorRate}`],
    sio_connect_duration: [`p(95)<${limits.connectP95Ms}`, `p(99)<${limits.connectP99Ms}`],
    sio_protocol_errors: ['count<1'],
    checks: [`rate>${limits.minChecksRate}`],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'],
};

interface SetupData {
  runId: string;
}

/** Probes the publish API so a wrong OPS_URL or token fails in seconds, not after the warm-up. */
export function setup(): SetupData {
  const runId = newRunId();
  const res = publishSync(publishTarget, {
    event: 'k6_probe',
    message: { k6_run: runId },
    room: `k6-probe:${runId}`,
    namespace: target.site,
  });
  if (res.status < 200 || res.status >= 300) {
    exec.test.abort(
      `publish API ${publishTarget.url} answered ${res.status}${res.error === '' ? '' : ` (${res.error})`}: ` +
        'check OPS_URL and PUBLISH_TOKEN',
    );
  }
  return { runId };
}

export function subscriber(data: SetupData): void {
  const tracker = new FanoutTracker(data.runId);
  const publishStartsAt = scenarioStartedAt() + WARMUP_MS;
  const giveUpAt = publishStartsAt + PUBLISH_MS + END_TIMEOUT_MS;
  let draining = false;
  sleep(randomBetween(0, CONNECT_SPREAD_MS) / 1000);

  openFrappeSocket({
    target,
    vu: __VU,
    onConnected: (socket) => {
      if (Date.now() > publishStartsAt) lateSubscribers.add(1);
      const join = subscriptionForRoom(ROOM);
      if (join !== undefined) socket.emit(join.event, ...join.args);
      socket.after(giveUpAt - Date.now(), () => socket.close());
    },
    onEvent: (name, args, socket) => {
      if (name !== EVENT) return;
      const receipt = tracker.receive(args, Date.now());
      if (receipt.kind === 'message') {
        if (receipt.duplicate) {
          duplicates.add(1);
        } else {
          received.add(1);
          fanoutLatency.add(receipt.latencyMs);
        }
      } else if (receipt.kind === 'end' && !draining) {
        draining = true;
        socket.after(DRAIN_MS, () => socket.close());
      }
    },
    onClose: (outcome) => {
      const result = tracker.outcome(PLANNED);
      for (let i = 0; i < result.delivered; i += 1) delivered.add(true);
      for (let i = result.delivered; i < result.expected; i += 1) delivered.add(false);
      check(outcome, {
        'socket.io connected': (o: SocketOutcome) => o.connected,
        'closed by the client': (o: SocketOutcome) => o.cause === 'client',
      });
      check(result, { 'fan-out end marker received': (r) => r.endSeen });
      if (result.delivered < result.expected) {
        console.warn(
          `subscriber VU ${__VU}: ${result.expected - result.delivered} of ${result.expected} messages missing ` +
            `(first: ${result.missingSample.join(', ')}); socket ${outcome.cause}`,
        );
      }
    },
  });
}

/**
 * Publishes PLANNED messages paced at RATE per second, at most MAX_IN_FLIGHT
 * requests outstanding, then the end marker listing what the API refused.
 */
export async function publisher(data: SetupData): Promise<void> {
  const failed: number[] = [];
  const startedAt = Date.now();
  let next = 0;
  let inFlight = 0;

  await new Promise<void>((resolve) => {
    let timer: number | undefined;
    const finishIfDone = (): void => {
      if (next < PLANNED || inFlight > 0) return;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
      resolve();
    };
    const tick = (): void => {
      const due = Math.min(PLANNED, Math.floor(((Date.now() - startedAt) * RATE) / 1000) + 1);
      while (next < due && inFlight < MAX_IN_FLIGHT) {
        const seq = next;
        next += 1;
        inFlight += 1;
        void publishAsync(publishTarget, {
          event: EVENT,
          message: fanoutMessage(data.runId, seq, Date.now(), PAYLOAD_BYTES),
          room: ROOM,
          namespace: target.site,
        }).then((ok) => {
          if (!ok) failed.push(seq);
          inFlight -= 1;
          finishIfDone();
        });
      }
    };
    timer = setInterval(tick, TICK_MS);
    tick();
  });

  const behindMs = Date.now() - startedAt - PUBLISH_MS;
  if (behindMs > 1000) {
    console.warn(`publisher finished ${behindMs} ms late: raise MAX_IN_FLIGHT or lower RATE`);
  }
  failed.sort((a, b) => a - b);
  const marker = fanoutEndMarker(data.runId, PLANNED, failed);
  let sent = false;
  for (let attempt = 0; attempt < 3 && !sent; attempt += 1) {
    const res = publishSync(publishTarget, { event: EVENT, message: marker, room: ROOM, namespace: target.site });
    sent = res.status >= 200 && res.status < 300;
  }
  check(sent, { 'fan-out end marker published': (s) => s });
}

export function handleSummary(data: SummaryData): Record<string, string> {
  return writeSummary('fanout', data, SUMMARY_DIR, {
    BASE_URL: target.baseUrl,
    OPS_URL: publishTarget.url,
    SITE: target.site,
    VUS: SUBSCRIBERS,
    RATE,
    DURATION: formatDuration(PUBLISH_MS),
    WARMUP: formatDuration(WARMUP_MS),
    FANOUT_ROOM: ROOM,
    FANOUT_EVENT: EVENT,
    PAYLOAD_BYTES,
    PLANNED_MESSAGES: PLANNED,
  });
}
