/**
 * A small TCP load balancer for the bench rig, standing in for a Kubernetes
 * Service / ingress in front of several gateway hosts: round robin over the
 * hosts' Socket.IO ports, skipping a backend whose readiness probe (the ops
 * port's /readyz, polled) is not 200, and a backend that refuses the
 * connection (it is then out until its next good probe). Not sticky: the
 * bench clients are websocket-only, so one TCP connection is one Socket.IO
 * session and needs no affinity (long-polling would).
 *
 * Layer 4 only: bytes are piped, nothing is parsed. When either side closes,
 * the other is ended (and destroyed if it does not close by itself).
 */
import { fork, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export interface BalancerBackend {
  host: string;
  port: number;
  /** GET this; 200 = ready. Undefined: always eligible (refusals still skip it). */
  readyUrl?: string;
}

export interface BalancerOptions {
  backends: readonly BalancerBackend[];
  /** Default 0 (a free port). */
  port?: number;
  host?: string;
  /** Readiness poll period (default 1000 ms, a Kubernetes readinessProbe with periodSeconds: 1). */
  readyPollMs?: number;
  /** Readiness probe timeout (default 1000 ms). */
  readyTimeoutMs?: number;
  /** Backend connect timeout (default 3000 ms): then the next backend is tried. */
  connectTimeoutMs?: number;
}

export interface BackendStats {
  port: number;
  ready: boolean;
  /** Connections handed to this backend. */
  routed: number;
  /** Connect attempts refused or timed out (the connection was retried on another backend). */
  refused: number;
  /** Proxied connections open right now. */
  active: number;
  /** Readiness transitions (ready <-> not ready). */
  flips: number;
}

export interface BalancerStats {
  accepted: number;
  /** Connections closed at once because no backend was eligible or all refused. */
  noBackend: number;
  backends: BackendStats[];
}

/**
 * Round robin: the first eligible backend at or after `cursor` (mod n) that
 * is not in `exclude`; -1 when none. Pure.
 */
export function pickBackend(eligible: readonly boolean[], cursor: number, exclude: ReadonlySet<number> = new Set()): number {
  const n = eligible.length;
  if (n === 0) return -1;
  const start = ((cursor % n) + n) % n;
  for (let k = 0; k < n; k++) {
    const i = (start + k) % n;
    if (eligible[i] && !exclude.has(i)) return i;
  }
  return -1;
}

interface BackendState extends BackendStats {
  readonly spec: BalancerBackend;
  polling: boolean;
}

/** What a finished probe means; a refused connect marks the backend down until the next good probe. */
function probe(url: string, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}

export class Balancer {
  private readonly server: net.Server;
  private readonly states: BackendState[];
  private cursor = 0;
  private accepted = 0;
  private noBackend = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly open = new Set<net.Socket>();

  private constructor(private readonly o: BalancerOptions) {
    this.states = o.backends.map((spec) => ({
      spec,
      port: spec.port,
      // Unknown until the first probe: not ready (a starting host listens before it can serve).
      ready: spec.readyUrl === undefined,
      routed: 0,
      refused: 0,
      active: 0,
      flips: 0,
      polling: false,
    }));
    this.server = net.createServer({ pauseOnConnect: true, noDelay: true }, (c) => this.accept(c));
  }

  static async start(o: BalancerOptions): Promise<Balancer> {
    const b = new Balancer(o);
    await b.pollOnce();
    b.timer = setInterval(() => void b.pollOnce(), o.readyPollMs ?? 1000);
    await new Promise<void>((resolve, reject) => {
      b.server.once('error', reject);
      b.server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => {
        b.server.off('error', reject);
        resolve();
      });
    });
    return b;
  }

  get port(): number {
    const a = this.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  stats(): BalancerStats {
    return {
      accepted: this.accepted,
      noBackend: this.noBackend,
      backends: this.states.map(({ port, ready, routed, refused, active, flips }) => ({ port, ready, routed, refused, active, flips })),
    };
  }

  /** One readiness round over every backend (a probe still in flight is not doubled). */
  async pollOnce(): Promise<void> {
    await Promise.all(
      this.states.map(async (s) => {
        if (s.spec.readyUrl === undefined || s.polling) return;
        s.polling = true;
        try {
          this.setReady(s, await probe(s.spec.readyUrl, this.o.readyTimeoutMs ?? 1000));
        } finally {
          s.polling = false;
        }
      }),
    );
  }

  private setReady(s: BackendState, ready: boolean): void {
    if (s.ready !== ready) s.flips++;
    s.ready = ready;
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    this.open.add(client);
    client.once('close', () => this.open.delete(client));
    client.on('error', () => client.destroy());
    this.route(client, new Set());
  }

  private route(client: net.Socket, tried: Set<number>): void {
    if (client.destroyed) return;
    const i = pickBackend(
      this.states.map((s) => s.ready),
      this.cursor,
      tried,
    );
    if (i < 0) {
      this.noBackend++;
      client.destroy();
      return;
    }
    this.cursor = i + 1;
    const s = this.states[i] as BackendState;
    const up = net.connect({ host: s.spec.host, port: s.spec.port, noDelay: true });
    this.open.add(up);
    let connected = false;
    const timer = setTimeout(() => up.destroy(new Error('connect timeout')), this.o.connectTimeoutMs ?? 3000);
    up.once('connect', () => {
      connected = true;
      clearTimeout(timer);
      s.routed++;
      s.active++;
      client.pipe(up);
      up.pipe(client);
      client.resume();
    });
    up.on('error', () => {
      clearTimeout(timer);
      if (!connected) {
        // Refused (host down or stopped accepting) or timed out: out until its next good probe; try the next one.
        s.refused++;
        this.setReady(s, false);
        tried.add(i);
        up.destroy();
        this.route(client, tried);
        return;
      }
      client.destroy();
    });
    up.once('close', () => {
      clearTimeout(timer);
      this.open.delete(up);
      if (!connected) return;
      s.active--;
      endThenDestroy(client);
    });
    client.once('close', () => {
      if (connected) endThenDestroy(up);
      else up.destroy();
    });
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const s of this.open) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Half-close, then force the close if the peer does not finish it. */
function endThenDestroy(s: net.Socket): void {
  if (s.destroyed) return;
  s.end();
  setTimeout(() => s.destroy(), 2000).unref();
}

/** Orchestrator side: the balancer in a child process (bench/lib/balancer-child.ts). */
export class BalancerProcess {
  private constructor(
    private readonly proc: ChildProcess,
    readonly port: number,
  ) {}

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(o: BalancerOptions): Promise<BalancerProcess> {
    const proc = fork(path.join(__dirname, 'balancer-child.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    try {
      await nextMessage(proc);
      proc.send({ type: 'start', options: o });
      const r = await nextMessage(proc);
      if (r.type !== 'listening' || r.port === undefined) throw new Error(`balancer: ${r.message ?? r.type}`);
      return new BalancerProcess(proc, r.port);
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
  }

  async stats(): Promise<BalancerStats> {
    const p = nextMessage(this.proc);
    this.proc.send({ type: 'stats' });
    const r = await p;
    if (!r.stats) throw new Error('balancer: no stats');
    return r.stats;
  }

  close(): void {
    this.proc.kill('SIGKILL');
  }
}

interface ChildMessage {
  type: string;
  port?: number;
  stats?: BalancerStats;
  message?: string;
}

function nextMessage(proc: ChildProcess): Promise<ChildMessage> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`balancer exited (${String(code)})`));
    proc.once('exit', onExit);
    proc.once('message', (m) => {
      proc.off('exit', onExit);
      resolve(m as ChildMessage);
    });
  });
}
