/**
 * Publisher process: offers `bench` events at a fixed rate, either on the
 * Redis events channel (Frappe's way) or through the gateway's HTTP publish
 * API (standalone). Reports what it achieved and its own CPU, so a run where
 * the publisher fell behind is refused.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { Redis } from 'ioredis';
import { frappeEvent, nowMs } from './frames';
import type { PublishCommand, PublishResult } from './publisher-protocol';

const TICK_MS = 2;
/** A tick later than this (ms) means the publisher itself could not keep its schedule. */
const BACKLOG_MS = 250;

async function run(cmd: PublishCommand): Promise<PublishResult> {
  const cpu0 = process.cpuUsage();
  const targets = cmd.targets;
  const total = Math.round((cmd.rate * cmd.durationMs) / 1000);
  let sent = 0;
  let acked = 0;
  let errors = 0;
  let maxBacklog = 0;
  let lateTicks = 0;
  const pad = cmd.padBytes > 0 ? 'x'.repeat(cmd.padBytes) : '';
  // Unique per run: the runs of one step share a gateway, whose window would drop a repeated key.
  const keyPrefix = cmd.keys === true ? `${randomUUID()}-` : null;

  let redis: Redis | undefined;
  let agent: http.Agent | undefined;
  if (cmd.mode === 'redis') {
    redis = new Redis(cmd.redisUrl ?? '', { enableAutoPipelining: true, lazyConnect: true, maxRetriesPerRequest: 1 });
    redis.on('error', () => undefined);
    await redis.connect();
  } else {
    agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  }

  const postBatch = (events: object[]): Promise<void> =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify(events);
      const u = new URL(cmd.httpUrl ?? '');
      const req = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: u.pathname,
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on('end', () => ((res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`publish API answered ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });

  const t0 = performance.now();
  let lastTick = t0;
  await new Promise<void>((done) => {
    const tick = (): void => {
      const elapsed = performance.now() - t0;
      const due = Math.min(total, Math.floor((elapsed / 1000) * cmd.rate));
      const n = due - sent;
      if (n > 0) {
        const t = nowMs();
        if (redis) {
          for (let i = 0; i < n; i++) {
            const seq = cmd.seqStart + sent + i;
            const target = targets[(sent + i) % targets.length] as { ns: string; room: string | null };
            const key = keyPrefix === null ? undefined : `${keyPrefix}${seq}`;
            redis.publish(cmd.channel, frappeEvent('bench', target.ns, target.room, seq, t, pad, key)).then(
              () => acked++,
              () => errors++,
            );
          }
        } else {
          const batch: object[] = [];
          for (let i = 0; i < n; i++) {
            const seq = cmd.seqStart + sent + i;
            const target = targets[(sent + i) % targets.length] as { ns: string; room: string | null };
            batch.push({
              event: 'bench',
              message: pad ? { s: seq, t, p: pad } : { s: seq, t },
              namespace: target.ns,
              room: target.room,
              ...(keyPrefix === null ? {} : { idempotency_key: `${keyPrefix}${seq}` }),
            });
          }
          postBatch(batch).then(
            () => (acked += n),
            () => (errors += n),
          );
        }
        sent += n;
      }
      const backlog = sent - acked - errors;
      if (backlog > maxBacklog) maxBacklog = backlog;
      // The loop itself ran late (this process could not keep up): more than BACKLOG_MS since the previous tick.
      const now = performance.now();
      if (now - lastTick > BACKLOG_MS) lateTicks++;
      lastTick = now;
      if (sent >= total) return done();
      setTimeout(tick, TICK_MS);
    };
    tick();
  });
  const sendEnd = performance.now();
  const deadline = sendEnd + 10_000;
  while (acked + errors < sent && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  const ackEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  if (redis) redis.disconnect();
  agent?.destroy();
  const wallMs = ackEnd - t0;
  const achievedRate = (acked / Math.max(1, sendEnd - t0)) * 1000;
  const behind = errors > 0 || acked < sent || achievedRate < cmd.rate * 0.97 || lateTicks > 2;
  return {
    type: 'published',
    sent,
    acked,
    errors,
    wallMs,
    sendMs: sendEnd - t0,
    cpuMs: (cpu.user + cpu.system) / 1000,
    achievedRate,
    maxBacklog,
    behind,
  };
}

process.on('message', (raw: unknown) => {
  const cmd = raw as PublishCommand;
  run(cmd).then(
    (r) => process.send?.(r),
    (err: unknown) => process.send?.({ type: 'error', message: err instanceof Error ? err.message : String(err) }),
  );
});
process.on('disconnect', () => process.exit(0));
process.send?.({ type: 'ready' });
