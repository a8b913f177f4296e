import assert from 'node:assert/strict';
import { test } from 'node:test';
import { frappeJson, loadFrappeFixtures, pyFloat } from '../harness/clients';

// docs/protocol.md section 2, byte for byte.
const PROTOCOL_EXAMPLE =
  '{\n "event": "list_update",\n "message": {\n  "doctype": "ToDo",\n  "name": "abc123",\n  "user": "Administrator"\n },\n "namespace": "site1.local",\n "room": "doctype:ToDo"\n}';

test('frappeJson reproduces every shared fixture byte for byte', () => {
  const fixtures = loadFrappeFixtures();
  assert.ok(fixtures.length >= 12, `expected at least 12 fixtures, got ${fixtures.length}`);
  for (const fixture of fixtures) {
    assert.equal(frappeJson(JSON.parse(fixture.raw)), fixture.raw);
    assert.equal(frappeJson(fixture.parsed), fixture.raw);
  }
});

test('fixtures keep non-ASCII as \\u escapes and include a no-room publish', () => {
  const fixtures = loadFrappeFixtures();
  assert.ok(fixtures.some((f) => f.raw.includes('\\u00e0')));
  assert.ok(fixtures.some((f) => f.parsed.room === undefined && f.parsed.namespace === undefined));
  for (const f of fixtures) assert.ok(!f.raw.startsWith('#') && !f.raw.includes('\n---'));
});

test('frappeJson reproduces the docs/protocol.md section 2 example', () => {
  assert.equal(
    frappeJson({
      room: 'doctype:ToDo',
      namespace: 'site1.local',
      message: { user: 'Administrator', name: 'abc123', doctype: 'ToDo' },
      event: 'list_update',
    }),
    PROTOCOL_EXAMPLE,
  );
});

// Expected strings below were produced by CPython 3 json.dumps with Frappe's arguments.
test('frappeJson: code-point key order, surrogate pairs, empty containers, nesting', () => {
  const value = { emoji: '😀 ok', é: 'x', '\uff01': 1, '😀': 2, a: [], b: {}, c: [1, [2, {}], null, true, false] };
  assert.equal(
    frappeJson(value),
    '{\n "a": [],\n "b": {},\n "c": [\n  1,\n  [\n   2,\n   {}\n  ],\n  null,\n  true,\n  false\n ],\n "emoji": "\\ud83d\\ude00 ok",\n "\\u00e9": "x",\n "\\uff01": 1,\n "\\ud83d\\ude00": 2\n}',
  );
});

test('frappeJson: control characters and DEL are escaped like ensure_ascii', () => {
  assert.equal(frappeJson('a"b\\c\n\r\t\b\f\u0000\u001f\u007f~ '), '"a\\"b\\\\c\\n\\r\\t\\b\\f\\u0000\\u001f\\u007f~ "');
});

test('frappeJson: floats use Python repr, integral numbers are ints', () => {
  const floats = [
    0.5,
    -2.25,
    1e-5,
    0.0001,
    1.5e-7,
    pyFloat(1e16),
    pyFloat(1e15),
    123456789012345.6,
    pyFloat(1.7976931348623157e308),
    5e-324,
    0.1,
    pyFloat(1e22),
    -1e-7,
  ];
  assert.equal(
    frappeJson(floats),
    '[\n 0.5,\n -2.25,\n 1e-05,\n 0.0001,\n 1.5e-07,\n 1e+16,\n 1000000000000000.0,\n 123456789012345.6,\n 1.7976931348623157e+308,\n 5e-324,\n 0.1,\n 1e+22,\n -1e-07\n]',
  );
  assert.equal(frappeJson([0, -1, 100000000000000000000, 9007199254740991]), '[\n 0,\n -1,\n 100000000000000000000,\n 9007199254740991\n]');
  assert.equal(frappeJson(pyFloat(42)), '42.0');
});

test('frappeJson: undefined members are skipped like JSON.stringify, cycles throw', () => {
  assert.equal(frappeJson({ a: undefined, b: [undefined] }), '{\n "b": [\n  null\n ]\n}');
  const cyclic: Record<string, unknown> = {};
  cyclic['self'] = cyclic;
  assert.throws(() => frappeJson(cyclic), /circular/);
});
