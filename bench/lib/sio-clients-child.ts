/**
 * Generator process of real socket.io-client instances (the recovery handshake
 * `{pid, offset}` in CONNECT auth is the stock client's, which the lean ws
 * client does not speak). Optionally force-closes each client's transport at
 * random intervals; socket.io-client then reconnects by itself after its
 * reconnection delay, as a browser on a flaky network would.
 */
import { io, type Socket } from 'socket.io-client';
import { nowMs } from './frames';
import { ClientLedger, jitterDelay } from './recovery-accounting';
import type { SioChildCommand, SioChildReport, WindowLatency } from './sio-clients-protocol';
import { percentileSorted } from './stats';

interface Client {
  socket: Socket;
  ledger: ClientLedger;
  warm: boolean;
  timer: NodeJS.Timeout | undefined;
  /** When the transport was lost (force-closed or by the server), for reconnect times. */
  downAt: number;
  /** The same instant as wall-clock time, to place it among the orchestrator's restarts. */
  downAtEpoch: number;
  /** Start of the latest reconnection attempt (after its backoff wait). */
  attemptAt: number;
  /** Every disconnect and connect (epoch ms), and per bench event its publish time and latency (ms). */
  downs: number[];
  ups: number[];
  sentAt: number[];
  latency: number[];
  told: number;
  recovered: number;
}

const clients: Client[] = [];
let drops = 0;
let reconnects = 0;
let recovered = 0;
const missed: Record<string, number> = {};
let reconnectMs: number[] = [];
let reconnectAt: number[] = [];
let handshakeMs: number[] = [];
let connectErrors = 0;
let jitter: { meanMs: number; spread: number } | undefined;

function scheduleDrop(c: Client): void {
  if (!jitter) return;
  c.timer = setTimeout(
    () => {
      c.timer = undefined;
      if (!jitter) return;
      if (c.socket.connected) {
        drops++;
        // Closing the Engine.IO transport (not socket.disconnect()) is a lost connection to the client: it reconnects.
        c.socket.io.engine.close();
      }
      scheduleDrop(c);
    },
    jitterDelay(jitter.meanMs, jitter.spread, Math.random()),
  );
}

function handle(cmd: SioChildCommand): SioChildReport | Promise<SioChildReport> {
  switch (cmd.type) {
    case 'connect': {
      for (const spec of cmd.clients) {
        const socket = io(`${cmd.url.replace(/\/+$/, '')}/${cmd.site}`, {
          forceNew: true,
          transports: ['websocket'],
          extraHeaders: { Origin: cmd.origin, Cookie: `sid=${spec.sid}`, 'X-Frappe-Site-Name': cmd.site },
          // Without reconnectionDelayMs: socket.io-client's defaults (1,000 ms, max 5,000 ms, randomization 0.5), as a browser.
          ...(cmd.reconnectionDelayMs === undefined
            ? {}
            : { reconnectionDelay: cmd.reconnectionDelayMs, reconnectionDelayMax: cmd.reconnectionDelayMs * 3, randomizationFactor: 0.5 }),
        });
        const c: Client = {
          socket,
          ledger: new ClientLedger(),
          warm: false,
          timer: undefined,
          downAt: 0,
          downAtEpoch: 0,
          attemptAt: 0,
          downs: [],
          ups: [],
          sentAt: [],
          latency: [],
          told: 0,
          recovered: 0,
        };
        socket.on('bench', (msg: { s?: unknown; t?: unknown }) => {
          c.ledger.record(Number(msg?.s));
          const t = Number(msg?.t);
          if (Number.isFinite(t)) {
            c.sentAt.push(t);
            c.latency.push(nowMs() - t);
          }
        });
        socket.on('warm', () => (c.warm = true));
        socket.on('rtg_missed_updates', (m: { reason?: unknown }) => {
          const r = String(m?.reason ?? 'unknown');
          missed[r] = (missed[r] ?? 0) + 1;
          c.told++;
        });
        socket.on('disconnect', () => {
          c.downAt = performance.now();
          c.downAtEpoch = Date.now();
          c.downs.push(c.downAtEpoch);
        });
        socket.on('connect_error', () => connectErrors++);
        socket.io.on('reconnect_attempt', () => (c.attemptAt = performance.now()));
        socket.on('connect', () => {
          c.ups.push(Date.now());
          if (c.downAt > 0) {
            reconnects++;
            reconnectMs.push(performance.now() - c.downAt);
            reconnectAt.push(c.downAtEpoch);
            handshakeMs.push(c.attemptAt >= c.downAt ? performance.now() - c.attemptAt : NaN);
            if (socket.recovered) {
              recovered++;
              c.recovered++;
            }
          }
        });
        clients.push(c);
      }
      return waitAll((c) => c.socket.connected, cmd.timeoutMs).then(() => report(false));
    }
    case 'jitter':
      jitter = { meanMs: cmd.meanMs, spread: cmd.spread };
      for (const c of clients) scheduleDrop(c);
      return report(false);
    case 'stop-jitter':
      jitter = undefined;
      for (const c of clients) if (c.timer) clearTimeout(c.timer);
      return waitAll((c) => c.socket.connected, cmd.timeoutMs).then(
        () => report(false),
        () => report(false),
      );
    case 'reset-warm':
      for (const c of clients) c.warm = false;
      return report(false);
    case 'report':
      return report(cmd.full);
    case 'latency':
      return { ...report(false), latency: cmd.windows.map((w) => windowLatency(w.from, w.to, w.eventsFrom)) };
    case 'reset':
      for (const c of clients) {
        c.ledger = new ClientLedger();
        c.downs = [];
        c.ups = [];
        c.sentAt = [];
        c.latency = [];
        c.told = 0;
        c.recovered = 0;
      }
      drops = 0;
      reconnects = 0;
      recovered = 0;
      reconnectMs = [];
      reconnectAt = [];
      handshakeMs = [];
      connectErrors = 0;
      for (const k of Object.keys(missed)) delete missed[k];
      return report(false);
  }
}

function windowLatency(from: number, to: number, eventsFrom: number): WindowLatency {
  const ms: number[] = [];
  let n = 0;
  for (const c of clients) {
    // Connected at `from` (its last connect or disconnect before it was a connect, or neither since the reset) and all through the window.
    const lastUp = Math.max(-1, ...c.ups.filter((t) => t <= from));
    const lastDown = Math.max(-1, ...c.downs.filter((t) => t <= from));
    if (lastDown > lastUp || c.downs.some((t) => t > from && t <= to)) continue;
    n++;
    c.sentAt.forEach((t, i) => {
      if (t >= eventsFrom && t <= to) ms.push(c.latency[i] as number);
    });
  }
  ms.sort((a, b) => a - b);
  return { clients: n, events: ms.length, p50: percentileSorted(ms, 50), p99: percentileSorted(ms, 99), max: percentileSorted(ms, 100) };
}

function waitAll(pred: (c: Client) => boolean, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (clients.every(pred)) return resolve();
      if (performance.now() > deadline) return reject(new Error('timeout'));
      setTimeout(check, 50);
    };
    check();
  });
}

function report(full: boolean): SioChildReport {
  return {
    type: 'report',
    connected: clients.filter((c) => c.socket.connected).length,
    warm: clients.filter((c) => c.warm).length,
    received: clients.reduce((a, c) => a + c.ledger.unique, 0),
    drops,
    reconnects,
    recovered,
    missed: { ...missed },
    connectErrors,
    reconnectMs: full ? reconnectMs : [],
    reconnectAt: full ? reconnectAt : [],
    handshakeMs: full ? handshakeMs : [],
    ledgers: full ? clients.map((c) => c.ledger.toJSON()) : [],
    told: full ? clients.map((c) => c.told) : [],
    recoveredPer: full ? clients.map((c) => c.recovered) : [],
    connectedPer: full ? clients.map((c) => c.socket.connected) : [],
  };
}

process.on('message', (raw: unknown) => {
  Promise.resolve(handle(raw as SioChildCommand)).then(
    (r) => process.send?.(r),
    (err: unknown) => process.send?.({ type: 'error', message: err instanceof Error ? err.message : String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
