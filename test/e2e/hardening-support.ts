/**
 * Memory measurements of gateway processes for the hardening suites: RSS from
 * /proc, and a full garbage collection forced from outside through the V8
 * inspector (the gateway runs with `--inspect=127.0.0.1:0`; every process,
 * workers included, logs its inspector URL on stderr). Measuring after a
 * forced GC separates leaks from garbage not collected yet.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { pollUntil, startGateway, type GatewayHandle, type StartGatewayOptions } from '../harness';

export const INSPECT_ARGS = ['--inspect=127.0.0.1:0'];

export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Inspector URLs the gateway's processes logged, in start order (primary first). */
export function inspectorUrls(gw: GatewayHandle): string[] {
  const out: string[] = [];
  // Two processes' stderr lines can end up interleaved on one line: every match counts.
  for (const line of gw.logs) {
    for (const m of line.matchAll(/Debugger listening on (ws:\/\/[^\s"]+?\/[0-9a-f-]{36})/g)) if (m[1]) out.push(m[1]);
  }
  return out;
}

/** process.memoryUsage() of a gateway process, in MB. */
export interface MemoryMb {
  readonly pid: number;
  readonly rss: number;
  readonly heapUsed: number;
  /** Buffers and other memory outside the JS heap (socket write buffers live here). */
  readonly external: number;
}

/**
 * Full GCs from a setImmediate callback of the process' own event loop. An
 * inspector command is served through a V8 interrupt, in the middle of
 * whatever JS is running: a GC requested that way (HeapProfiler.collectGarbage)
 * keeps everything the interrupted code holds on its stack, which under a
 * flood is a whole batch and its socket buffers (10-20 MB seen). Twice:
 * Buffers a collection frees are unaccounted (external) by a background
 * sweeper after it returns.
 */
const GC_EXPRESSION = `new Promise((resolve) => setImmediate(() => {
  const req = process.mainModule.require;
  req('v8').setFlagsFromString('--expose-gc');
  const gc = req('vm').runInNewContext('gc');
  gc();
  setImmediate(() => {
    gc();
    resolve('');
  });
}))`;

/**
 * Forces a full GC in the process behind `url`; resolves with its memory
 * usage afterwards. The event-loop GCs above, then the inspector's own
 * (a low-memory notification: V8 also gives free pages back to the OS, so
 * RSS falls as far as the allocator lets it), then the reading.
 */
export function collectGarbage(url: string): Promise<MemoryMb> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`inspector ${url} did not answer`));
    }, 10_000);
    ws.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const memory = 'JSON.stringify({ pid: process.pid, ...process.memoryUsage() })';
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, method: 'Runtime.evaluate', params: { expression: GC_EXPRESSION, awaitPromise: true } }));
    });
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw)) as { id?: number; result?: { result?: { value?: string } } };
      if (msg.id === 1) {
        ws.send(JSON.stringify({ id: 2, method: 'HeapProfiler.collectGarbage' }));
        ws.send(JSON.stringify({ id: 3, method: 'Runtime.evaluate', params: { expression: memory } }));
      }
      if (msg.id !== 3) return;
      clearTimeout(timer);
      ws.close();
      const u = JSON.parse(msg.result?.result?.value ?? '{}') as { pid?: number; rss?: number; heapUsed?: number; external?: number };
      const mb = (n: number | undefined): number => (n ?? NaN) / (1024 * 1024);
      resolve({ pid: u.pid ?? NaN, rss: mb(u.rss), heapUsed: mb(u.heapUsed), external: mb(u.external) });
    });
  });
}

/** Forces a GC in every process of the gateway; resolves with their memory usage, in inspector order (primary first). */
export async function collectEverywhere(gw: GatewayHandle): Promise<MemoryMb[]> {
  return collectAt(inspectorUrls(gw));
}

/** `collectEverywhere` over inspector URLs read once (the gateway's log buffer keeps its last lines only). */
export async function collectAt(urls: readonly string[]): Promise<MemoryMb[]> {
  const out: MemoryMb[] = [];
  for (const url of urls) out.push(await collectGarbage(url));
  return out;
}

/** Heap used after a forced GC, per process (MB). */
export async function heapAfterGc(gw: GatewayHandle): Promise<number[]> {
  return (await collectEverywhere(gw)).map((m) => m.heapUsed);
}

/** Least-squares slope of ys over x = 0..n-1 (NaN for fewer than 2 points). */
export function slope(ys: readonly number[]): number {
  const n = ys.length;
  if (n < 2) return NaN;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  });
  return num / den;
}

/** Whether `port` can be listened on at 127.0.0.1 right now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * The first of `count` consecutive ports that are free, below Linux's
 * ephemeral range (32768-60999): on a machine where other runs hold tens of
 * thousands of connections, the ports next to an ephemeral one are taken
 * more often than not.
 */
async function inspectorBasePort(count: number): Promise<number> {
  for (let tries = 0; tries < 50; tries++) {
    const base = 20_000 + Math.floor(Math.random() * (12_000 - count));
    let free = true;
    for (let p = base; p < base + count && free; p++) free = await portFree(p);
    if (free) return base;
  }
  return 0;
}

/**
 * `startGateway` with an inspector in every process. Node gives forked
 * workers the primary's inspector port + 1, + 2, ...: the primary gets a
 * port with its neighbours free (`inspectorBasePort`, room for respawned
 * workers too). One of them can still be taken meanwhile, and that worker
 * then runs without an inspector: a new gateway gets new ports, started
 * again (up to 5 times) until every process logged its inspector URL.
 */
export async function startInspectedGateway(
  options: StartGatewayOptions & { workers: number },
): Promise<{ gw: GatewayHandle; urls: string[] }> {
  for (let attempt = 1; ; attempt++) {
    const base = await inspectorBasePort(options.workers + 8);
    const gw = await startGateway({ ...options, nodeArgs: [`--inspect=127.0.0.1:${base}`, ...(options.nodeArgs ?? [])] });
    // Ready does not wait for every worker's inspector line: give them a moment.
    const want = options.workers + 1;
    const urls = await pollUntil(() => (inspectorUrls(gw).length >= want ? inspectorUrls(gw) : undefined), {
      timeoutMs: 10_000,
      intervalMs: 50,
      description: 'inspector URLs',
    }).catch(() => inspectorUrls(gw));
    if (urls.length === want) return { gw, urls };
    await gw.close();
    if (attempt === 5) throw new Error(`expected ${options.workers + 1} inspector URLs in the gateway log, found ${urls.length}`);
  }
}
