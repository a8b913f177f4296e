import { OFFSET_RE, compareOffsets } from '../events/encode';
import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';

/** One event of the history stream, as the leader's script wrote it (`leader/publisher.ts`). */
export interface HistoryEntry {
  /** Stream id = the offset the live packet carried. */
  readonly id: string;
  /** Site; '' for events without a room (every site). */
  readonly namespace: string;
  readonly room: string;
  /** The event's argument list without its closing bracket (`openEventArgs`). */
  readonly args: string;
}

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

const PAGE = 1000;

/** Reads the leader's history stream: offset checks and the events after an offset. */
export class HistoryReader {
  private readonly c: Scripted;

  constructor(
    client: RedisClient,
    private readonly keys: Keys,
  ) {
    client.defineCommand('gwHistoryCheck', { numberOfKeys: 2, lua: CHECK });
    client.defineCommand('gwHistoryCurrent', { numberOfKeys: 2, lua: CURRENT });
    this.c = client as Scripted;
  }

  /** null when every event after `offset` can be read; else why not. */
  async check(offset: string): Promise<Unrecoverable | null> {
    if (!OFFSET_RE.test(offset)) return 'foreign_offset';
    const r = await this.c.gwHistoryCheck(this.keys.history, this.keys.historyGenesis, offset);
    return r === 'ok' ? null : (r as Unrecoverable);
  }

  /** The stream's current last id: a new client's first offset. */
  async current(): Promise<string | null> {
    return this.c.gwHistoryCurrent(this.keys.history, this.keys.historyGenesis);
  }

  /**
   * Every entry after `offset`, in order, page by page (`visit` returns
   * before the next page is read). Resolves the last id read (`offset` when
   * there was nothing).
   */
  async readAfter(offset: string, visit: (e: HistoryEntry) => void): Promise<string> {
    let from = offset;
    for (;;) {
      const page = (await this.c.xrange(this.keys.history, `(${from}`, '+', 'COUNT', PAGE)) as [string, string[]][];
      for (const [id, fields] of page) {
        from = id;
        const e = entryOf(id, fields);
        if (e) visit(e);
      }
      if (page.length < PAGE) return from;
    }
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
