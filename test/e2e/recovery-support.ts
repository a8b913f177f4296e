/**
 * Shared pieces of the session-recovery and missed-event replay suites: a
 * TCP front (a load balancer in miniature) that can be pointed at other
 * hosts, a client with fast reconnection, and a sequenced publisher that
 * addresses a fixed list of rooms in turn.
 */
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket as NetSocket } from 'node:net';
import type { Redis } from 'ioredis';
import {
  connectClient,
  EventRecorder,
  freePort,
  frappeJson,
  pollUntil,
  waitConnect,
  type GatewayHandle,
  type Scope,
  type Socket,
} from '../harness';
import { DOCNAME, DOCTYPE, SITE } from './cluster-support';

/**
 * Connects `client` to the first of `ports` that accepts (none: it is
 * closed), writes `head` (bytes already read from it) there first, then
 * pipes both ways; `onUpstream` learns which port took it.
 */
function pipeToFirst(
  client: NetSocket,
  ports: readonly number[],
  open: Set<NetSocket>,
  head?: Buffer,
  onUpstream?: (port: number) => void,
): void {
  const [p, ...rest] = ports;
  if (p === undefined) {
    client.destroy();
    return;
  }
  const up = connect(p, '127.0.0.1');
  up.once('error', () => pipeToFirst(client, rest, open, head, onUpstream));
  up.once('connect', () => {
    up.removeAllListeners('error');
    onUpstream?.(p);
    open.add(up);
    up.on('close', () => {
      open.delete(up);
      client.destroy();
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
    client.on('close', () => up.destroy());
    if (head) up.write(head);
    client.pipe(up).pipe(client);
    client.resume();
  });
}

/** Listens on a free port; each connection is handed to `onConnection`; closed with `scope`. */
async function listenFront(scope: Scope, onConnection: (client: NetSocket, open: Set<NetSocket>) => void): Promise<number> {
  const port = await freePort();
  const open = new Set<NetSocket>();
  const server: Server = createServer((client) => {
    open.add(client);
    client.on('close', () => open.delete(client));
    onConnection(client, open);
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', () => r()));
  scope.add(() => {
    for (const s of open) s.destroy();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return port;
}

/** A TCP front that sends each new connection to the first upstream that accepts it; none = refused. */
export function frontProxy(scope: Scope, upstreams: () => number[]): Promise<number> {
  return listenFront(scope, (client, open) => pipeToFirst(client, upstreams(), open));
}

/** The header `stickyFrontProxy` pins a client by (set through `recoveringClient`'s `client` option). */
export const CLIENT_HEADER = 'x-rtg-test-client';
/** A request's head is read up to this many bytes to find CLIENT_HEADER; longer heads are routed without it. */
const MAX_HEAD = 16 * 1024;

/**
 * Like `frontProxy`, but sticky per client the way an ingress with cookie
 * affinity is, which long-polling needs (each polling request is its own
 * TCP connection: the gateway answers with `Connection: close`): a request
 * carrying CLIENT_HEADER goes to the upstream that client last reached,
 * else the first of `upstreams()`; an upstream that refuses is skipped and
 * the client pinned to the one that accepted (a cookie re-issued by the
 * backend that answered).
 */
export function stickyFrontProxy(scope: Scope, upstreams: () => number[]): Promise<number> {
  const pinned = new Map<string, number>();
  return listenFront(scope, (client, open) => {
    client.on('error', () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      if (!head.includes('\r\n\r\n') && head.length < MAX_HEAD) return;
      client.removeListener('data', onData);
      client.pause();
      const id = new RegExp(`\\r\\n${CLIENT_HEADER}: *([^\\r]*)\\r\\n`, 'i').exec(head.toString('latin1'))?.[1];
      const ports = upstreams();
      const first = id === undefined ? undefined : pinned.get(id);
      const order = first !== undefined && ports.includes(first) ? [first, ...ports.filter((p) => p !== first)] : ports;
      pipeToFirst(client, order, open, head, (p) => {
        if (id !== undefined) pinned.set(id, p);
      });
    };
    client.on('data', onData);
  });
}

/** Upstream order for `frontProxy`: round robin over `ports()` (a refused one falls through to the next). */
export function roundRobin(ports: () => number[]): () => number[] {
  let turn = 0;
  return () => {
    const list = ports();
    const k = turn++ % Math.max(1, list.length);
    return [...list.slice(k), ...list.slice(0, k)];
  };
}

export function ack(socket: Socket, event: string, ...args: string[]): Promise<unknown> {
  return socket.timeout(5000).emitWithAck(event, ...args);
}

export const TASK = 'task-7';
/** The rooms a Frappe page subscribes to (doc, doctype, open doc, task progress), once each by `subscribeAll`. */
export const SUBSCRIBED_ROOMS = [
  `doc:${DOCTYPE}/${DOCNAME}`,
  `doctype:${DOCTYPE}`,
  `open_doc:${DOCTYPE}/${DOCNAME}`,
  `task_progress:${TASK}`,
] as const;

export async function subscribeAll(socket: Socket): Promise<void> {
  assert.equal(await ack(socket, 'doc_subscribe', DOCTYPE, DOCNAME), true);
  assert.equal(await ack(socket, 'doctype_subscribe', DOCTYPE), true);
  assert.equal(await ack(socket, 'doc_open', DOCTYPE, DOCNAME), true);
  assert.equal(await ack(socket, 'task_subscribe', TASK), true);
}

/** The socket's next `connect` after a disconnect (the manager's `reconnect` fires before the namespace CONNECT). */
export function reconnected(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    socket.once('disconnect', () => socket.once('connect', () => resolve()));
  });
}

/**
 * A client that reconnects within ~100 ms, with its recorder; resolves once
 * it holds its first offset. WebSocket only unless `o.transports` is
 * 'default' (socket.io-client's own: polling first, then the upgrade);
 * `o.client` names it for `stickyFrontProxy`.
 */
export async function recoveringClient(
  scope: Scope,
  url: string,
  sid: string,
  o: { transports?: 'websocket' | 'default'; client?: string } = {},
): Promise<{ socket: Socket; rec: EventRecorder }> {
  const socket = connectClient(url, SITE, {
    scope,
    cookie: sid,
    origin: 'http://127.0.0.1',
    ...(o.transports === 'default' ? {} : { transports: ['websocket'] as ['websocket'] }),
    ...(o.client === undefined ? {} : { headers: { [CLIENT_HEADER]: o.client } }),
    reconnection: true,
    ioOptions: { reconnectionDelay: 100, reconnectionDelayMax: 200 },
  });
  const rec = new EventRecorder(socket);
  await waitConnect(socket);
  await rec.waitFor('rtg_session', undefined, 5000);
  return { socket, rec };
}

export const REPLAY_EVENT = 'replay_seq';

/** Publishes `{ seq, room }` events like Frappe, one room of `rooms` after the other, `perTick` every 5 ms. */
export class RoomSequence {
  private next = 1;
  private timer: NodeJS.Timeout | null = null;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly errors: unknown[] = [];

  constructor(
    private readonly client: Pick<Redis, 'publish' | 'ping'>,
    private readonly rooms: readonly string[],
    private readonly perTick = 1,
  ) {}

  get published(): number {
    return this.next - 1;
  }

  /**
   * Starts once the connection is ready: ioredis can send commands queued
   * while it connects after ones issued just after it is ready, which would
   * reorder the first publishes before they reach Redis.
   */
  async start(): Promise<void> {
    await this.client.ping();
    this.timer = setInterval(() => {
      for (let i = 0; i < this.perTick; i++) this.publishOne();
    }, 5);
  }

  publishOne(): void {
    const seq = this.next++;
    const room = this.rooms[seq % this.rooms.length] as string;
    const p = this.client
      .publish('events', frappeJson({ event: REPLAY_EVENT, message: { seq, room }, namespace: SITE, room }))
      .catch((err: unknown) => this.errors.push(err));
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Register with the scope: a failed test must not leave the timer running. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Stops; resolves the last seq once every publish was answered. A failed
   * publish throws, unless `allowFailures` (Redis was down: the caller takes
   * what reached the gateway from the history stream).
   */
  async stop(options: { allowFailures?: boolean } = {}): Promise<number> {
    this.close();
    await Promise.all([...this.inflight]);
    if (this.errors.length > 0 && options.allowFailures !== true)
      throw new Error(`${this.errors.length} publishes failed: ${String(this.errors[0])}`);
    return this.published;
  }

  /** Resolves once at least `n` more events were published (an event to wait on, instead of a sleep). */
  async waitPublished(n: number): Promise<void> {
    const target = this.published + n;
    await pollUntil(() => (this.published >= target ? true : undefined), {
      timeoutMs: 10_000,
      intervalMs: 5,
      description: `${n} more publishes`,
    });
  }
}

/**
 * Every seq of 1..last exactly once and in order (the replay's promise), or
 * of the list `expected`, in its order (the history stream's: a publisher
 * retrying after an outage can reach Redis out of seq order), else a
 * readable failure.
 */
export async function assertInOrder(rec: EventRecorder, last: number | readonly number[], what: string, timeoutMs = 15_000): Promise<void> {
  const expected = typeof last === 'number' ? Array.from({ length: last }, (_, i) => i + 1) : last;
  await rec.waitForCount(REPLAY_EVENT, expected.length, undefined, timeoutMs).catch(() => undefined);
  const got = rec.payloads(REPLAY_EVENT).map((p) => (p as { seq: number }).seq);
  const seen = new Set<number>();
  const dup = got.filter((s) => (seen.has(s) ? true : (seen.add(s), false)));
  const missing = expected.filter((s) => !seen.has(s));
  const rank = new Map(expected.map((s, i) => [s, i]));
  const at = (s: number | undefined): number => rank.get(s as number) ?? Infinity;
  const outOfOrder = got.findIndex((s, i) => i > 0 && at(s) < at(got[i - 1]));
  assert.deepEqual(
    {
      missing: missing.slice(0, 20),
      duplicated: dup.slice(0, 20),
      firstOutOfOrder: outOfOrder === -1 ? null : got.slice(outOfOrder - 2, outOfOrder + 3),
    },
    { missing: [], duplicated: [], firstOutOfOrder: null },
    `${what}: ${got.length} received of ${expected.length}; first received: ${got.slice(0, 30).join(',')}; other events: ${rec.events
      .filter((e) => e.event !== REPLAY_EVENT)
      .map((e) => `${e.event}@${e.at}`)
      .join(' ')}`,
  );
}

/** The seqs of the sequenced events in the leader's history stream, in stream order: what the gateway accepted. */
export async function historySeqs(client: Pick<Redis, 'xrange'>, keyPrefix: string): Promise<number[]> {
  const entries = (await client.xrange(`{${keyPrefix}}:history`, '-', '+')) as [string, string[]][];
  const out: number[] = [];
  for (const [, fields] of entries) {
    let a: string | undefined;
    for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === 'a') a = fields[i + 1];
    if (!a) continue;
    const [event, message] = JSON.parse(`${a}]`) as [string, { seq?: number }];
    if (event === REPLAY_EVENT && typeof message.seq === 'number') out.push(message.seq);
  }
  return out;
}

/** The worker pid (on `host`) holding at least one connection, per /api/v1/cluster heartbeats. */
export async function busyWorkerPid(host: GatewayHandle): Promise<number> {
  return pollUntil(
    async () =>
      ((await host.cluster()) as { nodes: { kind: string; pid: number; connections: number }[] }).nodes.find(
        (n) => n.kind === 'worker' && n.connections > 0,
      )?.pid,
    { timeoutMs: 10_000, intervalMs: 50, description: 'the worker holding the connection' },
  );
}
