import { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { GatewayConfig } from '../config';
import type { Metrics } from '../metrics/metrics';
import type { RedisClient } from '../redis/connect';
import type { Keys } from '../redis/keys';
import { errorMessage } from '../shared/errors';
import { every, type Periodic } from '../shared/clock';
import { createGarbageBound, type GarbageBound } from '../shared/garbage-bound';
import { RateLimitedLog, type Logger } from '../shared/logger';
import { closeEventArgs, encodeAllSites, encodeRoomBroadcast, openEventArgs, roomChannel, sitePacket } from '../events/encode';
import type { Intake } from '../events/intake';
import { parseRawEvent, type FrappeEvent } from '../events/parse';
import { Lease, type Held } from './lease';
import { BatchPublisher, FencedError, formatProgress, type BatchItem, type DuplicateTally, type Progress } from './publisher';
import { EventRing } from './ring';

/** The events leader's slice of the configuration. */
export type LeaderConfig = Pick<
  GatewayConfig,
  | 'adapterMode'
  | 'dropLogIntervalMs'
  | 'eventsChannel'
  | 'history'
  | 'historyMaxEvents'
  | 'historyMs'
  | 'idempotencyWindowMs'
  | 'leaderCoalesceMs'
  | 'leaderGarbageBytes'
  | 'leaderLeaseMs'
  | 'leaderRenewMs'
  | 'maxMessageBytes'
  | 'redis'
  | 'standbyBufferBytes'
  | 'standbyBufferEvents'
  | 'standbyBufferMs'
>;

/** Digests of the last broadcast events recorded as progress; enough to make a repeated sequence unlikely. */
const PROGRESS_DIGESTS = 8;
/** Events per fenced batch. */
const BATCH_MAX = 512;
/**
 * Batches in flight at once (pipelined on one connection) when at least
 * PIPELINE_BACKLOG events are waiting. Below that, one batch is in flight and
 * what arrives meanwhile joins the next one, sent as soon as the reply is in
 * (in the same event-loop turn): events coalesce over one Redis round trip,
 * with no timer, and each Lua call, socket write and reply wake-up is shared
 * by more events the busier the leader is. A slow reply holds back at most
 * PIPELINE_BACKLOG events before batches are pipelined again.
 */
const MAX_INFLIGHT = 8;
const PIPELINE_BACKLOG = 64;
/*
 * Coalescing window (GATEWAY_LEADER_COALESCE_MS): at moderate rates events
 * arrive one by one, and each would cost the leader a wake-up for its
 * message, a script call and a wake-up for the reply. An event that reaches
 * an idle leader (no batch in flight or due) opens a hold instead: one timer,
 * and the subscriber's socket paused so the kernel queues what follows; when
 * the timer fires the socket is read again (one read for everything queued)
 * and the batch goes out in the same event-loop turn. A hold ends early once
 * BATCH_MAX events wait. Busy, the leader never holds: events arriving during
 * a round trip go out with its reply, as without the window.
 */
/**
 * An unaligned take-over with history on (see `broadcastUpTo`) compares the
 * newest HISTORY_CHECK history entries (what can be in flight at once) with
 * at most RING_CHECK ring entries, newest first. Covers a standby whose
 * subscription lost up to ~4,000 events (HISTORY_CHECK less one window) and
 * that received up to 16,384 since then (about 3 s at 5,000 events/s: the
 * deferral plus a lease at the defaults).
 */
const HISTORY_CHECK = MAX_INFLIGHT * BATCH_MAX;
const RING_CHECK = 4 * HISTORY_CHECK;
/** Entry comparisons the check may make at most (many identical events make many candidates): then it gives up. */
const CHECK_BUDGET = 1 << 20;
/** The leader's garbage bound (GATEWAY_LEADER_GARBAGE_BYTES) collects at most this often. */
const GARBAGE_MIN_INTERVAL_MS = 1000;
/** A freshly elected leader waits this long for its subscriber to catch up before replaying unaligned. */
const ALIGN_RETRY_MS = 200;
/**
 * What the clients are told when a leader takes over without finding its
 * predecessor's progress: events published between the predecessor's last
 * batch and the start of this process' buffer may never have been broadcast.
 * The same event as recovery's `MISSED_EVENT` (this layer does not import it).
 */
export const LEADER_GAP_NOTICE = { event: 'rtg_missed_updates', message: { reason: 'leader_gap' } } as const;

/** The libuv stream handle under a `net.Socket` (Node internals, used as net.js itself uses them). */
interface ReadHandle {
  reading: boolean;
  readStop(): number;
  readStart(): number;
}

function readHandle(s: Socket): ReadHandle | null {
  const h = (s as unknown as { _handle?: Partial<ReadHandle> | null })._handle;
  return h && typeof h.readStop === 'function' && typeof h.readStart === 'function' && typeof h.reading === 'boolean'
    ? (h as ReadHandle)
    : null;
}

export interface LeaderConsumerDeps {
  readonly config: LeaderConfig;
  readonly keys: Keys;
  /** Subscriber connection: the events channel and the leader notices. */
  readonly sub: RedisClient;
  /** Command connection: lease, scripts, publishes. */
  readonly cmd: RedisClient;
  readonly nodeId: string;
  readonly intake: Intake;
  readonly metrics: Metrics;
  readonly log: Logger;
}

export interface LeaderState {
  readonly leader: boolean;
  readonly epoch: number | null;
  readonly lag: number;
  readonly buffered: number;
}

/**
 * The cluster-wide events consumer. Every primary subscribes to the events
 * channel and keeps what it receives in an `EventRing`; the one holding the
 * lease validates, encodes and broadcasts, recording its progress atomically
 * with each batch. A process that takes over aligns its ring on that progress
 * and broadcasts exactly what its predecessor did not.
 */
export class LeaderConsumer {
  private readonly ring: EventRing;
  private readonly lease: Lease;
  private readonly publisher: BatchPublisher;
  private held: Held | null = null;
  private cursor = 0;
  /** Progress value the next batch expects to find in Redis (compare-and-set). */
  private lastProgress = '';
  private aligning = false;
  /** performance.now() when the current term started aligning (see `tick`: one lease period at most). */
  private alignStarted = 0;
  private inflight = 0;
  private flushScheduled = false;
  /** The open coalescing window's timer (at most one), and the subscriber socket it paused. */
  private hold: NodeJS.Timeout | null = null;
  private paused: Socket | null = null;
  private timer: Periodic | null = null;
  private stopped = false;
  private acquiring = false;
  private lastEpoch: number | null = null;
  /** Ring position after the last batch this process broadcast for certain (its own progress, kept across terms). */
  private confirmed: number | null = null;
  /** Ring position of the first event received on the current events subscription (moves when it is lost). */
  private subscribedFrom = 0;
  /** The progress record this process last left the lease to a standby for (see `becomeLeader`), and until when it stays out. */
  private deferredFor: string | null = null;
  private deferUntil = 0;
  /** An unaligned take-over's notice (LEADER_GAP_NOTICE), sent at the head of the term's first batch. */
  private notice: BatchItem | null = null;
  private readonly dropLog: RateLimitedLog;
  private readonly garbage: GarbageBound;

  constructor(private readonly d: LeaderConsumerDeps) {
    const c = d.config;
    this.dropLog = new RateLimitedLog(d.log, c.dropLogIntervalMs);
    // See src/shared/garbage-bound.ts: a junk flood's promoted batches, collected before they fill the RSS.
    this.garbage = createGarbageBound({
      boundBytes: c.leaderGarbageBytes,
      minIntervalMs: GARBAGE_MIN_INTERVAL_MS,
      onCollected: (seconds, before, after) => {
        d.metrics.leaderGarbageCollections.observe(seconds);
        d.log.debug({ pauseMs: Math.round(seconds * 1000), oldSpaceBefore: before, oldSpaceAfter: after }, 'old-space garbage collected');
      },
    });
    this.ring = new EventRing(c.standbyBufferEvents, c.standbyBufferMs, c.standbyBufferBytes, c.maxMessageBytes);
    this.lease = new Lease(d.cmd, d.keys, d.nodeId, d.config.leaderLeaseMs);
    this.publisher = new BatchPublisher(
      d.cmd,
      d.keys,
      d.config.redis?.mode === 'cluster',
      { maxEvents: d.config.historyMaxEvents, maxAgeMs: d.config.historyMs },
      { windowMs: d.config.idempotencyWindowMs, onDuplicates: (n) => d.metrics.eventsDeduplicated.inc({ by: 'idempotency_key' }, n) },
    );
  }

  get isLeader(): boolean {
    return this.held !== null && !this.aligning;
  }

  state(): LeaderState {
    return {
      leader: this.held !== null,
      epoch: this.held?.epoch ?? this.lastEpoch,
      lag: this.held ? this.ring.end - this.cursor : 0,
      buffered: this.ring.end - this.ring.start,
    };
  }

  currentLeader(): Promise<{ nodeId: string; epoch: number } | null> {
    return this.lease.current();
  }

  async start(): Promise<void> {
    const { sub, keys, config } = this.d;
    // Channel names compared as bytes: no string per message.
    const events = Buffer.from(config.eventsChannel);
    const leader = Buffer.from(keys.leaderChannel);
    sub.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.equals(events)) this.onEvent(message);
      else if (channel.equals(leader) && this.held === null) this.tick();
    });
    // A leader whose subscription dropped may have missed events that the
    // standbys received: hand over to one of them (or re-acquire and re-align).
    // Redis closes a subscriber that falls behind (client-output-buffer-limit
    // pubsub) and everything published meanwhile is lost: count each loss once.
    let subscribed = false;
    sub.on('ready', () => (subscribed = true));
    sub.on('close', () => {
      if (subscribed && !this.stopped) this.d.metrics.eventsSubscriptionLost.inc();
      subscribed = false;
      this.subscribedFrom = this.ring.end;
      if (this.held) this.stepDown('events subscription lost', true);
    });
    await sub.subscribe(config.eventsChannel, keys.leaderChannel);
    subscribed = true;
    // On the process' clock (shared/clock): the other periodic work of the primary runs in the same wake-ups.
    this.timer = every(config.leaderRenewMs, () => this.tick());
    this.tick();
  }

  /**
   * Runs inside ioredis' socket read, once per message: kept to the ring
   * push, so a burst is read off the socket as fast as it comes (Redis cuts
   * a subscriber whose output buffer outgrows client-output-buffer-limit
   * pubsub). The gauges follow in `reportRing`, once per flush or tick.
   */
  private onEvent(raw: Buffer): void {
    const now = performance.now();
    this.ring.push(raw, now);
    this.trimRing(now);
    if (!this.held || this.aligning) this.scheduleReport();
    else if (this.hold !== null) {
      if (this.ring.end - this.cursor >= BATCH_MAX) this.endHold();
    } else if (this.d.config.leaderCoalesceMs > 0 && this.inflight === 0 && !this.flushScheduled) this.openHold();
    else this.scheduleFlush();
  }

  /**
   * See the coalescing window above. `Socket.pause()` alone only stops
   * emitting: Node goes on reading the kernel into the stream's buffer (one
   * wake-up per message) up to its highWaterMark, and stops the handle itself
   * only for sockets made with `onread`. So the handle is stopped here the way
   * net.js does it for those (`reading = false; readStop()`). Cluster mode has
   * no single subscriber socket: the timer alone.
   */
  private openHold(): void {
    const stream = (this.d.sub as { stream?: unknown }).stream;
    if (stream instanceof Socket && !stream.destroyed) {
      stream.pause();
      const h = readHandle(stream);
      if (h?.reading) {
        h.reading = false;
        h.readStop();
      }
      this.paused = stream;
    }
    this.hold = setTimeout(this.endHold, this.d.config.leaderCoalesceMs);
  }

  /**
   * Ends the window: the socket reads again (net.js `tryReadStart`; `resume()`
   * does not restart a handle stopped under a pending read) and what the kernel
   * queued is read in this loop turn's poll phase, before the flush (setImmediate).
   */
  private readonly endHold = (): void => {
    if (this.hold !== null) clearTimeout(this.hold);
    this.hold = null;
    const stream = this.paused;
    this.paused = null;
    if (stream) {
      stream.resume();
      const h = readHandle(stream);
      if (h && !h.reading && !stream.destroyed && !stream.isPaused()) {
        h.reading = true;
        h.readStart();
      }
    }
    this.scheduleFlush();
  };

  /**
   * The ring's bounds, and what this process broadcast itself: every
   * progress record written since, by any leader, lies at or after its last
   * confirmed batch (each batch compares-and-sets the one before, and a
   * take-over aligns on the record it read), so no alignment can need an
   * entry before it; only the batch's last PROGRESS_DIGESTS entries are kept,
   * for a take-over that finds this process' own record. A leader then holds
   * what it has not broadcast (or not had confirmed) instead of a full
   * standby buffer (14-16 MB under a junk flood; right after one it now
   * holds < 1 MB, BENCHMARKS.md junk-memory). The digests of those kept
   * entries were computed for the record.
   */
  private trimRing(now: number): void {
    this.ring.trim(now, this.held ? this.cursor : this.ring.end, this.ownDropped);
  }

  /** Ring position before which `trimRing` drops what this process broadcast itself. */
  private get ownDropped(): number {
    return this.confirmed === null ? -Infinity : this.confirmed - PROGRESS_DIGESTS;
  }

  private reportScheduled = false;

  /** A standby's gauges, once per event-loop turn with events (not once per event). */
  private scheduleReport(): void {
    if (this.reportScheduled) return;
    this.reportScheduled = true;
    setImmediate(() => {
      this.reportScheduled = false;
      this.reportRing();
    });
  }

  private reportRing(): void {
    this.d.metrics.standbyBuffer.set(this.ring.end - this.ring.start);
    this.d.metrics.standbyBufferBytes.set(this.ring.byteSize);
  }

  private tick(): void {
    if (this.stopped) return;
    // Age out the standby buffer when no event arrives to trigger it.
    this.trimRing(performance.now());
    this.ring.compact();
    this.reportRing();
    if (this.held) {
      const held = this.held;
      if (performance.now() >= held.validUntil) {
        this.stepDown('lease not renewed in time', false);
        return;
      }
      // A take-over still aligning after a whole lease period (its progress read or the
      // history tail never answered) would otherwise keep renewing a lease it does not lead with.
      if (this.aligning && performance.now() - this.alignStarted >= this.d.config.leaderLeaseMs) {
        this.takeoverFailed(held, 'timeout', 'not aligned within one lease period');
        return;
      }
      this.lease.renew(held).then(
        (ok) => {
          if (!ok && this.held === held) this.stepDown('lease taken over', false);
        },
        (err: unknown) => this.d.log.warn({ err: errorMessage(err) }, 'lease renewal failed'),
      );
      return;
    }
    if (this.acquiring || performance.now() < this.deferUntil) return;
    this.acquiring = true;
    this.lease
      .tryAcquire()
      .then((held) => {
        if (held && !this.stopped)
          return this.becomeLeader(held).catch((err: unknown) => this.takeoverFailed(held, 'error', errorMessage(err)));
        if (held) return this.lease.release(held);
        return undefined;
      })
      .catch((err: unknown) => {
        this.d.log.debug({ err: errorMessage(err) }, 'lease acquisition failed');
      })
      .finally(() => {
        this.acquiring = false;
      });
  }

  private async becomeLeader(held: Held): Promise<void> {
    this.held = held;
    this.lastEpoch = held.epoch;
    this.aligning = true;
    this.alignStarted = performance.now();
    this.notice = null;
    const { metrics, log } = this.d;
    metrics.leader.set(1);
    metrics.leaderEpoch.set(held.epoch);
    metrics.leaderTransitions.inc({ to: 'leader' });
    let from: number | null = null;
    let prev: Progress | null;
    try {
      const read = await this.publisher.readProgress();
      prev = read.progress;
      this.lastProgress = read.raw;
      if (prev) {
        const deadline = performance.now() + ALIGN_RETRY_MS;
        from = this.ring.align(prev.digests);
        while (from === null && performance.now() < deadline && this.held === held) {
          await new Promise((r) => setTimeout(r, 20));
          from = this.ring.align(prev.digests);
        }
      }
    } catch (err) {
      if (this.held === held) this.takeoverFailed(held, 'progress_unreadable', errorMessage(err), false);
      return;
    }
    if (this.held !== held) return;
    if (from === null && prev !== null && this.deferTakeover(held, this.lastProgress, prev)) return;
    if (from === null) {
      // No progress record at all: no process broadcast yet (a new cluster)
      // or Redis lost it (restarted without persistence). Every batch writes
      // the record, so nothing received on the current subscription was
      // broadcast, while what came before it went to the leader of that time.
      // A process that led before resumes after what it broadcast itself; any
      // other from its current subscription, instead of broadcasting its
      // whole buffer again.
      from = prev !== null ? this.ring.start : Math.max(this.ring.start, this.confirmed ?? this.subscribedFrom);
      if (prev) {
        metrics.replayUnaligned.inc();
        // What the history already holds of the buffer was broadcast: not again.
        const broadcast = this.historyOn ? await this.broadcastUpTo() : null;
        if (this.held !== held) return;
        from = Math.max(from, this.ring.start);
        if (broadcast !== null && broadcast > from) {
          metrics.replaySkipped.inc(broadcast - from);
          from = broadcast;
        }
        // What the predecessor received after its last batch and before this
        // buffer starts is lost, if anything: the pages are told.
        this.notice = this.encodeEvent({ ...LEADER_GAP_NOTICE, room: null, namespace: null });
        log.warn(
          {
            epoch: held.epoch,
            progress: this.lastProgress,
            ringStart: this.ring.start,
            ringEnd: this.ring.end,
            subscribedFrom: this.subscribedFrom,
            from,
            historyChecked: broadcast !== null,
          },
          'previous leader progress not in the standby buffer: replaying the buffer after what the history holds, pages told they may have missed updates',
        );
      }
    }
    if (this.d.config.redis?.mode === 'cluster' && this.historyOn) await this.republishTail(held);
    if (this.held !== held) return;
    const replay = this.ring.end - from;
    if (replay > 0) metrics.replayedEvents.inc(replay);
    this.cursor = from;
    this.aligning = false;
    log.info({ epoch: held.epoch, replay, aligned: prev ? from !== this.ring.start || replay === 0 : null }, 'became events leader');
    this.scheduleFlush();
  }

  /**
   * A take-over that did not find its predecessor's progress, by a process
   * whose buffer holds everything its current subscription received (nothing
   * trimmed): the events it lacks came before it subscribed, so it is likely a
   * process started after the leader died (a host SIGKILLed and restarted at
   * once), and a standby subscribed for longer holds them. It leaves the lease
   * to the others for one lease period, once per progress record; if nobody
   * took over meanwhile (same record), it leads unaligned the next time.
   */
  private deferTakeover(held: Held, raw: string, prev: Progress): boolean {
    // "Everything": but for what it broadcast itself (`trimRing`).
    if (this.ring.start > Math.max(this.subscribedFrom, this.ownDropped) || this.deferredFor === raw) return false;
    const { metrics, log, cmd, keys, config } = this.d;
    this.deferredFor = raw;
    this.deferUntil = performance.now() + config.leaderLeaseMs;
    metrics.leaderDeferred.inc();
    log.warn(
      { epoch: held.epoch, prevEpoch: prev.epoch, ringStart: this.ring.start, ringEnd: this.ring.end, subscribedFrom: this.subscribedFrom },
      'previous leader progress not in the standby buffer: leaving the lease to a standby that may hold it',
    );
    this.stepDown('progress not in the standby buffer', false);
    this.lease
      .release(held)
      .then(() => cmd.publish(keys.leaderChannel, 'released'))
      .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'could not release the lease'));
    return true;
  }

  /**
   * A take-over that holds the lease but cannot align (it broadcasts nothing
   * while aligning) releases it at once and tells the standbys, so that one of
   * them takes over instead of the lease being renewed by a process that never
   * leads. After a timeout or an error it stays out for one lease period (a
   * standby goes first); after an unreadable progress record (Redis failing)
   * it tries again at its next tick, as any standby would. Nothing was
   * broadcast in the term and the MQTT ingress connects only once aligned
   * (`isLeader`), so no broker session moves.
   */
  private takeoverFailed(held: Held, reason: 'progress_unreadable' | 'timeout' | 'error', detail: string, backOff = true): void {
    if (this.held !== held || !this.aligning) return;
    const { metrics, log, cmd, keys, config } = this.d;
    metrics.leaderTakeoverFailed.inc({ reason });
    // An unreadable progress record is Redis failing (reported as such); a take-over stuck or throwing is not expected.
    log[reason === 'progress_unreadable' ? 'warn' : 'error'](
      { epoch: held.epoch, reason, err: detail, alignedForMs: Math.round(performance.now() - this.alignStarted) },
      'take-over failed: releasing the lease',
    );
    if (backOff) this.deferUntil = performance.now() + config.leaderLeaseMs;
    this.stepDown(`take-over failed (${reason})`, false);
    this.lease
      .release(held)
      .then(() => cmd.publish(keys.leaderChannel, 'released'))
      .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'could not release the lease'));
  }

  /**
   * An unaligned take-over (the predecessor's last broadcast events are not
   * in this buffer, e.g. this standby's subscription dropped while they were
   * published) would broadcast the buffer from its start, also what the
   * predecessor broadcast before that gap, with new offsets that the
   * workers' offset check cannot recognise. Those events are in the history,
   * written in the same script as their broadcast: the ring position after
   * the newest ring entry that, with the entries before it (PROGRESS_DIGESTS,
   * or at least 2 at the buffer's start, as `EventRing.align`), matches
   * consecutive history entries, encoded as the leader encodes them (the
   * history does not hold the messages' digests, so the ring's digests are
   * of no use here). Events broadcast in channel order, so everything before
   * it was broadcast too. Null when nothing matches within the bounds
   * (HISTORY_CHECK, RING_CHECK, CHECK_BUDGET) or the history cannot be read: the caller
   * replays from the buffer's start, as before.
   */
  private async broadcastUpTo(): Promise<number | null> {
    let tail: [string, string, string][];
    try {
      tail = await this.publisher.historyTail(HISTORY_CHECK);
    } catch (err) {
      this.d.log.warn({ err: errorMessage(err) }, 'could not read the history tail at an unaligned take-over');
      return null;
    }
    const noticeKey = this.historyKey(this.encodeEvent({ ...LEADER_GAP_NOTICE, room: null, namespace: null }));
    const where = new Map<string, number[]>();
    const hist: string[] = [];
    for (const [n, r, a] of tail) {
      const key = `${n}\0${r}\0${a}`;
      // The notices of earlier unaligned take-overs are in the history, not on the events channel.
      if (key === noticeKey) continue;
      let at = where.get(key);
      if (!at) where.set(key, (at = []));
      at.push(hist.length);
      hist.push(key);
    }
    if (hist.length === 0) return null;
    // The ring's deliverable entries, newest first (what the leader drops never reaches the history).
    const ring: { pos: number; key: string }[] = [];
    const { maxMessageBytes } = this.d.config;
    for (let p = this.ring.end - 1; p >= this.ring.start && ring.length < RING_CHECK + PROGRESS_DIGESTS; p--) {
      const raw = this.ring.raw(p);
      if (!raw) continue;
      const r = parseRawEvent(raw.toString('utf8'), raw.length, maxMessageBytes);
      if (!r.ok) continue;
      let key: string | null;
      try {
        key = this.historyKey(this.encodeEvent(r.value));
      } catch {
        continue;
      }
      if (key !== null) ring.push({ pos: p, key });
    }
    const reachesStart = ring.length < RING_CHECK + PROGRESS_DIGESTS;
    let budget = CHECK_BUDGET;
    for (let i = 0; i < Math.min(ring.length, RING_CHECK); i++) {
      const window = Math.min(PROGRESS_DIGESTS, ring.length - i);
      if (window < PROGRESS_DIGESTS && (!reachesStart || window < 2)) break;
      for (const j of where.get((ring[i] as { key: string }).key) ?? []) {
        let k = 1;
        while (k < window && j - k >= 0 && hist[j - k] === (ring[i + k] as { key: string }).key) k++;
        if (k === window) return (ring[i] as { pos: number }).pos + 1;
        budget -= k;
        if (budget <= 0) return null;
      }
    }
    return null;
  }

  /** The identity of an encoded event in the history (its namespace, room and arguments), null when it has no history entry. */
  private historyKey(item: BatchItem): string | null {
    const h = item.history;
    return h ? `${h.namespace}\0${h.room}\0${h.args}` : null;
  }

  private get historyOn(): boolean {
    return this.d.config.history && this.d.config.adapterMode === 'sharded';
  }

  /** See `BatchPublisher.republishTail`: the predecessor's in-flight batches, two leases back at most. */
  private async republishTail(held: Held): Promise<void> {
    const { keys, log, metrics } = this.d;
    try {
      const n = await this.publisher.republishTail(this.d.config.leaderLeaseMs * 2, MAX_INFLIGHT * BATCH_MAX, (ns, room, args, id) =>
        ns === ''
          ? { channel: keys.allSitesChannel, payload: `!${closeEventArgs(args, id)}` }
          : { channel: roomChannel(keys.adapterPrefix, ns, room), payload: `!${sitePacket(ns, closeEventArgs(args, id))}` },
      );
      if (n > 0) metrics.replayedEvents.inc(n);
      log.info({ epoch: held.epoch, republished: n }, 'history tail re-sent after takeover');
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'could not re-send the history tail');
    }
  }

  private stepDown(reason: string, release: boolean): void {
    const held = this.held;
    if (!held) return;
    this.held = null;
    this.aligning = false;
    const { metrics, log } = this.d;
    metrics.leader.set(0);
    metrics.consumerLag.set(0);
    metrics.leaderTransitions.inc({ to: 'standby' });
    log.warn({ epoch: held.epoch, reason }, 'stepped down as events leader');
    if (release) this.lease.release(held).catch(() => undefined);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /**
   * One batch per event-loop turn: between two batches the loop reads the
   * subscriber socket again (a burst is read off it while it is being
   * broadcast, instead of piling up in Redis' output buffer for us).
   */
  private flush(): void {
    const held = this.held;
    if (!held || this.aligning || this.hold !== null) return;
    if (this.canSend()) {
      if (performance.now() >= held.validUntil) {
        this.stepDown('lease validity ran out before broadcast', false);
        return;
      }
      const first = this.cursor;
      const last = Math.min(this.ring.end, first + BATCH_MAX) - 1;
      const items = this.encodeRange(first, last);
      const routed = this.routeCounts(items);
      const tally: DuplicateTally = { total: 0, allSites: 0 };
      if (this.notice) items.unshift(this.notice);
      this.notice = null;
      const progress = formatProgress({ epoch: held.epoch, digests: this.ring.tail(last, PROGRESS_DIGESTS) });
      const expected = this.lastProgress;
      this.lastProgress = progress;
      this.cursor = last + 1;
      this.inflight++;
      this.d.metrics.leaderBatchEvents.observe(last + 1 - first);
      const started = performance.now();
      const receivedAt = this.ring.receivedAt(first) ?? started;
      this.publisher.publish(held.token, items, expected, progress, tally).then(
        (outcome) => {
          this.inflight--;
          // Routed once Redis ran the batch, less what it skipped as duplicates.
          if (outcome === 'applied') this.countRouted(routed, tally);
          this.confirmed = Math.max(this.confirmed ?? 0, last + 1);
          this.d.metrics.publishToEmit.observe((performance.now() - receivedAt) / 1000);
          if (this.cursor < this.ring.end) this.scheduleFlush();
        },
        (err: unknown) => {
          this.inflight--;
          if (err instanceof FencedError) {
            this.d.metrics.fencedBatches.inc();
            this.stepDown('fenced: another process holds the lease', false);
          } else if (this.held === held) {
            // Unknown outcome (connection lost mid-batch): re-acquire and
            // re-align on the progress recorded in Redis.
            this.d.log.warn({ err: errorMessage(err) }, 'broadcast batch failed');
            this.stepDown('broadcast failed', false);
          }
        },
      );
      if (this.canSend()) this.scheduleFlush();
      this.garbage.check();
    }
    this.d.metrics.consumerLag.set(this.ring.end - this.cursor);
    this.reportRing();
  }

  /** One batch in flight unless a backlog is waiting (see MAX_INFLIGHT). */
  private canSend(): boolean {
    if (this.cursor >= this.ring.end) return false;
    return this.inflight === 0 || (this.inflight < MAX_INFLIGHT && this.ring.end - this.cursor >= PIPELINE_BACKLOG);
  }

  private encodeRange(first: number, last: number): BatchItem[] {
    return this.d.intake.batch(() => this.encodeEach(first, last));
  }

  private encodeEach(first: number, last: number): BatchItem[] {
    const { intake, metrics } = this.d;
    const items: BatchItem[] = [];
    for (let p = first; p <= last; p++) {
      // A message over the size bound is not held by the ring, only its size.
      const raw = this.ring.raw(p);
      const e = raw ? intake.raw(raw, 'redis') : intake.oversized(this.ring.sizeOf(p) ?? 0, 'redis');
      if (!e) continue;
      let item: BatchItem;
      try {
        item = this.encodeEvent(e);
        // Recorded and checked in the broadcast script (BatchPublisher): only events that carry a key.
        if (e.idempotencyKey !== undefined) item = { ...item, dedupKey: this.d.keys.idempotency(e.namespace ?? '', e.idempotencyKey) };
      } catch {
        // Parsed JSON always re-encodes; this guards the encoder itself.
        metrics.eventsDropped.inc({ reason: 'unencodable' });
        this.dropLog.warn('unencodable', { event: e.event.slice(0, 64), room: e.room?.slice(0, 64) ?? null }, 'unencodable event dropped');
        continue;
      }
      items.push(item);
    }
    return items;
  }

  /** The batch's events by target, before the script skips duplicates. */
  private routeCounts(items: readonly BatchItem[]): { rooms: number; allSites: number } {
    let allSites = 0;
    for (const it of items) if (it.channel === this.d.keys.allSitesChannel) allSites++;
    return { rooms: items.length - allSites, allSites };
  }

  /** Once per batch: a labelled increment per event allocates. */
  private countRouted(batch: { rooms: number; allSites: number }, skipped: DuplicateTally): void {
    const { metrics } = this.d;
    const rooms = batch.rooms - (skipped.total - skipped.allSites);
    const allSites = batch.allSites - skipped.allSites;
    if (rooms > 0) metrics.eventsRouted.inc({ target: 'room' }, rooms);
    if (allSites > 0) metrics.eventsRouted.inc({ target: 'all_sites' }, allSites);
  }

  /**
   * Room and room-less events both travel on channels of the workers' adapter
   * subscriber connection, so a client gets them in publish order. Sharded
   * mode: pre-encoded packets; room-less ones carry only the argument list
   * (each worker prefixes it per site namespace).
   */
  private encodeEvent(e: FrappeEvent): BatchItem {
    const { config, keys } = this.d;
    const room = e.namespace !== null ? e.room : null;
    if (config.adapterMode === 'classic') {
      if (room !== null && e.namespace !== null) {
        return { command: 'PUBLISH', ...encodeRoomBroadcast('classic', keys.adapterPrefix, e.namespace, room, e.event, [e.message]) };
      }
      return { command: 'PUBLISH', channel: keys.allSitesChannel, payload: encodeAllSites(e) };
    }
    const args = openEventArgs(e.event, [e.message]);
    const channel = room !== null && e.namespace !== null ? roomChannel(keys.adapterPrefix, e.namespace, room) : keys.allSitesChannel;
    const prefix = room !== null && e.namespace !== null ? `!${sitePacket(e.namespace, '')}` : '!';
    if (config.history) {
      return {
        command: 'SPUBLISH',
        channel,
        payload: prefix,
        history: { namespace: room !== null ? (e.namespace ?? '') : '', room: room ?? '', args },
      };
    }
    return { command: 'SPUBLISH', channel, payload: `${prefix}${closeEventArgs(args, null)}` };
  }

  /** Graceful stop: broadcast what is pending, then release the lease and tell standbys. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.stop();
    this.endHold();
    const held = this.held;
    if (held && !this.aligning) {
      const deadline = performance.now() + 1000;
      while ((this.cursor < this.ring.end || this.inflight > 0) && this.held === held && performance.now() < deadline) {
        this.flush();
        await new Promise((r) => setTimeout(r, 5));
      }
    }
    if (this.held) {
      const h = this.held;
      this.stepDown('shutting down', false);
      try {
        await this.lease.release(h);
        await this.d.cmd.publish(this.d.keys.leaderChannel, 'released');
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'could not release the lease');
      }
    }
  }
}
