/**
 * The publish API's pure parts (README "Operations"): body checks with the
 * field named, size limit, all-or-nothing batches, drop counting, loopback
 * detection and bearer-token comparison.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Intake } from '../../src/events/intake';
import { createMetrics } from '../../src/metrics/metrics';
import { bearerMatches, checkPublishBody, isLoopback } from '../../src/ops/publish-api';
import { RateLimitedLog } from '../../src/shared/logger';

const MAX = 1024;

function intake(): { intake: Intake; dropped: (reason: string) => Promise<number> } {
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: false });
  const i = new Intake(metrics, new RateLimitedLog(pino({ level: 'silent' }), 0), MAX);
  return {
    intake: i,
    dropped: async (reason) => (await metrics.eventsDropped.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0,
  };
}

const good = { event: 'list_update', message: { name: 'x' }, namespace: 'site1.local', room: 'doctype:ToDo' };

describe('checkPublishBody', () => {
  test('one event or a batch of events is accepted, normalised like the Redis channel', () => {
    const { intake: i } = intake();
    assert.deepEqual(checkPublishBody(good, i, MAX), { ok: true, events: [good] });
    const r = checkPublishBody([good, { event: 'build_event' }], i, MAX);
    assert.ok(r.ok);
    assert.deepEqual(r.events[1], { event: 'build_event', message: {}, room: null, namespace: null });
  });

  test('a bad event is a 400 naming the field (and, in a batch, the index); nothing of the batch is accepted', async () => {
    const { intake: i, dropped } = intake();
    const single = checkPublishBody({ ...good, room: 5 }, i, MAX);
    assert.equal(single.ok, false);
    assert.ok(!single.ok && single.status === 400 && single.body.field === 'room' && single.body.index === undefined);
    const batch = checkPublishBody([good, good, { ...good, namespace: undefined }], i, MAX);
    assert.ok(!batch.ok && batch.status === 400 && batch.body.field === 'namespace' && batch.body.index === 2);
    assert.equal(await dropped('bad_room'), 1);
    assert.equal(await dropped('no_namespace'), 1);
  });

  test('empty and oversized batches are refused', () => {
    const { intake: i } = intake();
    const empty = checkPublishBody([], i, MAX);
    assert.ok(!empty.ok && empty.status === 400);
    const huge = checkPublishBody(new Array(10_001).fill(good), i, MAX);
    assert.ok(!huge.ok && huge.status === 400);
  });

  test('an event over the size limit is a 413 counted as an oversized drop', async () => {
    const { intake: i, dropped } = intake();
    const big = { ...good, message: { blob: 'x'.repeat(MAX) } };
    const r = checkPublishBody([good, big], i, MAX);
    assert.ok(!r.ok && r.status === 413 && r.body.index === 1);
    assert.equal(await dropped('oversized'), 1);
    assert.equal(await dropped('not_object'), 0);
  });
});

describe('isLoopback / bearerMatches', () => {
  test('loopback addresses, IPv4, IPv6 and IPv4-mapped', () => {
    for (const a of ['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1']) assert.equal(isLoopback(a), true, a);
    for (const a of [undefined, '', '192.0.2.2', '::ffff:10.0.0.1', 'fd00::2', '10.127.0.1']) assert.equal(isLoopback(a), false, String(a));
  });

  test('only "Bearer <token>" with exactly the token matches', () => {
    assert.equal(bearerMatches('Bearer s3cret', 's3cret'), true);
    assert.equal(bearerMatches('bearer s3cret', 's3cret'), true);
    for (const h of [undefined, '', 's3cret', 'Basic s3cret', 'Bearer s3cre', 'Bearer s3cret2', 'Bearer '])
      assert.equal(bearerMatches(h, 's3cret'), false, String(h));
  });
});
