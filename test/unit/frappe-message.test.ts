/**
 * Parsing of events-channel messages (docs/protocol.md section 2): Frappe's exact
 * bytes, the shared fixtures, and every drop reason.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseRawEvent, validateEvent, type DropReason } from '../../src/events/parse';
import { frappeJson, loadFrappeFixtures } from '../harness';

const MAX = 4096;
const parse = (raw: string) => parseRawEvent(raw, Buffer.byteLength(raw), MAX);

describe('parseRawEvent / validateEvent', () => {
  test('the docs/protocol.md section 2 message, byte for byte', () => {
    const raw =
      '{\n "event": "list_update",\n "message": {\n  "doctype": "ToDo",\n  "name": "abc123",\n  "user": "Administrator"\n },\n "namespace": "site1.local",\n "room": "doctype:ToDo"\n}';
    assert.deepEqual(parse(raw), {
      ok: true,
      value: {
        event: 'list_update',
        message: { doctype: 'ToDo', name: 'abc123', user: 'Administrator' },
        room: 'doctype:ToDo',
        namespace: 'site1.local',
      },
    });
  });

  test('every fixture of frappe-events.txt parses to what it says, \\u escapes decoded', () => {
    const fixtures = loadFrappeFixtures();
    assert.ok(fixtures.length >= 10);
    for (const f of fixtures) {
      const r = parseRawEvent(f.raw, Buffer.byteLength(f.raw), 1024 * 1024);
      assert.ok(r.ok, `${f.parsed.event}: ${r.ok ? '' : r.detail}`);
      assert.equal(r.value.event, f.parsed.event);
      assert.deepEqual(r.value.message, f.parsed.message);
      assert.equal(r.value.room, f.parsed.room ?? null);
      assert.equal(r.value.namespace, f.parsed.room ? f.parsed.namespace : (f.parsed.namespace ?? null));
    }
    const msgprint = fixtures.find((f) => f.parsed.event === 'msgprint');
    assert.ok(msgprint?.raw.includes('\\u00f3'));
    const r = parse(msgprint?.raw ?? '');
    assert.ok(r.ok && r.value.message === 'Relatório pronto');
  });

  test('no room (or an empty room) means every site; an absent message becomes {}', () => {
    for (const o of [
      { event: 'build_event' },
      { event: 'build_event', room: null, namespace: null },
      { event: 'build_event', room: '', namespace: 'site1.local' },
    ]) {
      const r = validateEvent(o);
      assert.ok(r.ok);
      assert.equal(r.value.room, null);
      assert.deepEqual(r.value.message, {});
    }
    const withMessage = validateEvent({ event: 'e', message: null, room: 'r', namespace: 's' });
    assert.ok(withMessage.ok);
    assert.equal(withMessage.value.message, null, 'an explicit null message is kept');
  });

  const drops: [string, unknown, DropReason, string | undefined][] = [
    ['malformed JSON', '{"event": "x", ', 'malformed_json', undefined],
    ['a JSON array', [1, 2], 'not_object', undefined],
    ['a JSON string', 'x', 'not_object', undefined],
    ['null', null, 'not_object', undefined],
    ['event missing', { message: {}, room: 'r', namespace: 's' }, 'bad_event', 'event'],
    ['event not a string', { event: 5, room: 'r', namespace: 's' }, 'bad_event', 'event'],
    ['event empty', { event: '', room: 'r', namespace: 's' }, 'bad_event', 'event'],
    ['event too long', { event: 'e'.repeat(300), room: 'r', namespace: 's' }, 'bad_event', 'event'],
    ['room not a string', { event: 'e', room: 12, namespace: 's' }, 'bad_room', 'room'],
    ['room an object', { event: 'e', room: { a: 1 }, namespace: 's' }, 'bad_room', 'room'],
    ['namespace not a string', { event: 'e', room: 'r', namespace: ['s'] }, 'bad_namespace', 'namespace'],
    ['namespace with a slash', { event: 'e', room: 'r', namespace: '/site1.local' }, 'bad_namespace', 'namespace'],
    ['namespace with a space', { event: 'e', room: 'r', namespace: 'site 1' }, 'bad_namespace', 'namespace'],
    ['room without namespace', { event: 'e', room: 'website' }, 'no_namespace', 'namespace'],
    ['room with a null namespace', { event: 'e', room: 'website', namespace: null }, 'no_namespace', 'namespace'],
  ];
  for (const [what, input, reason, field] of drops) {
    test(`dropped: ${what} -> ${reason}`, () => {
      const r = typeof input === 'string' && reason === 'malformed_json' ? parse(input) : parse(JSON.stringify(input));
      assert.equal(r.ok, false);
      if (r.ok) return;
      assert.equal(r.reason, reason);
      assert.equal(r.field, field);
      assert.ok(r.detail.length > 0);
    });
  }

  test('oversized messages are refused by size before any parsing', () => {
    const big = frappeJson({ event: 'e', message: { blob: 'x'.repeat(MAX) }, namespace: 's', room: 'r' });
    const r = parseRawEvent('this is not even JSON', Buffer.byteLength(big), MAX);
    assert.equal(r.ok, false);
    assert.equal(!r.ok && r.reason, 'oversized');
    assert.ok(parse(frappeJson({ event: 'e', message: { blob: 'x'.repeat(MAX - 100) }, namespace: 's', room: 'r' })).ok);
  });
});
