// The lean bench client's minimal Engine.IO / Socket.IO frame parsing and
// the hand-built Frappe event text the publisher sends.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { benchFields, frames, frappeEvent, numberAfter, parseFrame } from '../../bench/lib/frames';
import { parseArgs } from '../../bench/run';

describe('parseFrame', () => {
  test('Engine.IO control packets', () => {
    assert.deepEqual(parseFrame('0{"sid":"abc","upgrades":[],"pingInterval":25000}'), { kind: 'open' });
    assert.deepEqual(parseFrame('2'), { kind: 'ping' });
    assert.deepEqual(parseFrame('1'), { kind: 'close' });
    assert.deepEqual(parseFrame('6'), { kind: 'other' });
  });
  test('CONNECT, CONNECT_ERROR and DISCONNECT of a site namespace', () => {
    assert.deepEqual(parseFrame('40/site1.local,{"sid":"x"}'), { kind: 'connect', nsp: '/site1.local' });
    assert.deepEqual(parseFrame('44/site1.local,{"message":"Invalid origin"}'), {
      kind: 'connect_error',
      nsp: '/site1.local',
      message: 'Invalid origin',
    });
    assert.deepEqual(parseFrame('41/site1.local,'), { kind: 'disconnect', nsp: '/site1.local' });
    assert.deepEqual(parseFrame('40'), { kind: 'connect', nsp: '/' });
  });
  test('EVENT: name without parsing the arguments, with or without an ack id', () => {
    const f = parseFrame('42/bench.local,["bench",{"s":17,"t":1712345678901.25}]');
    assert.equal(f.kind, 'event');
    if (f.kind === 'event') {
      assert.equal(f.nsp, '/bench.local');
      assert.equal(f.name, 'bench');
      assert.deepEqual(benchFields(f.body), { seq: 17, t: 1712345678901.25 });
    }
    const acked = parseFrame('42/s,12["doc_viewers",{}]');
    assert.equal(acked.kind === 'event' && acked.name, 'doc_viewers');
    assert.deepEqual(parseFrame('42/s,[1,2]'), { kind: 'other' });
  });
  test('numberAfter: absent key, spaces, exponent, negative', () => {
    assert.ok(Number.isNaN(numberAfter('{"a":1}', 'b')));
    assert.equal(numberAfter('{"s": -1, "t":1e3}', 's'), -1);
    assert.equal(numberAfter('{"s": -1, "t":1e3}', 't'), 1000);
  });
  test('encoders', () => {
    assert.equal(frames.connect('/x'), '40/x,');
    assert.equal(frames.event('/x', ['doc_subscribe', 'ToDo', 'a']), '42/x,["doc_subscribe","ToDo","a"]');
  });
});

describe('frappeEvent', () => {
  test("is valid JSON shaped like Frappe's json.dumps(indent=1, sort_keys=True)", () => {
    const text = frappeEvent('bench', 'site1.local', 'user:a@b.c', 5, 123.5, 'xx');
    assert.deepEqual(JSON.parse(text), {
      event: 'bench',
      message: { s: 5, t: 123.5, p: 'xx' },
      namespace: 'site1.local',
      room: 'user:a@b.c',
    });
    assert.ok(text.startsWith('{\n "event": "bench",\n "message": {\n'));
    assert.equal(JSON.parse(frappeEvent('e', 's', null, 1, 2)).room, null);
  });
});

describe('bench CLI arguments', () => {
  test('scenario, --k v, --k=v and bare flags', () => {
    assert.deepEqual(parseArgs(['fanout', '--runs', '5', '--targets=stock,raw-ws', '--verbose']), {
      scenario: 'fanout',
      flags: { runs: '5', targets: 'stock,raw-ws', verbose: true },
    });
  });
});
