/**
 * Every access to a private internal of socket.io, engine.io, ws, the Redis
 * adapter and Node's net sockets, behind typed functions. Nothing else in
 * src/ reaches past a public API: when an upgrade moves one of these, this
 * module and its contract test (test/integration/io-internals.test.ts) are
 * the only places to look, and the test fails first.
 *
 * Why each is used (the public APIs offer no equivalent):
 *  - `Server._nsps`, `ParentNamespace.children`: find or remove a dynamic
 *    site namespace without creating one (io.of() would create it), and
 *    list the site namespaces for room-less delivery.
 *  - `engine.io Socket.request`: the handshake's IncomingMessage is kept for
 *    the connection's lifetime (parser, raw headers, socket references);
 *    replacing it with the three fields handlers read saves idle memory.
 *    The same request is also kept by the `close` listener engine.io's
 *    WebSocketResponse puts on the TCP socket (ws `_socket`), removed too.
 *  - ws `Sender.sendFrame`, engine.io `writeBuffer`/`upgrading`/`transport`:
 *    the worker fast path writes one pre-built WebSocket frame to every idle
 *    WebSocket of a room (the direct write), skipping engine.io's per-packet
 *    bookkeeping; net `Socket.cork` through ws `_socket` holds a backlog's
 *    site broadcasts for one write per connection. GATEWAY_FAST_PATH=off
 *    turns it off.
 *  - adapter `encoder`, `_encode`, `apply`, `onRawMessage`, `channel`,
 *    `socket.client.writeToEngine`: deliver the leader's pre-encoded packets
 *    without decoding and re-encoding them.
 *  - net `Socket._handle.readStop()`: the sticky primary stops reading a
 *    connection once it has the request line, so no byte is read (and lost)
 *    in the primary after the socket is handed to a worker.
 *  - Node's IPC `ChildProcess._handleQueue` and its `internalMessage` event
 *    (NODE_HANDLE_ACK): Node sends one handle at a time per channel and
 *    queues everything sent meanwhile; at each acknowledgement it re-sends
 *    the whole queue, which re-queues all but the first handle, so a burst of
 *    N hand-overs costs O(N^2) in the primary (`target._send`, 44% of the
 *    primary's CPU in a 10,000-client storm). The sticky primary keeps its
 *    own queue and gives Node a handle only when none is unacknowledged.
 *
 * The versions these were verified against are pinned exactly in
 * package.json and listed in VERIFIED_VERSIONS; the contract test compares
 * them with node_modules.
 */
import type { Socket as NetSocket } from 'node:net';
import type { Namespace, Server, Socket } from 'socket.io';
import type { Adapter, BroadcastOptions } from 'socket.io-adapter';

export const VERIFIED_VERSIONS = {
  'socket.io': '4.8.4',
  'engine.io': '6.6.12',
  ws: '8.21.3',
  'socket.io-adapter': '2.5.8',
  '@socket.io/redis-adapter': '8.3.0',
  '@socket.io/sticky': '1.0.4',
} as const;

interface ServerInternals {
  _nsps: Map<string, Namespace>;
}

interface ParentInternals {
  children: Set<Namespace>;
}

/** The namespace registered under `name`, without creating it (io.of() would). */
export function registeredNamespace(io: Server, name: string): Namespace | undefined {
  return (io as unknown as ServerInternals)._nsps.get(name);
}

/** Every namespace of the server, the main one included. */
export function allNamespaces(io: Server): IterableIterator<Namespace> {
  return (io as unknown as ServerInternals)._nsps.values();
}

/** The child namespaces a dynamic (parent) namespace created. */
export function childNamespaces(parent: Namespace): Set<Namespace> {
  return (parent as unknown as ParentInternals).children;
}

/**
 * Forgets a child namespace: removed from the server's registry and its
 * parent's children, so the next handshake for it creates a fresh one.
 * Returns false when `nsp` is not the registered one (already replaced).
 */
export function unregisterNamespace(io: Server, parent: Namespace, nsp: Namespace): boolean {
  const registry = (io as unknown as ServerInternals)._nsps;
  if (registry.get(nsp.name) !== nsp) return false;
  registry.delete(nsp.name);
  childNamespaces(parent).delete(nsp);
  return true;
}

interface EngineSocketInternals {
  request: { headers: unknown; url?: string; method?: string } | null;
}

/** A once-listener as `rawListeners` returns it (Node's wrapper keeps the original as `listener`). */
type RawListener = ((...args: unknown[]) => void) & { listener?: (...args: unknown[]) => void };

/**
 * engine.io (>= 6.6) answers a WebSocket upgrade with a `WebSocketResponse`
 * for its middlewares, and makes it emit `close` with the TCP socket through
 * `socket.once("close", () => this.emit("close"))`: that listener keeps the
 * response, and through it the full IncomingMessage, for the connection's
 * lifetime. Removed once the connection is established: nothing listens to
 * that response after the handshake (engine.io middlewares, which could, are
 * not used). Returns true when it was found and removed.
 */
export function releaseUpgradeResponse(socket: Socket): boolean {
  const conn = socket.conn as unknown as { transport?: { name?: string; socket?: { _socket?: NetSocket | null } } };
  const raw = conn.transport?.name === 'websocket' ? conn.transport.socket?._socket : undefined;
  if (!raw) return false;
  for (const l of raw.rawListeners('close') as RawListener[]) {
    const f = l.listener;
    if (f !== undefined && f.name === '' && !('prototype' in f) && UPGRADE_RESPONSE_CLOSE.test(Function.prototype.toString.call(f))) {
      raw.removeListener('close', l);
      return true;
    }
  }
  return false;
}
const UPGRADE_RESPONSE_CLOSE = /^\(\)\s*=>\s*this\.emit\("close"\)$/;

/**
 * Keeps only `headers`, `url` and `method` of the handshake request for the
 * connection's lifetime, and lets go of engine.io's upgrade response (which
 * holds the full request too).
 */
export function slimHandshakeRequest(socket: Socket): void {
  const conn = socket.conn as unknown as EngineSocketInternals;
  if (conn.request) conn.request = { headers: conn.request.headers, url: conn.request.url, method: conn.request.method };
  releaseUpgradeResponse(socket);
}

interface EngineConnInternals {
  readyState: string;
  upgrading: boolean;
  writeBuffer: unknown[];
  transport: {
    name: string;
    writable: boolean;
    perMessageDeflate?: unknown;
    socket?: { readyState: number; _socket?: NetSocket | null; _sender?: { sendFrame(frame: unknown, cb?: () => void): void } };
  };
}

/**
 * Writes a pre-built WebSocket frame straight to the socket's ws connection,
 * only when engine.io itself would write at once: open, on WebSocket, not
 * upgrading, nothing queued, writable, no compression. Returns false (and
 * writes nothing) otherwise, so the caller takes the normal path and order is
 * kept: every earlier frame already went through the same ws sender.
 */
export function writeFrameDirect(socket: Socket, frame: unknown, corked: NetSocket[] | null = null): boolean {
  const conn = socket.conn as unknown as EngineConnInternals;
  const t = conn.transport;
  const ws = t.socket;
  if (
    conn.readyState !== 'open' ||
    conn.upgrading ||
    conn.writeBuffer.length > 0 ||
    t.name !== 'websocket' ||
    !t.writable ||
    t.perMessageDeflate ||
    ws?.readyState !== 1 ||
    typeof ws._sender?.sendFrame !== 'function'
  ) {
    return false;
  }
  if (corked !== null) {
    // Held in the TCP socket's own buffer until `uncorkAll`: whatever else is
    // written to this connection meanwhile (engine.io, ws) queues behind it
    // in the same buffer, so the order is the write order, and ws's
    // bufferedAmount (the slow-reader check) counts it.
    const raw = ws._socket;
    if (raw && raw.writableCorked === 0) {
      raw.cork();
      corked.push(raw);
    }
  }
  ws._sender.sendFrame(frame);
  return true;
}

/** Releases what `writeFrameDirect` corked: each connection's held frames go out in one write. */
export function uncorkAll(corked: NetSocket[]): void {
  for (const raw of corked) raw.uncork();
  corked.length = 0;
}

/**
 * ws's pre-built frame (`Sender.frame`: header and payload, two buffers when
 * unmasked) as one buffer, built once per broadcast. `Sender.sendFrame`
 * writes a one-element list with a single `socket.write`; two elements cost
 * cork, two writes, uncork and a writev on every socket. Anything else is
 * returned as it is.
 */
export function singleBufferFrame(frame: unknown): unknown {
  if (Array.isArray(frame) && frame.length === 2 && Buffer.isBuffer(frame[0]) && Buffer.isBuffer(frame[1])) {
    return [Buffer.concat([frame[0], frame[1]])];
  }
  return frame;
}

/** What waits to be written to a client: engine.io's queued packets and ws's unsent bytes. */
export function outboundQueue(socket: Socket): { packets: number; bytes: number } {
  const conn = socket.conn as unknown as { writeBuffer: unknown[]; transport: { socket?: { bufferedAmount?: number } } };
  return { packets: conn.writeBuffer.length, bytes: conn.transport.socket?.bufferedAmount ?? 0 };
}

/** Hands already-encoded packets to engine.io for one socket (what a broadcast does per socket). */
export function writeToEngine(socket: Socket, encoded: unknown[], packetOpts: Record<string, unknown>): void {
  (socket.client as unknown as { writeToEngine(p: unknown, o: unknown): void }).writeToEngine(encoded, packetOpts);
}

/** The parts of socket.io-adapter and the Redis adapters the worker fast path hooks. */
export interface AdapterInternals {
  encoder: { encode(packet: unknown): unknown[] };
  _encode(packet: unknown, packetOpts: Record<string, unknown>): unknown[];
  apply(opts: BroadcastOptions, callback: (socket: Socket) => void): void;
  /** Sharded adapter: the namespace's channel prefix (`<prefix>#/<nsp>#`). */
  channel?: string;
  /** Sharded adapter: every message of a subscribed shard channel, before decoding. */
  onRawMessage?: (raw: Buffer, channel: Buffer | string) => unknown;
  onMessage?: (message: unknown, offset?: string) => unknown;
  /** Connection state recovery (socket.io-adapter's SessionAwareAdapter): where sessions are kept. */
  persistSession?: (session: unknown) => void;
  /** Older socket.io-adapter versions: appends an offset to every broadcast packet. */
  addOffsetIfNecessary?: (...args: unknown[]) => void;
}

export function adapterInternals(adapter: Adapter): AdapterInternals {
  return adapter as unknown as AdapterInternals;
}

/** Sends one Socket.IO packet to a socket, bypassing emit (already-decoded replayed events). */
export function socketPacket(socket: Socket, packet: { type: number; data: unknown[] }): void {
  (socket as unknown as { packet(p: unknown): void }).packet(packet);
}

/** Every Engine.IO connection of the server, whatever namespace (if any) its sockets are in. */
export function engineClients<C = unknown>(io: Server): C[] {
  return Object.values((io.engine as unknown as { clients: Record<string, C> }).clients);
}

/** How many namespaces the socket's Engine.IO connection carries connected sockets in. */
export function connectedNamespaceCount(socket: Socket): number {
  return (socket as unknown as { client: { sockets: Map<string, Socket> } }).client.sockets.size;
}

/** Sockets in a namespace's middleware (handshake in progress), not yet connected. */
export function preConnectCount(nsp: Namespace): number {
  return (nsp as unknown as { _preConnectSockets: Map<string, Socket> })._preConnectSockets.size;
}

/**
 * Calls `onStart` when a client starts joining `nsp` (socket.io's `_add`,
 * which session recovery makes asynchronous) and `onSettled` once that step
 * has settled, so a namespace is never closed under a socket on its way in.
 */
export function watchNamespaceAdds(nsp: Namespace, onStart: () => void, onSettled: () => void): void {
  const internals = nsp as unknown as { _add: (...args: unknown[]) => Promise<unknown> };
  const add = internals._add.bind(nsp);
  internals._add = (...args: unknown[]) => {
    onStart();
    const p = add(...args);
    void p.finally(onSettled);
    return p;
  };
}

/** The private session id socket.io gives a socket when connection state recovery is on. */
export function privateSessionId(socket: Socket): string | undefined {
  return (socket as unknown as { pid?: string }).pid;
}

/** Stops a net socket's reads at once (no 'data' event, nothing buffered in this process); true when the handle stopped. */
export function stopReading(socket: NetSocket): boolean {
  return (socket as unknown as { _handle?: { readStop?: () => number } | null })._handle?.readStop?.() === 0;
}

/** The slice of a forked child's IPC channel the sticky primary watches. */
interface HandleChannel {
  _handleQueue?: unknown[] | null;
  on(event: 'internalMessage', fn: (m: unknown) => void): unknown;
}

/**
 * True while a handle sent to this child has not been acknowledged yet
 * (Node queues whatever is sent meanwhile); false when a handle sent now
 * goes out at once, and when this Node does not expose the queue.
 */
export function handleInFlight(child: unknown): boolean {
  const q = (child as HandleChannel)._handleQueue;
  return Array.isArray(q);
}

/** Calls `fn` after each acknowledgement (or refusal) of a handle by the child, once Node has sent what it queued. */
export function onHandleAcknowledged(child: unknown, fn: () => void): void {
  (child as HandleChannel).on('internalMessage', (m: unknown) => {
    const cmd = (m as { cmd?: unknown } | null)?.cmd;
    if (cmd === 'NODE_HANDLE_ACK' || cmd === 'NODE_HANDLE_NACK') fn();
  });
}
