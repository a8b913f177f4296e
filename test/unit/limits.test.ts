import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectionsPerIp, TokenBucket } from '../../src/realtime/limits';
import { GatewayError } from '../../src/shared/errors';
import { Semaphore } from '../../src/shared/semaphore';

test('token bucket: exactly `burst` events at once, then `rate` per second', () => {
  const b = new TokenBucket(50, 100, 0);
  let taken = 0;
  while (b.take(0)) taken++;
  assert.equal(taken, 100);
  assert.equal(b.take(19), false, 'less than one token after 19 ms at 50/s');
  assert.equal(b.take(20), true, 'one token after 20 ms');
  assert.equal(b.take(20), false);
  let later = 0;
  while (b.take(1020)) later++;
  assert.equal(later, 50, 'one second refills 50');
});

test('semaphore: at most maxWaiting calls wait; the next fails fast with GW_ERR_BACKEND_QUEUE_FULL and runs nothing', async () => {
  const s = new Semaphore(1, 2);
  const gates: (() => void)[] = [];
  const hold = () => new Promise<void>((r) => gates.push(r));
  const running = [s.run(hold), s.run(hold), s.run(hold)];
  assert.equal(s.pending, 2);
  assert.equal(s.full, true);
  let ran = false;
  await assert.rejects(
    s.run(async () => {
      ran = true;
    }),
    (err: unknown) => err instanceof GatewayError && err.code === 'GW_ERR_BACKEND_QUEUE_FULL',
  );
  assert.equal(ran, false);
  gates.shift()?.();
  await running[0];
  assert.equal(s.full, false, 'a slot freed: one more may wait');
  for (const p of running.slice(1)) {
    while (gates.length === 0) await new Promise((r) => setImmediate(r));
    gates.shift()?.();
    await p;
  }
});

test('connections per address: counted per address, released on close', () => {
  const c = new ConnectionsPerIp(2);
  assert.equal(c.tryOpen('a'), true);
  assert.equal(c.tryOpen('a'), true);
  assert.equal(c.tryOpen('a'), false);
  assert.equal(c.tryOpen('b'), true);
  c.close('a');
  assert.equal(c.count('a'), 1);
  assert.equal(c.tryOpen('a'), true);
});
