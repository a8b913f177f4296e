/** Messages between the primary and its workers (cluster IPC), parsed where they arrive. */
export type PrimaryToWorker =
  | { readonly type: 'gw:metrics'; readonly id: number }
  | { readonly type: 'gw:rooms'; readonly id: number; readonly site: string; readonly room?: string | undefined }
  | { readonly type: 'gw:drain'; readonly drainMs: number };

export type WorkerToPrimary =
  | { readonly type: 'gw:hello'; readonly nodeId: string }
  | { readonly type: 'gw:reply'; readonly id: number; readonly body: unknown }
  | { readonly type: 'gw:status'; readonly connections: number; readonly redis: boolean }
  | { readonly type: 'gw:drained' }
  | { readonly type: 'gw:alive' }
  /** A handshake the primary routed here is over (GATEWAY_ADMISSION_CONCURRENCY: its slot is free). */
  | { readonly type: 'gw:handshake-done' }
  /** Engine.IO sessions opened and closed since the last report (one message per event-loop turn, not one per session). */
  | { readonly type: 'gw:sessions'; readonly opened: number; readonly closed: number };

/** A worker says `gw:alive` this often, from its event loop, whatever else it does. */
export const WORKER_ALIVE_INTERVAL_MS = 250;
/**
 * A worker silent for this long is unresponsive (stopped, or its event loop
 * stalled): new sessions go to the other workers while it is.
 */
export const WORKER_UNRESPONSIVE_MS = 1500;

const PRIMARY_TYPES = new Set(['gw:metrics', 'gw:rooms', 'gw:drain']);
const WORKER_TYPES = new Set(['gw:hello', 'gw:reply', 'gw:status', 'gw:drained', 'gw:alive', 'gw:handshake-done', 'gw:sessions']);

export function asPrimaryMessage(m: unknown): PrimaryToWorker | null {
  return m !== null && typeof m === 'object' && PRIMARY_TYPES.has((m as { type?: string }).type ?? '') ? (m as PrimaryToWorker) : null;
}

export function asWorkerMessage(m: unknown): WorkerToPrimary | null {
  return m !== null && typeof m === 'object' && WORKER_TYPES.has((m as { type?: string }).type ?? '') ? (m as WorkerToPrimary) : null;
}
