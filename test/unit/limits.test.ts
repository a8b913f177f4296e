import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createConnectionCounter } from '../../src/realtime/connection-counter';
import { TokenBucket } from '../../src/shared/token-bucket';
import { createRootLogger } from '../../src/shared/logger';
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

test('connection counter without Redis: counted per key, refused at the limit, released on close', async () => {
  const c = createConnectionCounter({ max: 2, what: 'address', log: createRootLogger('silent') });
  assert.equal(await c.tryOpen('a'), true);
  assert.equal(await c.tryOpen('a'), true);
  assert.equal(await c.tryOpen('a'), false);
  assert.equal(await c.tryOpen('b'), true);
  c.close('a');
  assert.equal(await c.tryOpen('a'), true);
  assert.equal(await c.tryOpen('a'), false);
  c.stop();
});

test('connection counter with max 0 counts nothing and refuses nothing', async () => {
  const c = createConnectionCounter({ max: 0, what: 'address', log: createRootLogger('silent') });
  for (let i = 0; i < 5; i++) assert.equal(await c.tryOpen('a'), true);
});
