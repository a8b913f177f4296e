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
  private readonly localOpen = new Map<string, Set<string>>();

  constructor(
    private readonly client: Client,
    private readonly keys: Keys,
    private readonly workerId: string,
    private readonly liveness: Liveness,
  ) {}

  async open(ref: DocRef, socketId: string, user: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    let local = this.localOpen.get(key);
    if (!local) {
      local = new Set();
      this.localOpen.set(key, local);
      await this.client.sadd(this.keys.presenceIndex(this.workerId), refToIndexMember(ref));
    }
    local.add(socketId);
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

  async close(ref: DocRef, socketId: string): Promise<string[]> {
    const key = this.keys.presenceDoc(ref.site, ref.doctype, ref.docname);
    // Only our own entry: the socket may live on another worker by now (see `open`).
    await this.client.eval(CLOSE_OWN, 1, key, socketId, `\t${this.workerId}\t`);
    const local = this.localOpen.get(key);
    if (local?.delete(socketId) && local.size === 0) {
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
