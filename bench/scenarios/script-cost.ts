/**
 * script-cost: redis-server's CPU per event for the leader's fenced batch
 * script alone (`BatchPublisher.publish`: fencing, XADD, SPUBLISH, progress),
 * next to Frappe's PUBLISH with one subscriber (what Redis does per event for
 * the stock server), in one redis-server, alternating per run. Paced like the
 * fanout scenario's user rooms: --rate events/s (3000) in batches of --batch
 * (10): one script call, or one pipeline of PUBLISHes (the bench publisher's
 * tick), per batch; --rate 0: unpaced, 8 batches in flight, --batches of them.
 * One subscriber connection holds every room's shard channel (a worker),
 * another the events channel (the stock server, or the leader).
 * Modes (--modes): publish, script (this build), script-nohistory (its items
 * with history off: no XADD), script-before (--before <dist dir>: another
 * build's publisher). No gateway process runs: this is Redis's side of the
 * leader hop, and this process' CPU for building and sending the batches.
 */
import path from 'node:path';
import { Redis } from 'ioredis';
import { closeEventArgs, openEventArgs, roomChannel, sitePacket } from '../../src/events/encode';
import type { BatchItem, BatchPublisher } from '../../src/leader/publisher';
import type { Keys } from '../../src/redis/keys';
import { startRedis } from '../../test/harness';
import { flagList, flagNumber, fmt, fmtSpread, printTable, summarize, type Flags } from '../lib/common';
import { cpuDelta, sampleCpu } from '../lib/proc';
import { SITE, sleep } from '../lib/topology';

interface PublisherModule {
  BatchPublisher: new (client: Redis, keys: Keys, cluster: boolean, limits: { maxEvents: number; maxAgeMs: number }) => BatchPublisher;
}
interface KeysModule {
  createKeys(prefix: string): Keys;
}

interface CostRun {
  valid: boolean;
  redisUsPerEvent: number;
  scriptUsPerEvent: number;
  /** This process' CPU per event: building the items and the command, writing it, reading the replies (the leader's side of it). */
  clientUsPerEvent: number;
  received: number;
  events: number;
}

export async function scriptCost(flags: Flags): Promise<unknown> {
  const rate = flagNumber(flags, 'rate', 3000);
  const batch = flagNumber(flags, 'batch', 10);
  const rooms = flagNumber(flags, 'rooms', 1000);
  const modes = flagList(
    flags,
    'modes',
    typeof flags['before'] === 'string' ? ['publish', 'script-before', 'script'] : ['publish', 'script'],
  );
  const own = {
    pub: (await import('../../src/leader/publisher')) as unknown as PublisherModule,
    keys: (await import('../../src/redis/keys')) as unknown as KeysModule,
  };
  const builds: Record<string, { pub: PublisherModule; keys: KeysModule }> = { script: own, 'script-nohistory': own };
  if (typeof flags['before'] === 'string') {
    const dir = path.resolve(flags['before']);
    builds['script-before'] = {
      pub: (await import(path.join(dir, 'leader', 'publisher.js'))) as PublisherModule,
      keys: (await import(path.join(dir, 'redis', 'keys.js'))) as KeysModule,
    };
  }
  const redis = await startRedis({ label: 'script-cost redis' });
  const cmd = new Redis(redis.url);
  const worker = new Redis(redis.url);
  const events = new Redis(redis.url);
  const results: Record<string, CostRun[]> = {};
  try {
    const keysFor = (m: string): Keys => (builds[m] ?? builds['script'])!.keys.createKeys('bench');
    const keys = keysFor('script');
    const channels = Array.from({ length: rooms }, (_, i) => roomChannel(keys.adapterPrefix, SITE, `user:u${i}`));
    for (let i = 0; i < channels.length; i += 200) await worker.ssubscribe(...channels.slice(i, i + 200));
    await worker.ssubscribe(keys.allSitesChannel);
    await events.subscribe('events');
    let received = 0;
    worker.on('smessageBuffer', () => received++);
    events.on('messageBuffer', () => received++);
    let seq = 0;
    const pad = 'x'.repeat(60);
    for (let run = 0; run < flags.runs; run++) {
      for (const mode of modes) {
        const build = builds[mode];
        if (mode !== 'publish' && !build) throw new Error(`unknown mode ${mode}`);
        const k = keysFor(mode);
        await cmd.del(k.leaderProgress, k.history, k.historyGenesis);
        const token = 'bench|1';
        await cmd.set(k.leaderLease, token);
        const publisher = build ? new build.pub.BatchPublisher(cmd, k, false, { maxEvents: 10_000, maxAgeMs: 60_000 }) : null;
        await cmd.config('RESETSTAT');
        // --rate 0: unpaced, at most 8 batches in flight (the leader's MAX_INFLIGHT), --batches of them.
        const batches = rate > 0 ? Math.round(((rate / batch) * flags.durationMs) / 1000) : flagNumber(flags, 'batches', 20_000);
        let progress = '';
        const r0 = received;
        const cpu0 = sampleCpu([redis.pid]);
        const own0 = process.cpuUsage();
        const t0 = performance.now();
        const pending: Promise<unknown>[] = [];
        for (let b = 0; b < batches; b++) {
          if (rate > 0) {
            const wait = t0 + (b * 1000 * batch) / rate - performance.now();
            if (wait > 0) await sleep(wait);
          } else if (pending.length >= 8) await pending.shift();
          const msgs = Array.from({ length: batch }, () => {
            const s = seq++;
            return { room: `user:u${s % rooms}`, message: { s, t: Date.now(), pad } };
          });
          if (!publisher) {
            const p = cmd.pipeline();
            for (const m of msgs)
              p.publish('events', JSON.stringify({ event: 'bench', message: m.message, room: m.room, namespace: SITE }));
            pending.push(p.exec());
            continue;
          }
          // script-nohistory: the leader's items with GATEWAY_HISTORY off (no XADD, no offset).
          const items: BatchItem[] = msgs.map((m) => {
            const channel = roomChannel(k.adapterPrefix, SITE, m.room);
            const args = openEventArgs('bench', [m.message]);
            return mode === 'script-nohistory'
              ? { command: 'SPUBLISH', channel, payload: `!${sitePacket(SITE, closeEventArgs(args, null))}` }
              : { command: 'SPUBLISH', channel, payload: `!${sitePacket(SITE, '')}`, history: { namespace: SITE, room: m.room, args } };
          });
          const next = `1 ${b}`;
          pending.push(publisher.publish(token, items, progress, next));
          progress = next;
        }
        await Promise.all(pending);
        const own = process.cpuUsage(own0);
        const events = batches * batch;
        // Deliveries are pushed after the replies: bounded wait for the last of them (no event announces the count).
        const deadline = performance.now() + 5000;
        while (received - r0 < events && performance.now() < deadline) await sleep(20);
        const cpu1 = sampleCpu([redis.pid]);
        const redisCpu = cpuDelta(cpu0, cpu1).get(redis.pid) ?? 0;
        const stats = await cmd.info('commandstats');
        const usec = (name: string): number => Number(new RegExp(`cmdstat_${name}:calls=\\d+,usec=(\\d+)`).exec(stats)?.[1] ?? 0);
        const r: CostRun = {
          valid: received - r0 === events,
          redisUsPerEvent: (redisCpu * 1e6) / events,
          scriptUsPerEvent: (publisher ? usec('evalsha') : usec('publish')) / events,
          clientUsPerEvent: (own.user + own.system) / events,
          received: received - r0,
          events,
        };
        console.error(
          `[script-cost] run ${run + 1} ${mode}: redis ${fmt(r.redisUsPerEvent, 2)} us/event, ${publisher ? 'evalsha' : 'publish'} ${fmt(r.scriptUsPerEvent, 2)} us/event, client ${fmt(r.clientUsPerEvent, 2)} us/event, received ${r.received}/${events}`,
        );
        (results[mode] ??= []).push(r);
      }
    }
  } finally {
    cmd.disconnect();
    worker.disconnect();
    events.disconnect();
    await redis.close();
  }
  const base = summarize(results['publish'] ?? [], (r) => r.redisUsPerEvent).median;
  printTable(
    `script-cost: ${rate} events/s in batches of ${batch}, ${rooms} user rooms, ${flags.durationMs / 1000} s per run, median (min-max)`,
    ['mode', 'redis CPU us/event', 'x publish', 'command us/event (commandstats)', 'client CPU us/event', 'received', 'valid'],
    Object.entries(results).map(([mode, runs]) => {
      const s = summarize(runs, (r) => r.redisUsPerEvent);
      return [
        mode,
        fmtSpread(s, 2),
        base > 0 ? fmt(s.median / base, 2) : '-',
        fmtSpread(
          summarize(runs, (r) => r.scriptUsPerEvent),
          2,
        ),
        fmtSpread(
          summarize(runs, (r) => r.clientUsPerEvent),
          2,
        ),
        `${runs.reduce((a, r) => a + r.received, 0)}/${runs.reduce((a, r) => a + r.events, 0)}`,
        `${runs.filter((r) => r.valid).length}/${runs.length}`,
      ];
    }),
  );
  return { rate, batch, rooms, results };
}
