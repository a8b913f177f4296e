import { every } from '../shared/clock';
import cluster, { type Worker } from 'node:cluster';
import { isAscii } from 'node:buffer';
import type { Server, Socket } from 'node:net';
import {
  AdmissionQueue,
  isHandshake,
  refuseRaw,
  requestLineParts,
  type Admission,
  type HandshakeSlots,
  type QueueResult,
} from '../shared/admission';
import { asWorkerMessage } from './ipc';
import { randomBase64url } from '../shared/random-pool';
import { handleInFlight, onHandleAcknowledged, stopReading } from '../shared/io-internals';

/**
 * Sticky routing of Engine.IO sessions to the workers of this host. Workers
 * keep `setupWorker` of `@socket.io/sticky` and its IPC messages; this
 * replaces its `setupMaster` for two reasons:
 *  - The library learns which worker owns a session from a message the worker
 *    sends after answering the handshake, so the client's next request could
 *    arrive first and land on another worker ("Session ID unknown", which the
 *    client reports as "xhr post error"). Here the session id names its
 *    worker (`sessionIdFor`), so routing needs no shared state.
 *  - A socket handed to a worker stays readable in the primary until the
 *    worker acknowledges it, and Node drops what it reads there; a WebSocket
 *    client's first frame (the CONNECT packet) was sometimes lost that way.
 *    The primary stops reading once it has the request line: everything
 *    after the chunks it forwards is read by the worker.
 * The public port is a plain net.Server: an http.Server would give every
 * connection an HTTP parser and request objects in the primary, which only
 * needs the request line.
 */

/** Engine.IO session ids are `<worker id, base 36>.<random>`. */
const SID_RE = /[?&]sid=([0-9a-z]+)\./;
/** Routed handshakes stop counting towards a worker's load after this (they became sessions, or failed). */
const PENDING_RESET_MS = 5000;
/** A request line longer than this is not ours to wait for. */
const MAX_HEAD_BYTES = 8192;
/** Bytes a connection waiting for a slot may send before its handshake is answered; beyond it the connection is dropped. */
const MAX_WAITING_BYTES = 64 * 1024;
/**
 * A connection that has not sent its request line by then is closed: without
 * http.Server's headersTimeout nothing else would ever free it in the primary.
 */
export const REQUEST_LINE_TIMEOUT_MS = 30_000;

export interface StickyMasterOptions {
  /** Called for each connection closed because its request line never came. */
  onRequestLineTimeout?: () => void;
  requestLineTimeoutMs?: number;
  /**
   * Admission control of this host's new connections: a handshake without a
   * token is answered HTTP 503 here, before any worker sees it.
   */
  admission?: Admission;
  /**
   * Handshakes in flight per worker (GATEWAY_ADMISSION_CONCURRENCY): a new
   * session goes only to a worker with a free slot, else it is refused like
   * `admission`; the worker reports each handshake over (`gw:handshake-done`).
   */
  slots?: HandshakeSlots;
  /**
   * Handshakes that wait for a free slot instead of the 503 at once
   * (GATEWAY_ADMISSION_QUEUE / _QUEUE_MS; with `slots` only): at most `limit`
   * connections for at most `maxWaitMs`, handed over oldest first.
   */
  queue?: { limit: number; maxWaitMs: number };
  /** Called for each handshake that left the queue (how), and with the queue's length after any change. */
  onQueue?: (result: QueueResult | 'waiting', length: number) => void;
  /** Called for each handshake refused by `admission` or `slots` (a full queue or an expired wait included). */
  onAdmissionRefused?: () => void;
  /** False for a worker that stopped answering: new sessions go to the others while any is responsive. */
  responsive?: (workerId: number) => boolean;
}

/** A session id that tells the primary which worker owns it (set as the worker's Engine.IO `generateId`). */
export function sessionIdFor(workerId: number): string {
  return `${workerId.toString(36)}.${randomBase64url(15)}`;
}

/** The worker id named by the request line's `sid`, if any. */
export function workerIdOfRequest(head: string): number | undefined {
  const eol = head.indexOf('\r\n');
  const m = SID_RE.exec(eol === -1 ? head : head.slice(0, eol));
  return m?.[1] ? parseInt(m[1], 36) : undefined;
}

/**
 * Where a new session goes: the least loaded responsive worker, else the
 * least loaded one. A stopped or stalled worker still has its IPC channel:
 * without the preference, a client that gave up on it (ping timeout) could
 * be routed straight back to it.
 */
export function leastLoaded<W extends { id: number }>(
  workers: readonly W[],
  load: (w: W) => number,
  responsive: (id: number) => boolean,
): W | undefined {
  let best: W | undefined;
  let bestResponsive = false;
  for (const w of workers) {
    const r = responsive(w.id);
    if (best === undefined || (r && !bestResponsive) || (r === bestResponsive && load(w) < load(best))) {
      best = w;
      bestResponsive = r;
    }
  }
  return best;
}

/** A connection on its way to a worker: the bytes read so far, and whether it holds an admission slot. */
interface Outgoing {
  readonly socket: Socket;
  readonly data: Buffer;
  readonly gated: boolean;
}

/** A handshake waiting for a slot in the primary: its connection, the bytes read so far. */
interface Waiting {
  socket: Socket;
  data(): Buffer;
  /** Stops watching the connection (it leaves the queue). */
  unhook(): void;
}

export function setupStickyMaster(server: Server, opts: StickyMasterOptions = {}): void {
  const headTimeoutMs = opts.requestLineTimeoutMs ?? REQUEST_LINE_TIMEOUT_MS;
  const admission = opts.admission?.enabled ? opts.admission : undefined;
  const slots = opts.slots?.enabled ? opts.slots : undefined;
  const refuse = (socket: Socket): void => {
    opts.onAdmissionRefused?.();
    refuseRaw(socket);
  };
  const queue =
    slots && opts.queue
      ? new AdmissionQueue<Waiting>(opts.queue.limit, opts.queue.maxWaitMs, (w) => {
          w.unhook();
          opts.onQueue?.('expired', queue?.length ?? 0);
          refuse(w.socket);
        })
      : undefined;
  const waiting = queue?.enabled ? queue : undefined;
  const handshake = (head: string): boolean => {
    const line = requestLineParts(head);
    return line !== undefined && isHandshake(line.method, line.target);
  };
  // Open sessions per worker (reported by setupWorker), plus handshakes routed
  // to it that it has not reported yet: a burst of new clients would otherwise
  // all see the same stale counts and land on one worker. Handshakes that never
  // became sessions stop counting at the next reset.
  const sessions = new Map<number, number>();
  const pending = new Map<number, number>();
  const resetPending = every(PENDING_RESET_MS, () => pending.clear(), { ref: false });
  server.once('close', () => resetPending.stop());
  cluster.on('message', (worker: Worker, m: unknown) => {
    const type = (m as { type?: unknown } | null)?.type;
    const wm = asWorkerMessage(m);
    if (slots && wm?.type === 'gw:handshake-done') {
      slots.release(worker.id);
      drainQueue();
    } else if (wm?.type === 'gw:sessions') {
      sessions.set(worker.id, Math.max(0, (sessions.get(worker.id) ?? 0) + wm.opened - wm.closed));
      pending.set(worker.id, Math.max(0, (pending.get(worker.id) ?? 0) - wm.opened));
    } else if (type === 'sticky:connection') {
      sessions.set(worker.id, (sessions.get(worker.id) ?? 0) + 1);
      pending.set(worker.id, Math.max(0, (pending.get(worker.id) ?? 0) - 1));
    } else if (type === 'sticky:disconnection') sessions.set(worker.id, Math.max(0, (sessions.get(worker.id) ?? 0) - 1));
  });
  cluster.on('exit', (worker) => {
    sessions.delete(worker.id);
    pending.delete(worker.id);
    slots?.forget(worker.id);
  });
  // A replacement worker has free slots.
  cluster.on('online', () => drainQueue());
  server.once('close', () => {
    for (const w of waiting?.clear() ?? []) {
      w.unhook();
      refuseRaw(w.socket);
    }
  });

  const load = (w: Worker): number => (sessions.get(w.id) ?? 0) + (pending.get(w.id) ?? 0);
  const live = (w: Worker | undefined): w is Worker => w !== undefined && w.isConnected();
  const pick = (head: string): Worker | undefined => {
    const id = workerIdOfRequest(head);
    const owner = id === undefined ? undefined : cluster.workers?.[id];
    // A session of a worker that died is unknown everywhere: any worker answers 400 and the client reconnects.
    if (live(owner)) return owner;
    const best = leastLoaded(Object.values(cluster.workers ?? {}).filter(live), load, opts.responsive ?? (() => true));
    if (best && id === undefined) pending.set(best.id, (pending.get(best.id) ?? 0) + 1);
    return best;
  };
  /** The least loaded worker with a free slot, its slot taken; undefined when none has one. */
  const takeSlot = (workers: Worker[]): Worker | undefined => {
    const best = leastLoaded(
      workers.filter((w) => slots?.hasRoom(w.id) ?? true),
      load,
      opts.responsive ?? (() => true),
    );
    if (best) {
      pending.set(best.id, (pending.get(best.id) ?? 0) + 1);
      slots?.take(best.id);
    }
    return best;
  };
  /**
   * Where a handshake goes: a worker with a free slot (the least loaded of
   * those) once it has a token of the host's bucket; null to refuse it;
   * 'wait' when it has its token but every slot is taken (or others already
   * wait for one: slots go oldest first).
   */
  const admit = (head: string): Worker | undefined | null | 'wait' => {
    const workers = Object.values(cluster.workers ?? {}).filter(live);
    const queued = (waiting?.length ?? 0) > 0;
    // No worker at all is not a herd: that answer comes below.
    const noSlot = slots !== undefined && workers.length > 0 && (queued || !workers.some((w) => slots.hasRoom(w.id)));
    // Without a queue, refused before it spends a token.
    if (noSlot && !waiting) return null;
    if (admission && !admission.admit()) return null;
    if (!slots) return pick(head);
    return noSlot ? 'wait' : takeSlot(workers);
  };
  /** Slots freed: the oldest waiting handshakes go to the workers that have one. */
  function drainQueue(): void {
    if (!waiting) return;
    while (waiting.length > 0) {
      const worker = takeSlot(Object.values(cluster.workers ?? {}).filter(live));
      if (!worker) return;
      const w = waiting.shift();
      if (!w) {
        // Everything left had expired: the slot goes back.
        slots?.release(worker.id);
        pending.set(worker.id, Math.max(0, (pending.get(worker.id) ?? 0) - 1));
        return;
      }
      w.unhook();
      opts.onQueue?.('admitted', waiting.length);
      stopReading(w.socket);
      handOver(worker, w.socket, w.data(), true);
    }
  }
  /** Holds a handshake until a slot frees (`drainQueue`) or its wait expires; false = the queue is full or off. */
  const hold = (socket: Socket, first: Buffer): boolean => {
    if (!waiting) return false;
    const chunks = [first];
    let size = first.length;
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= MAX_WAITING_BYTES) return;
      left();
      socket.destroy();
    };
    const left = (): void => {
      if (!waiting.remove(w)) return;
      w.unhook();
      opts.onQueue?.('closed', waiting.length);
    };
    const w: Waiting = {
      socket,
      data: () => (chunks.length === 1 ? first : Buffer.concat(chunks)),
      unhook: () => {
        socket.off('data', onData);
        socket.off('close', left);
      },
    };
    if (!waiting.add(w)) {
      opts.onQueue?.('full', waiting.length);
      return false;
    }
    socket.on('data', onData);
    socket.once('close', left);
    opts.onQueue?.('waiting', waiting.length);
    return true;
  };
  /**
   * Hand-overs waiting for their worker to acknowledge the previous handle.
   * Node's IPC sends one handle per channel at a time and re-sends its whole
   * queue at each acknowledgement (quadratic in a burst, see
   * `handleInFlight`): here Node gets the next handle only once the previous
   * one was acknowledged, so each hand-over is sent once.
   */
  const outboxes = new Map<number, { items: Outgoing[]; head: number }>();
  const outbox = (worker: Worker): { items: Outgoing[]; head: number } => {
    let o = outboxes.get(worker.id);
    if (!o) {
      const created = { items: [] as Outgoing[], head: 0 };
      outboxes.set(worker.id, (o = created));
      onHandleAcknowledged(worker.process, () => pump(worker, created));
    }
    return o;
  };
  /** Sends queued hand-overs to `worker` while none of its handles waits for an acknowledgement. */
  const pump = (worker: Worker, o: { items: Outgoing[]; head: number }): void => {
    while (o.head < o.items.length && !handleInFlight(worker.process)) {
      const next = o.items[o.head] as Outgoing;
      o.items[o.head++] = undefined as unknown as Outgoing;
      if (o.head === o.items.length) {
        o.items.length = 0;
        o.head = 0;
      }
      send(worker, next);
    }
  };
  cluster.on('exit', (worker) => {
    const o = outboxes.get(worker.id);
    outboxes.delete(worker.id);
    // Never sent: the worker will not report these handshakes over (its slots are forgotten with it).
    for (let i = o?.head ?? 0; o && i < o.items.length; i++) o.items[i]?.socket.destroy();
  });
  const send = (worker: Worker, { socket, data, gated }: Outgoing): void => {
    // Gone while it waited (Node would send the message without its handle).
    if (socket.destroyed) {
      if (gated) {
        slots?.release(worker.id);
        drainQueue();
      }
      return;
    }
    // The worker side rebuilds the bytes with `Buffer.from(data)`. IPC sends
    // JSON, where a Buffer becomes {type:'Buffer', data:[...]}: a number per
    // byte, the most expensive part of a hand-over in a connect storm. An
    // all-ASCII head goes as a string (UTF-8 of ASCII is the same bytes);
    // anything else as the Buffer, so a multi-byte character cut at the
    // chunk boundary survives.
    const payload = isAscii(data) ? data.toString('latin1') : data;
    worker.send({ type: 'sticky:connection', data: payload }, socket, { keepOpen: false }, (err: Error | null) => {
      if (err) {
        // Never reached the worker, which will not report it over.
        if (gated) {
          slots?.release(worker.id);
          drainQueue();
        }
        socket.destroy();
        return;
      }
      // Node detaches the handle (and already uncounted the connection in
      // server._connections) but never ends the JS socket: it would emit no
      // 'close', so whoever tracks open sockets here would keep it, and
      // everything it references, for good. destroy() would uncount it a
      // second time; 'close' is the end of its life in this process.
      socket.emit('close', false);
    });
  };
  /** Gives the connection and the bytes read so far to `worker` (now, or once its previous handle is acknowledged). */
  const handOver = (worker: Worker, socket: Socket, data: Buffer, gated: boolean): void => {
    const o = outbox(worker);
    if (o.head === o.items.length && !handleInFlight(worker.process)) {
      send(worker, { socket, data, gated });
      return;
    }
    o.items.push({ socket, data, gated });
  };

  server.on('connection', (socket: Socket) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      if (socket.destroyed) return;
      chunks.push(chunk);
      size += chunk.length;
      const data = chunks.length === 1 ? chunk : Buffer.concat(chunks);
      if (data.indexOf('\r\n') === -1 && size < MAX_HEAD_BYTES) return;
      socket.off('data', onData);
      socket.setTimeout(0);
      const head = data.toString('latin1');
      const gated = (admission !== undefined || slots !== undefined) && handshake(head);
      const worker = gated ? admit(head) : pick(head);
      if (worker === 'wait') {
        if (!hold(socket, data)) refuse(socket);
        else drainQueue();
        return;
      }
      if (worker === null) {
        refuse(socket);
        return;
      }
      stopReading(socket);
      if (!worker) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
        return;
      }
      handOver(worker, socket, data, gated);
    };
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
    socket.setTimeout(headTimeoutMs, () => {
      opts.onRequestLineTimeout?.();
      socket.destroy();
    });
  });
}
