import type { ChainableCommander } from 'ioredis';
import { OFFSET_RE, compareOffsets } from '../events/encode';
import { TickPipeline, type RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import { ReadWindow, type HistoryEntry } from './read-window';

export type { HistoryEntry } from './read-window';

/** Why an offset cannot be replayed from (label of gateway_session_recoveries_total). */
export type Unrecoverable = 'foreign_offset' | 'history_lost' | 'trimmed';

// Can the events after ARGV[1] still be read? The stream must be the one the
// offset came from (its genesis at or below it: Redis may have lost the
// stream and a new one started), the offset must not be ahead of the stream
// (then it is not one of ours), and trimming (which removes a prefix) must
// not have reached it: the oldest entry left is at or below the offset, or
// the stream is empty and the offset is its last id. Trimming does not
// update max-deleted-entry-id, hence the first entry. An offset that was
// itself trimmed counts as trimmed even if nothing after it was (one event's
// worth of caution).
const CHECK = `
local function cmp(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
local genesis = redis.call('GET', KEYS[2])
if not genesis or redis.call('EXISTS', KEYS[1]) == 0 then return 'history_lost' end
if cmp(ARGV[1], genesis) < 0 then return 'history_lost' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
local c = cmp(ARGV[1], last)
if c > 0 then return 'foreign_offset' end
if c == 0 then return 'ok' end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not first or cmp(ARGV[1], first[1]) < 0 then return 'trimmed' end
return 'ok'`;
// The offset a new client starts from: the stream's last id. A stream that
// does not exist yet is created empty (XADD then trim to 0 entries) so the
// offset handed out is a real position of the stream the leader will append to.
const CURRENT = `
if redis.call('EXISTS', KEYS[1]) == 0 then
  local id = redis.call('XADD', KEYS[1], '*', 'n', '', 'r', '', 'a', '')
  redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
  redis.call('SET', KEYS[2], id)
  return id
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then return info[i + 1] end
end
return false`;

type Scripted = RedisClient & {
  gwHistoryCheck(stream: string, genesis: string, offset: string): Promise<string>;
  gwHistoryCurrent(stream: string, genesis: string): Promise<string | null>;
};
/** A pipeline of the same client, with the scripts defined on it. */
type ScriptedPipeline = ChainableCommander & {
  gwHistoryCheck(stream: string, genesis: string, offset: string): ChainableCommander;
};

const PAGE = 1000;
/**
 * The read window (`read-window.ts`): entries a worker keeps after reading
 * them, for the replays of clients recovering around the same time. It must
 * span the gaps of a host-loss herd (clients away up to tens of seconds):
 * a replay older than the window reads its whole gap from Redis itself:
 * with 20,000 entries (8 s at 2,500 events/s), 2,500 such replays of
 * 25,000-100,000 entries each held the 5,000-client SIGKILL bench's clients
 * behind unfinished replays (BENCHMARKS.md, "Host-loss herd"). Bounds:
 * 150,000 entries and 60 s (60 s at 2,500 events/s; ~40-75 MB per worker
 * for 250-500-byte entries), only while reads keep coming (dropped after
 * WINDOW_IDLE_MS without one).
 */
const WINDOW_MAX_ENTRIES = 150_000;
const WINDOW_MS = 60_000;
const WINDOW_IDLE_MS = 20_000;

/** Reads the leader's history stream: offset checks and the events after an offset. */
export class HistoryReader {
  private readonly c: Scripted;
  /** Offset checks of every reconnection in one event-loop turn (a herd), as one pipeline. */
  private readonly batch: TickPipeline;
  private readonly window = new ReadWindow(WINDOW_MAX_ENTRIES, WINDOW_MS);
  /** The tail read in flight, and the one queued to start after it. */
  private tail: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  /** The read reaching the window back to older offsets, and the oldest offset asked for. */
  private extending: Promise<void> | null = null;
  private oldestWanted: string | null = null;
  /** Drops the window once no read came for WINDOW_IDLE_MS (it would only hold memory, and be stale). */
  private idle: NodeJS.Timeout | undefined;

  constructor(
    client: RedisClient,
    private readonly keys: Keys,
  ) {
    client.defineCommand('gwHistoryCheck', { numberOfKeys: 2, lua: CHECK });
    client.defineCommand('gwHistoryCurrent', { numberOfKeys: 2, lua: CURRENT });
    this.c = client as Scripted;
    this.batch = new TickPipeline(client);
  }

  /** null when every event after `offset` can be read; else why not. */
  async check(offset: string): Promise<Unrecoverable | null> {
    if (!OFFSET_RE.test(offset)) return 'foreign_offset';
    const r = await this.batch.run<string>((p) =>
      (p as ScriptedPipeline).gwHistoryCheck(this.keys.history, this.keys.historyGenesis, offset),
    );
    return r === 'ok' ? null : (r as Unrecoverable);
  }

  /** The stream's current last id: a new client's first offset. */
  async current(): Promise<string | null> {
    return this.c.gwHistoryCurrent(this.keys.history, this.keys.historyGenesis);
  }

  /**
   * Every entry after `offset`, in order, up to the end of the stream as it
   * was at some moment after the call (so a replay that held live packets
   * from before the call misses nothing). Resolves the last id covered
   * (`offset` when there was nothing). Served from the read window when it
   * covers `offset`: concurrent and successive callers share one read of
   * the stream's tail (`read-window.ts`).
   */
  async readAfter(offset: string, visit: (e: HistoryEntry) => void): Promise<string> {
    if (this.idle) this.idle.refresh();
    else this.idle = setTimeout(() => this.window.reset(), WINDOW_IDLE_MS).unref();
    const w = this.window;
    if (!w.covers(offset) && (w.to === null || compareOffsets(offset, w.to) <= 0)) await this.extendTo(offset);
    await this.fresh();
    if (w.covers(offset)) return w.visitAfter(offset, visit);
    // Ahead of the stream (not one of its offsets), or the window moved past it meanwhile.
    return this.readRange(offset, '+', visit);
  }

  /**
   * Makes the window reach back to `offset`: one read at a time, from the
   * oldest offset asked for so far, so a burst of readers reads each stretch
   * of the stream once.
   */
  private extendTo(offset: string): Promise<void> {
    if (this.oldestWanted === null || compareOffsets(offset, this.oldestWanted) < 0) this.oldestWanted = offset;
    this.extending ??= (async () => {
      try {
        while (this.oldestWanted !== null) {
          const from = this.oldestWanted;
          this.oldestWanted = null;
          const w = this.window;
          const edge = w.from;
          if (w.covers(from)) continue;
          if (edge === null) {
            const genesis = await this.c.get(this.keys.historyGenesis);
            const read: HistoryEntry[] = [];
            const last = await this.readRange(from, '+', (e) => read.push(e));
            if (w.from === null) w.seed(from, read, last, genesis);
          } else if (compareOffsets(from, edge) < 0) {
            const read: HistoryEntry[] = [];
            await this.readRange(from, edge, (e) => read.push(e));
            if (w.from === edge) w.prepend(from, read);
          }
        }
      } finally {
        this.extending = null;
      }
    })();
    return this.extending;
  }

  /** Resolves once a read of the stream's tail that started after the call has finished. */
  private fresh(): Promise<void> {
    if (this.tail === null) {
      this.tail = this.readTail().finally(() => (this.tail = null));
      return this.tail;
    }
    this.queued ??= this.tail
      .catch(() => undefined)
      .then(() => {
        this.queued = null;
        return this.fresh();
      });
    return this.queued;
  }

  private async readTail(): Promise<void> {
    const w = this.window;
    if (w.to === null) return;
    const genesis = await this.c.get(this.keys.historyGenesis);
    if (genesis !== w.genesis) {
      w.reset();
      return;
    }
    let from = w.to;
    for (;;) {
      const page = await this.page(from, '+');
      if (w.to !== from || page.last === undefined) return; // reset meanwhile, or nothing new
      w.append(page.entries, page.last);
      from = page.last;
      if (page.count < PAGE) return;
    }
  }

  /** Entries in (from, to], page by page (`visit` returns before the next page is read); the last id read, or `from`. */
  private async readRange(from: string, to: string, visit: (e: HistoryEntry) => void): Promise<string> {
    let at = from;
    for (;;) {
      const page = await this.page(at, to);
      for (const e of page.entries) visit(e);
      at = page.last ?? at;
      if (page.count < PAGE) return at;
    }
  }

  /** One XRANGE page after `after`: its entries with a payload, how many ids it had, the last id. */
  private async page(after: string, to: string): Promise<{ entries: HistoryEntry[]; count: number; last: string | undefined }> {
    const raw = (await this.c.xrange(this.keys.history, `(${after}`, to, 'COUNT', PAGE)) as [string, string[]][];
    const entries: HistoryEntry[] = [];
    for (const [id, fields] of raw) {
      const e = entryOf(id, fields);
      if (e) entries.push(e);
    }
    return { entries, count: raw.length, last: raw.at(-1)?.[0] };
  }
}

function entryOf(id: string, fields: string[]): HistoryEntry | null {
  let namespace = '';
  let room = '';
  let args = '';
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const k = fields[i];
    const v = fields[i + 1] ?? '';
    if (k === 'n') namespace = v;
    else if (k === 'r') room = v;
    else if (k === 'a') args = v;
  }
  return args === '' ? null : { id, namespace, room, args };
}

/** The larger of two offsets (either may be null). */
export function laterOffset(a: string | null, b: string | null): string | null {
  if (a === null) return b;
  if (b === null) return a;
  return compareOffsets(a, b) >= 0 ? a : b;
}
