/**
 * docs/protocol.md section 2, the hostile part: names Socket.IO reserves are
 * dropped whatever the room, deep nesting is refused before anything recurses
 * over it, nothing in the intake throws, and the publish API answers 400
 * naming the field.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Intake } from '../../src/events/intake';
import { DROP_REASONS, MAX_DEPTH, RESERVED_EVENTS, parseRawEvent, validateEvent } from '../../src/events/parse';
import { createMetrics } from '../../src/metrics/metrics';
import { checkPublishBody } from '../../src/ops/publish-api';
import { RateLimitedLog } from '../../src/shared/logger';

const MAX = 1024 * 1024;
const parse = (raw: string) => parseRawEvent(raw, Buffer.byteLength(raw), MAX);
const RESERVED = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];

/** `[[...]]` nested `levels` deep. */
function nested(levels: number): string {
  return '['.repeat(levels) + ']'.repeat(levels);
}
function deepValue(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = { a: v };
  return v;
}

function intake(): { intake: Intake; dropped: (reason: string) => Promise<number | undefined> } {
  const metrics = createMetrics(new Registry(), { defaults: false });
  const i = new Intake(metrics, new RateLimitedLog(pino({ level: 'silent' }), 0), 4096);
  return {
    intake: i,
    dropped: async (reason) => (await metrics.eventsDropped.get()).values.find((v) => v.labels.reason === reason)?.value,
  };
}

describe('reserved event names', () => {
  test('the list is exactly the names Socket.IO and EventEmitter reserve', () => {
    assert.deepEqual([...RESERVED_EVENTS].sort(), [...RESERVED].sort());
  });
  for (const name of RESERVED) {
    test(`"${name}" is dropped as reserved_event with a room, without one, and through the API path`, () => {
      for (const o of [
        { event: name, message: {} },
        { event: name, message: {}, room: null, namespace: null },
        { event: name, message: {}, room: 'user:a@example.com', namespace: 'site1.local' },
      ]) {
        const r = parse(JSON.stringify(o));
        assert.equal(r.ok, false);
        assert.equal(!r.ok && r.reason, 'reserved_event');
        assert.equal(!r.ok && r.field, 'event');
        const v = validateEvent(o);
        assert.equal(!v.ok && v.reason, 'reserved_event');
      }
    });
  }
  test('names that only look alike are events like any other', () => {
    for (const name of ['Connect', 'connected', 'disconnect ', 'connect_error_x', 'message', 'error']) {
      assert.ok(parse(JSON.stringify({ event: name, room: 'r', namespace: 's' })).ok, name);
    }
  });
});

describe('nesting depth', () => {
  test(`${MAX_DEPTH} levels (the event object counts as one) pass; one more is too_deep, raw and parsed alike`, () => {
    const ok = `{"event":"e","message":${nested(MAX_DEPTH - 1)}}`;
    const deep = `{"event":"e","message":${nested(MAX_DEPTH)}}`;
    assert.ok(parse(ok).ok);
    assert.ok(validateEvent(JSON.parse(ok)).ok);
    for (const r of [parse(deep), validateEvent(JSON.parse(deep))]) {
      assert.equal(!r.ok && r.reason, 'too_deep');
      assert.equal(!r.ok && r.field, 'message');
    }
  });

  test('10,000 levels (20 KB) are refused without a stack overflow, as text and as an object', () => {
    const text = `{"event":"e","namespace":"s","room":"r","message":${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}}`;
    assert.equal(Buffer.byteLength(text) > 20_000, true);
    assert.equal((parse(text) as { reason: string }).reason, 'too_deep');
    const v = validateEvent({ event: 'e', namespace: 's', room: 'r', message: deepValue(10_000) });
    assert.equal(!v.ok && v.reason, 'too_deep');
    // Much deeper than any recursive walk could go.
    const w = validateEvent({ event: 'e', message: deepValue(1_000_000) });
    assert.equal(!w.ok && w.reason, 'too_deep');
  });

  test('brackets inside strings (escaped quotes included) do not count', () => {
    const s = '['.repeat(500) + '\\"' + '{'.repeat(500);
    const r = parse(JSON.stringify({ event: 'e', message: { s }, room: 'r', namespace: 's' }));
    assert.ok(r.ok);
    assert.equal((r.value.message as { s: string }).s, s);
  });
});

describe('the intake never throws', () => {
  test('every drop reason is exported at 0 from the start', async () => {
    const { dropped } = intake();
    for (const reason of DROP_REASONS) assert.equal(await dropped(reason), 0, reason);
  });

  test('an object whose property getter throws is dropped as malformed_json, not thrown', async () => {
    const { intake: i, dropped } = intake();
    const hostile = {
      get event(): string {
        throw new Error('boom');
      },
    };
    const r = i.object(hostile, 'api');
    assert.equal(!r.ok && r.reason, 'malformed_json');
    assert.equal(await dropped('malformed_json'), 1);
  });

  test('reserved and deep events are counted by reason', async () => {
    const { intake: i, dropped } = intake();
    assert.equal(i.raw(JSON.stringify({ event: 'disconnect', room: 'r', namespace: 's' }), 'redis'), null);
    assert.equal(i.raw(`{"event":"e","message":${nested(200)}}`, 'redis'), null);
    assert.equal(await dropped('reserved_event'), 1);
    assert.equal(await dropped('too_deep'), 1);
  });
});

describe('publish API', () => {
  test('a reserved name is a 400 naming the event field', () => {
    const { intake: i } = intake();
    const r = checkPublishBody({ event: 'connect', message: {}, namespace: 'site1.local', room: 'all' }, i, 4096);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.status, 400);
    assert.equal(!r.ok && r.body.field, 'event');
    assert.equal(!r.ok && r.body.error, 'GW_ERR_BAD_EVENT');
  });
  test('a body nested too deep to stringify is a 400 naming message, not a thrown RangeError', () => {
    const { intake: i } = intake();
    const r = checkPublishBody([{ event: 'e', message: deepValue(1_000_000) }], i, 4096);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.status, 400);
    assert.equal(!r.ok && r.body.field, 'message');
    assert.equal(!r.ok && r.body.index, 0);
  });
});
