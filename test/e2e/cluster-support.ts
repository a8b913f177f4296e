/**
 * Shared pieces of the multi-host e2e suites (cluster-*.test.ts): a Frappe
 * backend with a fixed set of users, hosts of one gateway cluster, clients
 * spread over every worker, a sequenced steady-rate publisher and the
 * exactly-once / gap analysis of what the clients received.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Cluster, Redis } from 'ioredis';
import {
  barrier,
  connectClient,
  EventRecorder,
  frappeJson,
  pollUntil,
  startFakeFrappe,
  startGateway,
  uniqueKeyPrefix,
  waitConnect,
  type FakeFrappe,
  type GatewayHandle,
  type Scope,
  type Socket,
  type StartGatewayOptions,
  type Transport,
} from '../harness';

export const SITE = 'site1.local';
export const DOCTYPE = 'ToDo';
export const DOCNAME = 'CLUSTER-1';
export const DOC_ROOM = `doc:${DOCTYPE}/${DOCNAME}`;
/** Users whose rooms receive sequenced events. */
export const USERS = ['u0@example.com', 'u1@example.com', 'u2@example.com', 'u3@example.com'] as const;
/** A user no sequenced event is addressed to: must receive none of them. */
export const OUTSIDER = 'outsider@example.com';
export const SEQ_EVENT = 'cluster_seq';

/** Small leases so failover tests stay short. */
export const FAST_LEASE_ENV = { GATEWAY_LEADER_LEASE_MS: '1000', GATEWAY_LEADER_RENEW_MS: '200' } as const;

export const sidOf = (user: string): string => `sid-${user}`;
export const userRoom = (user: string): string => `user:${user}`;

/** Running, and not a zombie (orphans are not reaped on this machine). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

export async function startBackend(scope: Scope): Promise<FakeFrappe> {
  const fake = await startFakeFrappe({ scope });
  for (const user of [...USERS, OUTSIDER]) fake.addSession(sidOf(user), { user, user_type: 'System User' });
  fake.allow('*', DOCTYPE);
  return fake;
}

export interface ClusterInfo {
  node: { id: string; pid: number; leader: boolean; epoch: number | null; lag: number; buffered: number };
  leader: { nodeId: string; epoch: number } | null;
  workers: { pid: number; nodeId: string | null; connections: number; redis: boolean }[];
  nodes: Record<string, unknown>[];
}

export const clusterInfo = async (gw: GatewayHandle): Promise<ClusterInfo> => (await gw.cluster()) as ClusterInfo;

export interface HostOptions {
  scope: Scope;
  backend: FakeFrappe;
  keyPrefix: string;
  redisUrl?: string;
  env?: Record<string, string | undefined>;
  workers?: number;
  /** Fixed ports: a host restarted on its address (default: free ports). */
  port?: number;
  opsPort?: number;
}

/** One host of the cluster, ready, with every worker registered (its /api/v1/cluster lists `workers` nodeIds). */
export async function startHost(o: HostOptions): Promise<GatewayHandle> {
  const options: StartGatewayOptions = {
    scope: o.scope,
    backendUrl: o.backend.url,
    defaultSite: SITE,
    workers: o.workers ?? 2,
    keyPrefix: o.keyPrefix,
    env: { ...FAST_LEASE_ENV, ...o.env },
  };
  if (o.redisUrl !== undefined) options.redisUrl = o.redisUrl;
  if (o.port !== undefined) options.port = o.port;
  if (o.opsPort !== undefined) options.opsPort = o.opsPort;
  const gw = await startGateway(options);
  await waitWorkersUp(gw, o.workers ?? 2);
  return gw;
}

/** What a host logged at error level or above (pino level >= 50): none of it is expected while Redis is healthy. */
export function errorLogs(host: GatewayHandle): string[] {
  return host
    .jsonLogs()
    .filter((l) => typeof l['level'] === 'number' && l['level'] >= 50)
    .map((l) => JSON.stringify(l).slice(0, 600));
}

export async function waitWorkersUp(gw: GatewayHandle, n: number, timeoutMs = 20_000): Promise<ClusterInfo> {
  return pollUntil(
    async () => {
      const info = await clusterInfo(gw);
      return info.workers.length === n && info.workers.every((w) => w.nodeId !== null) ? info : undefined;
    },
    { timeoutMs, intervalMs: 50, description: () => `${n} workers of ${gw.url} to register; logs:\n${gw.logs.slice(-20).join('\n')}` },
  );
}

/** The host whose primary holds the lease, per /api/v1/cluster of every live host. */
export async function findLeader(hosts: readonly GatewayHandle[], timeoutMs = 15_000): Promise<{ host: GatewayHandle; info: ClusterInfo }> {
  return pollUntil(
    async () => {
      for (const host of hosts) {
        if (host.proc.exitCode !== null || host.proc.signalCode !== null) continue;
        const info = await clusterInfo(host);
        if (info.node.leader && info.leader?.nodeId === info.node.id) return { host, info };
      }
      return undefined;
    },
    { timeoutMs, intervalMs: 50, description: 'a host to report itself as the events leader' },
  );
}

export interface ClientSpec {
  user: string;
  transports?: Transport[];
  /** Joins DOC_ROOM through doc_subscribe. */
  docRoom: boolean;
}

export interface TrackedClient {
  readonly host: GatewayHandle;
  readonly spec: ClientSpec;
  readonly socket: Socket;
  readonly recorder: EventRecorder;
  /** Rooms the sequenced publisher addresses that this client is in. */
  readonly rooms: ReadonlySet<string>;
  disconnects: string[];
}

/**
 * Clients of every user on every host, one transport mix per host: the
 * sticky balancer spreads consecutive connections over the workers.
 */
export function defaultSpecs(): ClientSpec[] {
  return [
    { user: USERS[0], transports: ['websocket'], docRoom: true },
    { user: USERS[1], transports: ['polling'], docRoom: true },
    { user: USERS[2], docRoom: false },
    { user: USERS[3], transports: ['polling'], docRoom: false },
    { user: OUTSIDER, transports: ['websocket'], docRoom: false },
    { user: USERS[0], transports: ['polling'], docRoom: false },
  ];
}

type ClientOptions = Parameters<typeof connectClient>[2];

/**
 * Connects `specs` one at a time to `host`. `extra.client` adds client
 * options (e.g. reconnection); `extra.waitSession` also waits for each
 * client's first offset (`rtg_session`), so its session is recoverable.
 */
export async function connectTracked(
  scope: Scope,
  host: GatewayHandle,
  specs: readonly ClientSpec[],
  extra: { client?: Partial<ClientOptions>; waitSession?: boolean } = {},
): Promise<TrackedClient[]> {
  const out: TrackedClient[] = [];
  // One at a time: least-connection balancing then alternates between workers.
  for (const spec of specs) {
    const options: ClientOptions = { ...extra.client, cookie: sidOf(spec.user), scope };
    if (spec.transports !== undefined) options.transports = spec.transports;
    const socket = connectClient(host.url, SITE, options);
    const recorder = new EventRecorder(socket);
    const rooms = new Set<string>();
    if ((USERS as readonly string[]).includes(spec.user)) rooms.add(userRoom(spec.user));
    if (spec.docRoom) rooms.add(DOC_ROOM);
    const tracked: TrackedClient = { host, spec, socket, recorder, rooms, disconnects: [] };
    socket.on('disconnect', (reason) => tracked.disconnects.push(reason));
    try {
      await waitConnect(socket, 10_000);
    } catch (err) {
      throw new Error(
        `${spec.user} (${spec.transports?.join('+') ?? 'default transports'}) could not connect to ${host.url}: ${String(err)}; gateway log:\n${host.logs.slice(-25).join('\n')}`,
        { cause: err },
      );
    }
    if (extra.waitSession) await recorder.waitFor('rtg_session', undefined, 5000);
    if (spec.docRoom) socket.emit('doc_subscribe', DOCTYPE, DOCNAME);
    out.push(tracked);
  }
  return out;
}

interface RoomReport {
  workers: { members?: { id: string; user?: string }[] }[];
}

/** Members of `room` on each worker of `host` (its /api/v1/cluster/rooms answer). */
export async function roomMembersPerWorker(host: GatewayHandle, room: string): Promise<{ id: string; user?: string }[][]> {
  const res = await host.opsRequest(`/api/v1/cluster/rooms?site=${encodeURIComponent(SITE)}&room=${encodeURIComponent(room)}`);
  if (res.status !== 200) throw new Error(`rooms API answered ${res.status}: ${res.body}`);
  return (JSON.parse(res.body) as RoomReport).workers.map((w) => w.members ?? []);
}

/** Every worker of `host` has at least one client, and the doc room holds what the specs asked for. */
export async function waitSpread(host: GatewayHandle, clients: readonly TrackedClient[], workers: number): Promise<void> {
  const mine = clients.filter((c) => c.host === host);
  const docMembers = mine.filter((c) => c.spec.docRoom).length;
  await pollUntil(
    async () => {
      const website = await roomMembersPerWorker(host, 'website');
      const doc = await roomMembersPerWorker(host, DOC_ROOM);
      const onWorkers = website.filter((m) => m.length > 0).length;
      const total = website.reduce((n, m) => n + m.length, 0);
      const inDoc = doc.reduce((n, m) => n + m.length, 0);
      return onWorkers === workers && total === mine.length && inDoc === docMembers ? true : undefined;
    },
    {
      timeoutMs: 10_000,
      intervalMs: 50,
      description: `clients of ${host.url} spread over ${workers} workers with ${docMembers} in ${DOC_ROOM}`,
    },
  );
}

/** The worker pid of each client of `host`, from the rooms API and /api/v1/cluster. */
export async function workerIndexOf(host: GatewayHandle, clients: readonly TrackedClient[]): Promise<Map<TrackedClient, number>> {
  const perWorker = await roomMembersPerWorker(host, 'website');
  const out = new Map<TrackedClient, number>();
  for (const c of clients) {
    if (c.host !== host) continue;
    const idx = perWorker.findIndex((members) => members.some((m) => m.id === c.socket.id));
    out.set(c, idx);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Publishing

export interface SeqMessage {
  seq: number;
  room: string;
  /** Date.now() when published. */
  t: number;
}

type Publisher = Pick<Redis | Cluster, 'publish'>;

/** Room of sequence number `seq`: every fifth event to the doc room, the rest round-robin to the user rooms. */
export function roomOfSeq(seq: number): string {
  return seq % 5 === 0 ? DOC_ROOM : userRoom(USERS[seq % USERS.length] as string);
}

export function publishFrappe(client: Publisher, event: string, message: unknown, room: string | null): Promise<number> {
  return client.publish('events', frappeJson({ event, message, namespace: SITE, room }));
}

/**
 * Publishes sequenced events on the `events` channel at a steady rate (like
 * Frappe's workers would), addressing the rooms of `roomOfSeq`.
 */
export class SeqPublisher {
  private next = 1;
  private timer: NodeJS.Timeout | null = null;
  private startedAt = 0;
  private readonly errors: unknown[] = [];
  private readonly inflight = new Set<Promise<unknown>>();
  /** Date.now() of each published seq (index = seq). */
  readonly sentAt: number[] = [];

  constructor(
    private readonly client: Publisher,
    readonly ratePerSec: number,
  ) {}

  get published(): number {
    return this.next - 1;
  }

  start(): void {
    this.startedAt = Date.now();
    this.timer = setInterval(() => this.tick(), 5);
  }

  private tick(): void {
    const due = Math.floor(((Date.now() - this.startedAt) * this.ratePerSec) / 1000);
    while (this.next <= due) this.publishOne();
  }

  publishOne(): void {
    const seq = this.next++;
    const room = roomOfSeq(seq);
    const t = Date.now();
    this.sentAt[seq] = t;
    const message: SeqMessage = { seq, room, t };
    const p = publishFrappe(this.client, SEQ_EVENT, message, room).catch((err: unknown) => this.errors.push(err));
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  /** Teardown (register it with the test's scope): stops the timer so a failed test cannot keep the process alive. */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Stops and resolves once every publish was acknowledged; returns the last seq. */
  async stop(): Promise<number> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.inflight]);
    if (this.errors.length > 0) throw new Error(`${this.errors.length} publishes failed: ${String(this.errors[0])}`);
    return this.published;
  }
}

// ---------------------------------------------------------------------------
// Analysis

export function seqsExpectedFor(rooms: ReadonlySet<string>, from: number, to: number): number[] {
  const out: number[] = [];
  for (let s = from; s <= to; s++) if (rooms.has(roomOfSeq(s))) out.push(s);
  return out;
}

export interface Delivery {
  expected: number;
  received: number;
  missing: number[];
  duplicates: number[];
  /** Received although addressed to a room the client is not in. */
  unexpected: number[];
}

export function deliveryOf(client: TrackedClient, from: number, to: number): Delivery {
  const counts = new Map<number, number>();
  const unexpected: number[] = [];
  for (const payload of client.recorder.payloads(SEQ_EVENT)) {
    const m = payload as SeqMessage;
    if (!client.rooms.has(m.room)) unexpected.push(m.seq);
    counts.set(m.seq, (counts.get(m.seq) ?? 0) + 1);
  }
  const expected = seqsExpectedFor(client.rooms, from, to);
  return {
    expected: expected.length,
    received: client.recorder.count(SEQ_EVENT),
    missing: expected.filter((s) => !counts.has(s)),
    duplicates: [...counts].filter(([, n]) => n > 1).map(([s]) => s),
    unexpected,
  };
}

export function summarise(
  clients: readonly TrackedClient[],
  from: number,
  to: number,
): { missing: number; duplicates: number; unexpected: number; expected: number; received: number } {
  let missing = 0;
  let duplicates = 0;
  let unexpected = 0;
  let expected = 0;
  let received = 0;
  for (const c of clients) {
    const d = deliveryOf(c, from, to);
    missing += d.missing.length;
    duplicates += d.duplicates.length;
    unexpected += d.unexpected.length;
    expected += d.expected;
    received += d.received;
  }
  return { missing, duplicates, unexpected, expected, received };
}

/** Warnings and errors a host logged (pino level >= 40), minus the start-up note about the publish token. */
export function warnings(host: GatewayHandle): string[] {
  return host
    .jsonLogs()
    .filter((l) => typeof l['level'] === 'number' && l['level'] >= 40 && !String(l['msg']).startsWith('GATEWAY_PUBLISH_TOKEN'))
    .map((l) => JSON.stringify(l).slice(0, 400));
}

/**
 * Every client got each event of its rooms in [from, to] once, and nothing
 * else. A failure quotes what the hosts logged, to tell a lost subscription
 * from a leader that skipped events.
 */
export function assertExactlyOnce(clients: readonly TrackedClient[], from: number, to: number, what: string): void {
  const hosts = [...new Set(clients.map((c) => c.host))];
  for (const c of clients) {
    const d = deliveryOf(c, from, to);
    const who = `${what}: ${c.spec.user} on ${c.host.url} (${c.spec.transports?.join('+') ?? 'polling+websocket'})`;
    const problems = [
      d.missing.length > 0 ? `${d.missing.length} lost (first ${d.missing.slice(0, 10).join(', ')})` : '',
      d.duplicates.length > 0 ? `${d.duplicates.length} duplicated (first ${d.duplicates.slice(0, 10).join(', ')})` : '',
      d.unexpected.length > 0 ? `${d.unexpected.length} of rooms it is not in (first ${d.unexpected.slice(0, 10).join(', ')})` : '',
    ].filter((p) => p !== '');
    if (problems.length > 0) {
      const logs = hosts.map((h) => `${h.url}:\n  ${warnings(h).slice(-25).join('\n  ')}`).join('\n');
      assert.fail(`${who}: ${problems.join('; ')} of ${d.expected} expected\nhost warnings:\n${logs}`);
    }
  }
}

/** Waits until every client holds at least what it should get of seqs 1..last (or times out, then the analysis reports). */
export async function waitDelivered(clients: readonly TrackedClient[], last: number, timeoutMs = 15_000): Promise<void> {
  await Promise.all(
    clients.map((c) => {
      const n = seqsExpectedFor(c.rooms, 1, last).length;
      return n === 0 ? Promise.resolve() : c.recorder.waitForCount(SEQ_EVENT, n, undefined, timeoutMs).then(() => undefined);
    }),
  ).catch(() => undefined);
}

/**
 * Barrier on the `website` room (every client is in it) through the events
 * channel: once it arrived, anything published before it has arrived too.
 */
export async function websiteBarrier(client: Publisher, clients: readonly TrackedClient[], timeoutMs = 15_000): Promise<void> {
  await barrier(
    clients.map((c) => c.recorder),
    { sendMarker: (m) => publishFrappe(client, m.event, m.message, 'website'), timeoutMs },
  );
}

let warmUps = 0;

/**
 * Publishes a marker to each client's rooms until every client got one of
 * this call for each of its rooms: proves the adapter subscriptions (dynamic
 * sharded channels, resubscribed after a Redis outage) are in place before a
 * measured run starts. Markers of earlier calls do not count.
 */
export async function warmUp(client: Publisher, clients: readonly TrackedClient[], timeoutMs = 10_000): Promise<void> {
  const rooms = new Set<string>(['website']);
  for (const c of clients) for (const r of c.rooms) rooms.add(r);
  const id = `${process.pid}-${++warmUps}`;
  let round = 0;
  const got = (c: TrackedClient): boolean =>
    [...c.rooms, 'website'].every(
      (room) => c.recorder.count('cluster_warmup', (p) => (p as { id?: string }).id === id && (p as { room?: string }).room === room) > 0,
    );
  await pollUntil(
    async () => {
      if (clients.every(got)) return true;
      round++;
      await Promise.all([...rooms].map((room) => publishFrappe(client, 'cluster_warmup', { id, room, round }, room)));
      return undefined;
    },
    { timeoutMs, intervalMs: 100, description: 'every client to receive a warm-up marker in each of its rooms' },
  );
}

/** Largest interval between consecutive arrivals (any client of `clients`) of sequenced events inside [from, to]. */
export function largestGap(clients: readonly TrackedClient[], from: number, to: number): { gapMs: number; before: number; after: number } {
  const times = clients
    .flatMap((c) => c.recorder.records(SEQ_EVENT).map((r) => r.at))
    .filter((t) => t >= from && t <= to)
    .sort((a, b) => a - b);
  let best = { gapMs: 0, before: from, after: from };
  for (let i = 1; i < times.length; i++) {
    const gap = (times[i] as number) - (times[i - 1] as number);
    if (gap > best.gapMs) best = { gapMs: gap, before: times[i - 1] as number, after: times[i] as number };
  }
  return best;
}

/** Largest publish-to-arrival delay of sequenced events published inside [from, to]. */
export function largestDelay(clients: readonly TrackedClient[], from: number, to: number): number {
  let worst = 0;
  for (const c of clients) {
    for (const r of c.recorder.records(SEQ_EVENT)) {
      const m = r.args[0] as SeqMessage;
      if (m.t >= from && m.t <= to) worst = Math.max(worst, r.at - m.t);
    }
  }
  return worst;
}

export function newKeyPrefix(): string {
  return uniqueKeyPrefix();
}

/** A line in the test report (node:test diagnostic), for measured values that are not asserted. */
export function logDiagnostic(t: { diagnostic(message: string): void }, label: string, value: unknown): void {
  t.diagnostic(`${label}: ${typeof value === 'string' ? value : JSON.stringify(value)}`);
}
