/**
 * Load-generator process: N lean websocket clients (Engine.IO 4 websocket-only
 * handshake, CONNECT to /<site> with Frappe headers, answers pings, counts
 * `bench` events and their publish-to-client latency). Driven over IPC by
 * bench/lib/loadgen.ts; reports its own CPU so the orchestrator can refuse
 * runs where the generator was the bottleneck.
 */
import WebSocket from 'ws';
import { benchFields, frames, nowMs, parseFrame } from './frames';
import { LogHistogram } from './stats';
import type { ChildCommand, ChildReport, ConnectResult } from './loadgen-protocol';

interface Client {
  ws: WebSocket;
  connected: boolean;
  warm: boolean;
}

const clients: Client[] = [];
let hist = new LogHistogram();
let deliveries = 0;
let disconnects = 0;
let windowCpu = process.cpuUsage();
let windowStart = performance.now();
let seqCounts: Uint16Array | null = null;
let seqFirst: Float64Array | null = null;
let seqLatency: Float64Array | null = null;

function send(m: unknown): void {
  process.send?.(m);
}

function onEventFrame(c: Client, name: string, body: string): void {
  if (name === 'bench') {
    const now = nowMs();
    const { seq, t } = benchFields(body);
    deliveries++;
    if (Number.isFinite(t)) hist.record(now - t);
    if (seqCounts !== null && seq >= 0 && seq < seqCounts.length) {
      if (seqCounts[seq] === 0 && seqFirst && seqLatency) {
        seqFirst[seq] = now;
        seqLatency[seq] = now - t;
      }
      seqCounts[seq] = (seqCounts[seq] as number) + 1;
    }
  } else if (name === 'warm') {
    c.warm = true;
  }
}

function connectAll(cmd: Extract<ChildCommand, { cmd: 'connect' }>): void {
  const started = performance.now();
  const errors: Record<string, number> = {};
  let pending = cmd.clients.length;
  let connected = 0;
  let lastAt = 0;
  const nsp = `/${cmd.site}`;
  const wsUrl = `${cmd.url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  let finished = false;
  let retries = 0;
  const finish = (): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    const r: ConnectResult = { type: 'connected', connected, errors, retries, durationMs: lastAt, wallMs: performance.now() - started };
    send(r);
  };
  const settle = (c: Client, error: string | null): void => {
    if (error === null) {
      connected++;
      lastAt = performance.now() - started;
    } else errors[error] = (errors[error] ?? 0) + 1;
    pending--;
    if (pending === 0) finish();
    void c;
  };
  const timer = setTimeout(() => {
    errors['timeout'] = (errors['timeout'] ?? 0) + pending;
    finish();
  }, cmd.timeoutMs);

  const open = (spec: (typeof cmd.clients)[number], attempt = 0): void => {
    const headers: Record<string, string> = { origin: cmd.origin, 'x-frappe-site-name': cmd.site, cookie: `sid=${spec.sid}` };
    const ws = new WebSocket(wsUrl, { headers, perMessageDeflate: false, handshakeTimeout: cmd.timeoutMs });
    const c: Client = { ws, connected: false, warm: false };
    clients.push(c);
    let settled = false;
    const once = (err: string | null): void => {
      if (settled) return;
      settled = true;
      if (err !== null && attempt < cmd.retries && !finished) {
        // Transport-level failure (not a CONNECT_ERROR): retry this client after a pause.
        retries++;
        const i = clients.indexOf(c);
        if (i >= 0) clients.splice(i, 1);
        ws.removeAllListeners();
        ws.on('error', () => undefined);
        ws.terminate();
        setTimeout(() => open(spec, attempt + 1), 250 * (attempt + 1));
        return;
      }
      settle(c, err);
    };
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      if (isBinary) return;
      const text = data.toString();
      const f = parseFrame(text);
      switch (f.kind) {
        case 'event':
          onEventFrame(c, f.name, f.body);
          break;
        case 'ping':
          ws.send(frames.pong);
          break;
        case 'open':
          ws.send(frames.connect(nsp));
          break;
        case 'connect':
          c.connected = true;
          for (const [doctype, name] of spec.docs ?? []) ws.send(frames.event(nsp, ['doc_subscribe', doctype, name]));
          once(null);
          break;
        case 'connect_error':
          if (cmd.retries === 0) attempt = cmd.retries; // storms count refusals; setup phases retry them (backend timeouts under load)
          once(`connect_error: ${f.message}`);
          ws.close();
          break;
        default:
          break;
      }
    });
    ws.on('error', (err: Error & { code?: string }) => once(`ws: ${err.code ?? err.message}`));
    ws.on('close', () => {
      if (c.connected) disconnects++;
      c.connected = false;
      once('closed before connect');
    });
  };

  if (cmd.ratePerSec <= 0) {
    for (const spec of cmd.clients) open(spec);
  } else {
    let i = 0;
    const t0 = performance.now();
    const tick = (): void => {
      const due = Math.min(cmd.clients.length, Math.ceil(((performance.now() - t0) / 1000) * cmd.ratePerSec));
      while (i < due) open(cmd.clients[i++] as (typeof cmd.clients)[number]);
      if (i < cmd.clients.length) setTimeout(tick, 5);
    };
    tick();
  }
}

process.on('message', (raw: unknown) => {
  const cmd = raw as ChildCommand;
  switch (cmd.cmd) {
    case 'connect':
      connectAll(cmd);
      break;
    case 'window':
      hist = new LogHistogram();
      deliveries = 0;
      disconnects = 0;
      seqCounts = cmd.trackSeq > 0 ? new Uint16Array(cmd.trackSeq) : null;
      seqFirst = cmd.trackSeq > 0 ? new Float64Array(cmd.trackSeq) : null;
      seqLatency = cmd.trackSeq > 0 ? new Float64Array(cmd.trackSeq) : null;
      for (const c of clients) c.warm = false;
      windowCpu = process.cpuUsage();
      windowStart = performance.now();
      send({ type: 'ack' });
      break;
    case 'report': {
      const cpu = process.cpuUsage(windowCpu);
      const r: ChildReport = {
        type: 'report',
        deliveries,
        disconnects,
        open: clients.filter((c) => c.connected).length,
        warm: clients.filter((c) => c.warm).length,
        cpuMs: (cpu.user + cpu.system) / 1000,
        wallMs: performance.now() - windowStart,
        hist: hist.toJSON(),
        rss: process.memoryUsage.rss(),
        ...(seqCounts && seqFirst && seqLatency && cmd.withSeq
          ? { seqCounts: Array.from(seqCounts), seqFirst: Array.from(seqFirst), seqLatency: Array.from(seqLatency) }
          : {}),
      };
      send(r);
      break;
    }
    case 'close':
      for (const c of clients) c.ws.terminate();
      setTimeout(() => process.exit(0), 50);
      break;
  }
});
process.on('disconnect', () => process.exit(0));
send({ type: 'ready' });
