/** Orchestrator side of the load generators: forks the child processes, splits clients among them, merges reports. */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { ChildCommand, ChildReport, ClientSpec, ConnectResult } from './loadgen-protocol';
import { LogHistogram } from './stats';

/** A generator process busier than this fraction of one core during a window is considered saturated. */
export const SATURATION_CPU = 0.9;

export interface MergedReport {
  deliveries: number;
  disconnects: number;
  open: number;
  warm: number;
  hist: LogHistogram;
  /** Busiest generator process: CPU fraction of one core during the window. */
  maxCpuFraction: number;
  cpuFractions: number[];
  saturated: boolean;
  seqCounts?: number[];
  seqFirst?: number[];
  seqLatency?: number[];
}

export interface MergedConnect {
  connected: number;
  errors: Record<string, number>;
  retries: number;
  durationMs: number;
}

class Child {
  private waiters: ((m: unknown) => void)[] = [];
  constructor(readonly proc: ChildProcess) {
    proc.setMaxListeners(0);
    proc.on('message', (m: unknown) => {
      const w = this.waiters.shift();
      if (w) w(m);
    });
  }
  next<T>(timeoutMs = 600_000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('load generator did not answer')), timeoutMs);
      this.waiters.push((m) => {
        clearTimeout(t);
        resolve(m as T);
      });
      this.proc.once('exit', (code) => reject(new Error(`load generator exited (${String(code)})`)));
    });
  }
  send(c: ChildCommand): void {
    this.proc.send(c);
  }
}

export class LoadGen {
  private constructor(private readonly children: Child[]) {}

  get pids(): number[] {
    return this.children.map((c) => c.proc.pid ?? 0);
  }

  static async start(processes: number): Promise<LoadGen> {
    const entry = path.join(__dirname, 'loadgen-child.ts');
    const children: Child[] = [];
    for (let i = 0; i < processes; i++) {
      const proc = fork(entry, [], {
        execArgv: ['--import', 'tsx', '--max-old-space-size=2048'],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const child = new Child(proc);
      children.push(child);
    }
    await Promise.all(children.map((c) => c.next()));
    return new LoadGen(children);
  }

  /** Opens every client (round-robin over the processes); resolves when all settled. ratePerSec 0 = all at once. */
  async connect(opts: {
    url: string;
    site: string;
    origin: string;
    clients: ClientSpec[];
    timeoutMs?: number;
    ratePerSec?: number;
    retries?: number;
  }): Promise<MergedConnect> {
    const n = this.children.length;
    const parts: ClientSpec[][] = this.children.map(() => []);
    opts.clients.forEach((c, i) => parts[i % n]?.push(c));
    const waits = this.children.map((c) => c.next<ConnectResult>());
    this.children.forEach((c, i) =>
      c.send({
        cmd: 'connect',
        url: opts.url,
        site: opts.site,
        origin: opts.origin,
        clients: parts[i] ?? [],
        timeoutMs: opts.timeoutMs ?? 60_000,
        ratePerSec: (opts.ratePerSec ?? 0) / n,
        retries: opts.retries ?? 3,
      }),
    );
    const results = await Promise.all(waits);
    const errors: Record<string, number> = {};
    for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    return {
      connected: results.reduce((a, r) => a + r.connected, 0),
      errors,
      retries: results.reduce((a, r) => a + r.retries, 0),
      durationMs: Math.max(...results.map((r) => r.durationMs)),
    };
  }

  /** Starts a measurement window: counters, histogram and CPU baseline reset. trackSeq > 0 records per-sequence arrival. */
  async window(trackSeq = 0): Promise<void> {
    const waits = this.children.map((c) => c.next());
    for (const c of this.children) c.send({ cmd: 'window', trackSeq });
    await Promise.all(waits);
  }

  async report(withSeq = false): Promise<MergedReport> {
    const waits = this.children.map((c) => c.next<ChildReport>());
    for (const c of this.children) c.send({ cmd: 'report', withSeq });
    const rs = await Promise.all(waits);
    const hist = new LogHistogram();
    for (const r of rs) hist.merge(r.hist);
    const cpuFractions = rs.map((r) => (r.wallMs > 0 ? r.cpuMs / r.wallMs : 0));
    const out: MergedReport = {
      deliveries: rs.reduce((a, r) => a + r.deliveries, 0),
      disconnects: rs.reduce((a, r) => a + r.disconnects, 0),
      open: rs.reduce((a, r) => a + r.open, 0),
      warm: rs.reduce((a, r) => a + r.warm, 0),
      hist,
      cpuFractions,
      maxCpuFraction: Math.max(...cpuFractions),
      saturated: cpuFractions.some((f) => f >= SATURATION_CPU),
    };
    if (withSeq) {
      const len = rs[0]?.seqCounts?.length ?? 0;
      const counts = new Array<number>(len).fill(0);
      const first = new Array<number>(len).fill(0);
      const lat = new Array<number>(len).fill(NaN);
      for (const r of rs) {
        for (let i = 0; i < len; i++) {
          const c = r.seqCounts?.[i] ?? 0;
          if (c > 0) {
            const f = r.seqFirst?.[i] ?? 0;
            if (counts[i] === 0 || f < (first[i] as number)) {
              first[i] = f;
              lat[i] = r.seqLatency?.[i] ?? NaN;
            }
            counts[i] = (counts[i] as number) + c;
          }
        }
      }
      out.seqCounts = counts;
      out.seqFirst = first;
      out.seqLatency = lat;
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
            const t = setTimeout(() => {
              c.proc.kill('SIGKILL');
              resolve();
            }, 3000);
            c.proc.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            try {
              c.send({ cmd: 'close' });
            } catch {
              c.proc.kill('SIGKILL');
            }
          }),
      ),
    );
  }
}
