/**
 * Checks shared by the long-lived connection scenarios (hold, soak).
 */
import { check } from 'k6';
import type { SocketOutcome } from './frappe.ts';

/** Slack past pingInterval before a ping is expected to have arrived. */
const PING_SLACK_MS = 5000;

export function checkHeldSocket(outcome: SocketOutcome): void {
  check(outcome, {
    'socket.io connected': (o) => o.connected,
    'closed by the client': (o) => o.cause === 'client',
    // Server pings prove the connection was really alive, not just open.
    'server pings answered while held': (o) =>
      !o.connected || o.pingIntervalMs === undefined || o.lifetimeMs < o.pingIntervalMs + PING_SLACK_MS || o.pings > 0,
  });
}
