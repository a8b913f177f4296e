import type { Cluster, Redis } from 'ioredis';
import type { Keys } from '../redis/keys';
import { orderedUsers, type DocRef, type PresenceStore } from './presence';

type Client = Redis | Cluster;

// A field of the per-document hash that holds the opening counter, not a socket.
const SEQ_FIELD = '__seq';
/** HDEL of a socket's entry only when ARGV[2] (`<TAB>worker<TAB>`) wrote it. */
const CLOSE_OWN = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.find(v, ARGV[2], 1, true) then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`;

interface Waiter {
  resolve(users: string[]): void;
  reject(err: unknown): void;
}

function settle(waiters: readonly Waiter[], p: Promise<string[]>): void {
  p.then(
    (users) => {
      for (const w of waiters) w.resolve(users);
    },
    (err: unknown) => {
      for (const w of waiters) w.reject(err);
    },
  );
}

interface Entry {
  readonly seq: number;
  readonly worker: string;
  readonly user: string;
}

function encodeEntry(seq: number, worker: string, user: string): string {
  return `${seq}\t${worker}\t${user}`;
}

function decodeEntry(v: string): Entry | null {
  const a = v.indexOf('\t');
  const b = v.indexOf('\t', a + 1);
  if (a === -1 || b === -1) return null;
  return { seq: Number(v.slice(0, a)), worker: v.slice(a + 1, b), user: v.slice(b + 1) };
}

export function refToIndexMember(ref: DocRef): string {
  return JSON.stringify([ref.site, ref.doctype, ref.docname]);
}

export function indexMemberToRef(m: string): DocRef | null {
  try {
    const a = JSON.parse(m) as unknown;
    if (Array.isArray(a) && a.length === 3 && a.every((x) => typeof x === 'string')) {
      return { site: a[0] as string, doctype: a[1] as string, docname: a[2] as string };
    }
  } catch {
    // not ours
  }
  return null;
}

/**
 * Process liveness shared by presence and the cluster API: each process
 * writes `now` into one hash every `ttlMs / 3`; an entry older than `ttlMs`
 * belongs to a dead process.
 */
export class Liveness {
  constructor(
    private readonly client: Client,
    private readonly keys: Keys,
    readonly ttlMs: number,
  ) {}

  async beat(id: string, descriptor: Record<string, unknown>): Promise<void> {
    await this.client.hset(this.keys.nodes, id, JSON.stringify({ ...descriptor, id, seen: Date.now() }));
  }

  async remove(id: string): Promise<void> {
    await this.client.hdel(this.keys.nodes, id);
  }

  async all(): Promise<{ alive: Record<string, unknown>[]; dead: string[] }> {
    const h = await this.client.hgetall(this.keys.nodes);
    const now = Date.now();
    const alive: Record<string, unknown>[] = [];
    const dead: string[] = [];
    for (const [id, v] of Object.entries(h)) {
      try {
        const d = JSON.parse(v) as { seen?: number };
        if (typeof d.seen === 'number' && now - d.seen <= this.ttlMs) alive.push(d as Record<string, unknown>);
        else dead.push(id);
      } catch {
        dead.push(id);
      }
    }
    return { alive, dead };
  }

  async deadAmong(ids: string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const vals = await this.client.hmget(this.keys.nodes, ...ids);
    const now = Date.now();
    const dead = new Set<string>();
    ids.forEach((id, i) => {
      const v = vals[i];
      let seen = NaN;
      if (v) {
        try {
          seen = (JSON.parse(v) as { seen?: number }).seen ?? NaN;
        } catch {
          // unparsable = dead
        }
      }
      if (!(now - seen <= this.ttlMs)) dead.add(id);
    });
    return dead;
  }
}

/**
 * Cluster-wide presence in Redis: one hash per open document (socketId ->
 * "seq<TAB>worker<TAB>user"), a per-worker index of the documents it wrote so a
 * crashed worker's entries can be removed, and liveness to ignore entries of
 * processes that died before anyone cleaned up.
 */
export class RedisPresence implements PresenceStore {
  /** Local sockets per open document, so the worker's index entry is removed with the last one. */
  private readonly localOpen = new Map<string, { readonly ref: DocRef; readonly sockets: Map<string, string> }>();
  /** The tail of each (document, socket)'s operations: one socket's open and close reach Redis in the order they were made. */
  private readonly chains = new Map<string, Promise<unknown>>();
  /**
   * Closes made while Redis could not be written (`writable` false), one per
   * (document, socket) however often it was closed, with whoever waits for
   * the remaining users; applied in order by `applyDeferred`.
   */
  private readonly deferred = new Map<string, { ref: DocRef; socketId: string; waiters: Waiter[] }>();
  private applying = false;

  /**
   * @param writable whether commands sent now are answered soon (see
   *   `commandsFlowing`): while not, a close is recorded here instead of
   *   queueing behind the outage (call `applyDeferred` once it flows again).
   * @param onDeferred called once per close recorded that way.
   */
  constructor(
    private readonly client: Client,
    private readonly keys: Keys,
    private readonly workerId: string,
    private readonly liveness: Liveness,
    private readonly writable: () => boolean = () => true,
    private readonly onDeferred: () => void = () => undefined,
  ) {}

  /** Closes recorded while Redis could not be written, not applied yet. */
  get deferredCount(): number {
    return this.deferred.size;
  }

  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const next = (this.chains.get(id) ?? Promise.resolve()).then(fn, fn);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(id, tail);
    void tail.then(() => {
      if (this.chains.get(id) === tail) this.chains.delete(id);
    });
    return next;
  }

  open(ref: DocRef, socketId: string, user: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    const id = `${key}\n${socketId}`;
    // A close of this socket still recorded goes first: the later open wins.
    const pending = this.deferred.get(id);
    if (pending) {
      this.deferred.delete(id);
      const closed = this.serial(id, () => this.closeNow(pending.ref, socketId));
      settle(pending.waiters, closed);
    }
    return this.serial(id, () => this.openNow(ref, socketId, user));
  }

  close(ref: DocRef, socketId: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    const id = `${key}\n${socketId}`;
    if (this.writable() && this.deferred.size === 0) return this.serial(id, () => this.closeNow(ref, socketId));
    return new Promise<string[]>((resolve, reject) => {
      const pending = this.deferred.get(id);
      if (pending) pending.waiters.push({ resolve, reject });
      else {
        this.deferred.set(id, { ref, socketId, waiters: [{ resolve, reject }] });
        this.onDeferred();
      }
      if (this.writable()) void this.applyDeferred();
    });
  }

  /**
   * Applies the recorded closes, oldest first, while Redis can be written;
   * each waiter gets the users that remain. Safe to call at any time.
   */
  async applyDeferred(): Promise<void> {
    if (this.applying) return;
    this.applying = true;
    try {
      while (this.writable()) {
        const first = this.deferred.entries().next();
        if (first.done) break;
        const [id, pending] = first.value;
        this.deferred.delete(id);
        const closed = this.serial(id, () => this.closeNow(pending.ref, pending.socketId));
        settle(pending.waiters, closed);
        await closed.catch(() => undefined);
      }
    } finally {
      this.applying = false;
    }
  }

  /**
   * Writes again every entry of this worker's open documents that is
   * missing from Redis (and the worker's index): after a partition longer
   * than GATEWAY_PRESENCE_TTL_MS the other hosts took this worker for dead
   * and swept its entries while its sockets stayed connected. Call it once
   * commands flow again, after this worker's liveness was renewed and the
   * deferred closes applied. Resolves the documents whose viewers changed,
   * with their users, for doc_viewers.
   */
  async reassert(): Promise<{ ref: DocRef; users: string[] }[]> {
    const changed: { ref: DocRef; users: string[] }[] = [];
    for (const [key, local] of [...this.localOpen]) {
      let restored = false;
      await this.client.sadd(this.keys.presenceIndex(this.workerId), refToIndexMember(local.ref));
      for (const [socketId, user] of [...local.sockets]) {
        const id = `${key}\n${socketId}`;
        const wrote = await this.serial(id, async () => {
          // Closed meanwhile (or a close is recorded): nothing to restore.
          if (this.localOpen.get(key)?.sockets.get(socketId) !== user || this.deferred.has(id)) return false;
          if ((await this.client.hget(key, socketId)) !== null) return false;
          const seq = await this.client.hincrby(key, SEQ_FIELD, 1);
          await this.client.hset(key, socketId, encodeEntry(seq, this.workerId, user));
          return true;
        });
        restored ||= wrote;
      }
      if (restored) changed.push({ ref: local.ref, users: await this.users(key) });
    }
    return changed;
  }

  private async openNow(ref: DocRef, socketId: string, user: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    let local = this.localOpen.get(key);
    if (!local) {
      local = { ref, sockets: new Map() };
      this.localOpen.set(key, local);
      await this.client.sadd(this.keys.presenceIndex(this.workerId), refToIndexMember(ref));
    }
    local.sockets.set(socketId, user);
    const existing = await this.client.hget(key, socketId);
    const entry = existing === null ? null : decodeEntry(existing);
    if (entry === null) {
      const seq = await this.client.hincrby(key, SEQ_FIELD, 1);
      await this.client.hset(key, socketId, encodeEntry(seq, this.workerId, user));
    } else if (entry.worker !== this.workerId) {
      // A recovered session keeps its socket id: the entry its old worker
      // wrote becomes ours (same place in the order), so that worker's late
      // cleanup (it was stopped, or stalled) cannot remove it.
      await this.client.hset(key, socketId, encodeEntry(entry.seq, this.workerId, user));
    }
    return this.users(key);
  }

  private async closeNow(ref: DocRef, socketId: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    // Only our own entry: the socket may live on another worker by now (see `open`).
    await this.client.eval(CLOSE_OWN, 1, key, socketId, `\t${this.workerId}\t`);
    const local = this.localOpen.get(key);
    if (local?.sockets.delete(socketId) && local.sockets.size === 0) {
      this.localOpen.delete(key);
      await this.client.srem(this.keys.presenceIndex(this.workerId), refToIndexMember(ref));
    }
    return this.users(key);
  }

  /** Live users of one document; deletes entries of dead processes and the key once empty. */
  async users(key: string): Promise<string[]> {
    const h = await this.client.hgetall(key);
    const entries: Entry[] = [];
    for (const [field, v] of Object.entries(h)) {
      if (field === SEQ_FIELD) continue;
      const e = decodeEntry(v);
      if (e) entries.push(e);
      else await this.client.hdel(key, field);
    }
    const others = [...new Set(entries.map((e) => e.worker).filter((w) => w !== this.workerId))];
    const dead = await this.liveness.deadAmong(others);
    const live = entries.filter((e) => !dead.has(e.worker));
    if (dead.size > 0) {
      const stale = Object.entries(h)
        .filter(([f, v]) => f !== SEQ_FIELD && dead.has(decodeEntry(v)?.worker ?? ''))
        .map(([f]) => f);
      if (stale.length > 0) await this.client.hdel(key, ...stale);
    }
    if (live.length === 0) await this.deleteIfEmpty(key);
    return orderedUsers(live);
  }

  private async deleteIfEmpty(key: string): Promise<void> {
    // Only the counter left: the document is closed everywhere. A concurrent
    // open that lands between HLEN and DEL restarts the counter, which only
    // matters for ordering among viewers that all arrived after that moment.
    if ((await this.client.hlen(key)) <= 1) await this.client.del(key);
  }

  async stop(): Promise<void> {
    // Entries of this worker are removed by the sockets' disconnect handlers
    // during drain; what remains (a crash) is swept by `sweepDeadWorker`.
  }
}

/**
 * Removes every presence entry written by a dead worker and reports the
 * documents whose viewer list changed, with the remaining users, so the
 * caller can emit doc_viewers to them.
 */
export async function sweepDeadWorker(
  client: Client,
  keys: Keys,
  deadWorker: string,
  liveness: Liveness,
): Promise<{ ref: DocRef; users: string[] }[]> {
  const indexKey = keys.presenceIndex(deadWorker);
  const members = await client.smembers(indexKey);
  const changed: { ref: DocRef; users: string[] }[] = [];
  for (const m of members) {
    const ref = indexMemberToRef(m);
    if (!ref) continue;
    const key = keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    const h = await client.hgetall(key);
    const fields = Object.entries(h)
      .filter(([f, v]) => f !== SEQ_FIELD && decodeEntry(v)?.worker === deadWorker)
      .map(([f]) => f);
    if (fields.length === 0) continue;
    await client.hdel(key, ...fields);
    const presence = new RedisPresence(client, keys, `sweeper:${deadWorker}`, liveness);
    changed.push({ ref, users: await presence.users(key) });
  }
  await client.del(indexKey);
  return changed;
}
