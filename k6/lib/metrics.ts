/**
 * Custom metrics shared by every scenario. Created at import time, which
 * k6 requires (metrics can only be declared in the init context).
 *
 * Names: `sio_*` for the Socket.IO connection, `frappe_*` for Frappe's own
 * client events. Each scenario declares thresholds on the ones it drives.
 */
import { Counter, Rate, Trend } from 'k6/metrics';

/** WebSocket creation until the namespace CONNECT is acknowledged. */
export const connectDuration = new Trend('sio_connect_duration', true);
/** One sample per connection attempt: true when it did not get connected. */
export const connectErrors = new Rate('sio_connect_errors');
/** Failed attempts by `reason`: connect_error, connect_timeout, ws_error, ... */
export const connectFailures = new Counter('sio_connect_failures');
/** Connected sockets that ended without the client asking, by `reason`. */
export const unexpectedDisconnects = new Counter('sio_unexpected_disconnects');
/** Engine.IO pings from the server answered with a pong. */
export const pingsAnswered = new Counter('sio_pings_answered');
/** Server pings overdue by more than pingInterval + pingTimeout. */
export const pingTimeouts = new Counter('sio_ping_timeouts');
/** Frames the codec could not handle (binary, malformed), by `code`. */
export const protocolErrors = new Counter('sio_protocol_errors');
/** Socket.IO events received from the server. */
export const eventsReceived = new Counter('sio_events_received');
/** How long connected sockets stayed connected. */
export const sessionDuration = new Trend('sio_session_duration', true);

/** Frappe `ping` -> `pong` round trip through the gateway. */
export const pongLatency = new Trend('frappe_pong_latency', true);
/** One sample per Frappe `ping`: true when its `pong` came back. */
export const pongReceived = new Rate('frappe_pong_received');
