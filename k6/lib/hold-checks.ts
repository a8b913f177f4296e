/**
 * Shared by the long-lived connection scenarios (hold, soak): the checks on
 * a held socket, and a pause before reconnecting after a failure so a VU
 * whose gateway is down does not spin in a tight reconnect loop.
 */
import { check, sleep } from 'k6';
import type { SocketOutcome } from './frappe.ts';
import { randomBetween } from './run.ts';

/** Slack past pingInterval before a ping is expected to have arrived. */
const PING_SLACK_MS = 5000;

/** Module scope is per VU in k6: this is the VU's previous iteration. */
let previousFailed = false;

export function checkHeldSocket(outcome: SocketOutcome): void {
  previousFailed = !outcome.connected || outcome.cause !== 'client';
  check(outcome, {
    'socket.io connected': (o) => o.connected,
    'closed by the client': (o) => o.cause === 'client',
    // Server pings prove the connection was really alive, not just open.
    'server pings answered while held': (o) =>
      !o.connected || o.pingIntervalMs === undefined || o.lifetimeMs < o.pingIntervalMs + PING_SLACK_MS || o.pings > 0,
  });
}

/** Call at the start of an iteration: waits 0.5-1.5 s if the last socket failed or dropped. */
export function backoffAfterFailure(): void {
  if (previousFailed) sleep(randomBetween(500, 1500) / 1000);
}
