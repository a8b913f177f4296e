/**
 * Property-based checks of the events parser (docs/protocol.md section 2):
 * for any input it returns a result instead of throwing, what it accepts has
 * the documented shape, and reserved names and deep nesting never get through.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { DROP_REASONS, MAX_DEPTH, RESERVED_EVENTS, parseRawEvent, validateEvent, type ParseResult } from '../../src/events/parse';

const MAX = 64 * 1024;
const parse = (raw: string): ParseResult => parseRawEvent(raw, Buffer.byteLength(raw), MAX);

function depthOf(value: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[value, 1]];
  for (let top = stack.pop(); top; top = stack.pop()) {
    const [v, d] = top;
    if (v === null || typeof v !== 'object') continue;
    max = Math.max(max, d);
    for (const c of Object.values(v)) stack.push([c, d + 1]);
  }
  return max;
}

/** The documented shape of an accepted event, checked against what was sent. */
function assertShape(r: ParseResult, sent: unknown): void {
  if (!r.ok) {
    assert.ok((DROP_REASONS as readonly string[]).includes(r.reason), r.reason);
    assert.ok(r.detail.length > 0);
    return;
  }
  const o = sent as Record<string, unknown>;
  const e = r.value;
  assert.equal(typeof e.event, 'string');
  assert.ok(e.event.length >= 1 && e.event.length <= 256);
  assert.ok(!RESERVED_EVENTS.has(e.event), `reserved ${e.event} accepted`);
  assert.equal(e.event, o.event);
  assert.deepEqual(e.message, o.message === undefined ? {} : o.message);
  assert.ok(depthOf(sent) <= MAX_DEPTH);
  if (e.room === null) {
    assert.ok(o.room === undefined || o.room === null || o.room === '');
  } else {
    assert.equal(e.room, o.room);
    assert.ok(e.room.length >= 1 && e.room.length <= 1024);
    assert.equal(typeof e.namespace, 'string');
  }
  if (e.namespace !== null) {
    assert.equal(e.namespace, o.namespace);
    assert.match(e.namespace, /^[^\s/]{1,253}$/);
  }
}

const eventName = fc.oneof(
  fc.constantFrom(...RESERVED_EVENTS, 'list_update', 'msgprint', ''),
  fc.string({ maxLength: 300 }),
  fc.anything(),
);
const roomLike = fc.oneof(fc.constant(undefined), fc.constant(null), fc.constant(''), fc.string({ maxLength: 1100 }), fc.anything());
const nsLike = fc.oneof(fc.constant(undefined), fc.constant(null), fc.constantFrom('site1.local', '/x', 'a b'), fc.string(), fc.anything());
const eventLike = fc.record(
  { event: eventName, message: fc.jsonValue({ maxDepth: 8 }), room: roomLike, namespace: nsLike },
  { requiredKeys: [] },
);

test('arbitrary JSON values: never throws, raw and parsed paths agree, accepted events have the documented shape', () => {
  fc.assert(
    fc.property(fc.oneof(eventLike, fc.jsonValue()), (value) => {
      const text = JSON.stringify(value);
      if (text === undefined) return;
      const fromObject = validateEvent(JSON.parse(text));
      const fromRaw = parse(text);
      assert.deepEqual(fromRaw, fromObject);
      assertShape(fromRaw, JSON.parse(text));
    }),
    { numRuns: 2000 },
  );
});

test('arbitrary strings (and truncated or mangled JSON): never throws, any drop reason is a documented one', () => {
  const mangled = fc.tuple(eventLike, fc.nat(), fc.string({ maxLength: 4 })).map(([v, at, junk]) => {
    const t = JSON.stringify(v) ?? '';
    const i = t.length === 0 ? 0 : at % t.length;
    return t.slice(0, i) + junk + t.slice(i + 1);
  });
  fc.assert(
    fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), mangled), (s) => {
      const r = parse(s);
      let sent: unknown;
      try {
        sent = JSON.parse(s);
      } catch {
        assert.equal(r.ok, false);
        return;
      }
      assertShape(r, sent);
    }),
    { numRuns: 2000 },
  );
});

test('deep nesting: accepted exactly up to MAX_DEPTH levels, whatever the brackets and wherever they are', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 3 * MAX_DEPTH }),
      fc.array(fc.boolean(), { minLength: 3 * MAX_DEPTH, maxLength: 3 * MAX_DEPTH }),
      fc.constantFrom('message', 'other'),
      (levels, kinds, key) => {
        let v: unknown = 'leaf';
        for (let i = 0; i < levels; i++) v = kinds[i] ? [v] : { k: v };
        const o = { event: 'e', [key]: v };
        const r = parse(JSON.stringify(o));
        if (levels + 1 > MAX_DEPTH) assert.equal(!r.ok && r.reason, 'too_deep');
        else assert.ok(r.ok);
        assert.deepEqual(validateEvent(o), r);
      },
    ),
    { numRuns: 500 },
  );
});

test('reserved names are never accepted, whatever else the event holds', () => {
  fc.assert(
    fc.property(fc.constantFrom(...RESERVED_EVENTS), roomLike, nsLike, fc.jsonValue({ maxDepth: 4 }), (event, room, namespace, message) => {
      const r = validateEvent({ event, room, namespace, message });
      assert.equal(r.ok, false);
    }),
    { numRuns: 500 },
  );
});
