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
import { MemoryIdempotency } from '../../src/events/idempotency';
import { parseRawEvent } from '../../src/events/parse';
import { bearerMatches, checkPublishBody, isLoopback, publishFailureAnswer } from '../../src/ops/publish-api';
import { STALLED_REFUSAL } from '../../src/redis/connect';
import { publishFailure } from '../../src/roles/primary';
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

describe('idempotency keys', () => {
  const key = (k: unknown) => ({ ...good, idempotency_key: k });

  test('a key per event in the body, or the Idempotency-Key header for a single event; the header and the field must agree', () => {
    const { intake: i } = intake();
    const batch = checkPublishBody([key('k-1'), good], i, MAX);
    assert.ok(batch.ok);
    assert.equal(batch.events[0]?.idempotencyKey, 'k-1');
    assert.equal('idempotencyKey' in (batch.events[1] ?? {}), false, 'an event without a key carries none');
    const header = checkPublishBody(good, i, MAX, 'k-2');
    assert.ok(header.ok && header.events[0]?.idempotencyKey === 'k-2');
    assert.ok(checkPublishBody(key('k-2'), i, MAX, 'k-2').ok);
    const differ = checkPublishBody(key('k-1'), i, MAX, 'k-2');
    assert.ok(!differ.ok && differ.status === 400 && differ.body.error === 'GW_ERR_BAD_IDEMPOTENCY_KEY');
    const onBatch = checkPublishBody([good], i, MAX, 'k-2');
    assert.ok(!onBatch.ok && onBatch.status === 400 && onBatch.body.field === 'Idempotency-Key');
  });

  test('keys are 1 to 128 visible ASCII characters: anything else is a 400 naming the field, counted as bad_idempotency_key', async () => {
    const { intake: i, dropped } = intake();
    for (const k of ['a', 'x'.repeat(128), 'order:2026-12-01/42#a=b', '~!']) assert.ok(checkPublishBody(key(k), i, MAX).ok, k);
    const bad = ['', ' ', 'a b', 'x'.repeat(129), 'caf\u00e9', 'tab\t', 'nl\n', 5, true, {}, ['k']];
    for (const k of bad) {
      const r = checkPublishBody(key(k), i, MAX);
      assert.ok(!r.ok && r.status === 400 && r.body.field === 'idempotency_key', JSON.stringify(k));
    }
    assert.equal(await dropped('bad_idempotency_key'), bad.length);
    for (const h of ['', 'a b', 'x'.repeat(129), ['a', 'b']]) {
      const r = checkPublishBody(good, i, MAX, h);
      assert.ok(!r.ok && r.status === 400 && r.body.field === 'Idempotency-Key', JSON.stringify(h));
    }
    // null is "no key", as for room and namespace.
    const none = checkPublishBody(key(null), i, MAX);
    assert.ok(none.ok && none.events[0]?.idempotencyKey === undefined);
  });

  test('on the events channel the same field is read and checked', () => {
    const raw = (o: unknown) => {
      const text = JSON.stringify(o);
      return parseRawEvent(text, Buffer.byteLength(text), MAX);
    };
    const ok = raw(key('from-frappe'));
    assert.ok(ok.ok && ok.value.idempotencyKey === 'from-frappe');
    const bad = raw(key('has space'));
    assert.ok(!bad.ok && bad.reason === 'bad_idempotency_key');
  });

  test('standalone memory: a key is a duplicate within the window, per site; expired and evicted keys are new again', () => {
    let now = 0;
    let evicted = 0;
    const m = new MemoryIdempotency(
      1000,
      3,
      () => evicted++,
      () => now,
    );
    assert.equal(m.claim('s1', 'a'), true);
    assert.equal(m.claim('s1', 'a'), false);
    assert.equal(m.claim('s2', 'a'), true, 'keys are per site');
    now = 999;
    assert.equal(m.claim('s1', 'a'), false, 'still within the window');
    now = 1000;
    assert.equal(m.claim('s1', 'a'), true, 'the window is over');
    assert.equal(m.size, 1, 'expired keys are gone');
    m.claim('s1', 'b');
    m.claim('s1', 'c');
    assert.equal(evicted, 0);
    m.claim('s1', 'd');
    assert.equal(evicted, 1, 'past the bound the oldest is forgotten and counted');
    assert.equal(m.size, 3);
    assert.equal(m.claim('s1', 'a'), true, 'the forgotten key is new again');
  });
});

describe('publish failures', () => {
  const notWritable = new Error("Stream isn't writeable and enableOfflineQueue options is false");
  const replyError = Object.assign(new Error('NOPERM this user has no permissions to access the channel'), { name: 'ReplyError' });

  test('503 only when nothing was written; 502 when Redis refused every event; 504 for everything else', () => {
    const cases: [unknown[], boolean, number, string][] = [
      [[notWritable], true, 503, 'GW_ERR_REDIS_UNAVAILABLE'],
      [[new Error(STALLED_REFUSAL)], true, 503, 'GW_ERR_REDIS_UNAVAILABLE'],
      [[new Error('redis did not confirm within 2000 ms (GATEWAY_PUBLISH_TIMEOUT_MS)')], true, 504, 'GW_ERR_PUBLISH_UNCONFIRMED'],
      [
        [new Error('Reached the max retries per request limit (which is 0). Refer to "maxRetriesPerRequest" option for details.')],
        true,
        504,
        'GW_ERR_PUBLISH_UNCONFIRMED',
      ],
      [[new Error('Connection is closed.')], true, 504, 'GW_ERR_PUBLISH_UNCONFIRMED'],
      [[replyError, replyError], true, 502, 'GW_ERR_REDIS_REFUSED'],
      // Some events of the batch went through: neither "nothing" nor "refused".
      [[replyError], false, 504, 'GW_ERR_PUBLISH_UNCONFIRMED'],
      [[notWritable], false, 504, 'GW_ERR_PUBLISH_UNCONFIRMED'],
      [[notWritable, replyError], true, 504, 'GW_ERR_PUBLISH_UNCONFIRMED'],
    ];
    for (const [errors, all, status, error] of cases) {
      const answer = publishFailureAnswer(publishFailure(errors, all));
      assert.equal(answer.status, status, `${String(errors[0])} (all: ${all})`);
      assert.equal(answer.body.error, error);
    }
    // An error that is not the publish's own classification is not known to be unsent.
    assert.equal(publishFailureAnswer(new Error('surprise')).status, 504);
    assert.match(publishFailureAnswer(publishFailure([notWritable], true)).body.message, /redis connection is down: nothing was sent/);
    assert.match(publishFailureAnswer(publishFailure([new Error('x')], true)).body.message, /may or may not be delivered/);
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
