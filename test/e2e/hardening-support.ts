/**
 * Memory measurements of gateway processes for the hardening suites: RSS from
 * /proc, and a full garbage collection forced from outside through the V8
 * inspector (the gateway runs with `--inspect=127.0.0.1:0`; every process,
 * workers included, logs its inspector URL on stderr). Measuring after a
 * forced GC separates leaks from garbage not collected yet.
 */
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import type { GatewayHandle } from '../harness';

export const INSPECT_ARGS = ['--inspect=127.0.0.1:0'];

export function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** Inspector URLs the gateway's processes logged, in start order (primary first). */
export function inspectorUrls(gw: GatewayHandle): string[] {
  const out: string[] = [];
  for (const line of gw.logs) {
    const m = /Debugger listening on (ws:\/\/\S+)/.exec(line);
    if (m?.[1]) out.push(m[1]);
  }
  return out;
}

/** Forces a full GC in the process behind `url`; resolves with its heap used (MB) afterwards. */
export function collectGarbage(url: string): Promise<number> {
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
    ws.on('open', () => {
      ws.send(JSON.stringify({ id: 1, method: 'HeapProfiler.collectGarbage' }));
      ws.send(JSON.stringify({ id: 2, method: 'Runtime.getHeapUsage' }));
    });
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw)) as { id?: number; result?: { usedSize?: number } };
      if (msg.id !== 2) return;
      clearTimeout(timer);
      ws.close();
      resolve((msg.result?.usedSize ?? NaN) / (1024 * 1024));
    });
  });
}

/** Forces a GC in every process of the gateway; resolves with their heap used (MB), in inspector order. */
export async function collectEverywhere(gw: GatewayHandle): Promise<number[]> {
  const out: number[] = [];
  for (const url of inspectorUrls(gw)) out.push(await collectGarbage(url));
  return out;
}
