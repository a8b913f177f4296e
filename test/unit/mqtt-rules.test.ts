/**
 * MQTT ingress rules and custom room patterns (docs/mqtt.md): topic filter
 * matching, `{n}` templates, payload decoding, drop reasons, and the
 * configuration checks that report every problem at once.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadConfig, type MqttRule } from '../../src/config';
import { parseCustomRooms, parseMqttRules } from '../../src/config/mqtt-config';
import { compileRoomPattern, findRoomPattern, latestKey } from '../../src/events/room-patterns';
import { decodePayload, expand, mapMessage, topicMatches } from '../../src/ingress/mqtt-rules';
import { createKeys } from '../../src/redis/keys';

const rule = (over: Partial<MqttRule> = {}): MqttRule => ({
  name: 'status',
  topic: 'factory/+/sensor/+/status',
  site: 'site1.local',
  room: 'sensor:{4}',
  event: 'sensor_status_change',
  qos: 1,
  ...over,
});

describe('topic filters', () => {
  const cases: [string, string, boolean][] = [
    ['factory/+/sensor/+/status', 'factory/l1/sensor/42/status', true],
    ['factory/+/sensor/+/status', 'factory/l1/sensor/42/status/x', false],
    ['factory/+/sensor/+/status', 'factory/l1/sensor/status', false],
    ['factory/#', 'factory', true],
    ['factory/#', 'factory/a/b/c', true],
    ['factory/a', 'factory/b', false],
    ['+/x', '$SYS/x', false],
    ['#', '$SYS/broker/load', false],
    ['$SYS/#', '$SYS/broker/load', true],
    ['a/+/c', 'a//c', true],
  ];
  for (const [filter, topic, expected] of cases) {
    test(`${filter} ${expected ? 'matches' : 'does not match'} ${topic}`, () => {
      assert.equal(topicMatches(filter, topic), expected);
    });
  }
});

describe('templates and payloads', () => {
  test('{n} is the n-th topic level, 1-based; an absent or empty level is refused', () => {
    const levels = 'factory/l1/sensor/42/status'.split('/');
    assert.equal(expand('sensor:{4}', levels), 'sensor:42');
    assert.equal(expand('{2}-{5}', levels), 'l1-status');
    assert.equal(expand('{6}', levels), null);
    assert.equal(expand('x{3}', 'a//c'.split('/')), 'xc');
    assert.equal(expand('x{2}', 'a//c'.split('/')), null);
  });

  test('JSON payloads become the message as JSON, anything else as text; binary, empty, oversized and deep payloads are refused', () => {
    assert.deepEqual(decodePayload(Buffer.from('{"t":21.5,"ok":true}'), 1000), { ok: true, message: { t: 21.5, ok: true } });
    assert.deepEqual(decodePayload(Buffer.from('42'), 1000), { ok: true, message: 42 });
    assert.deepEqual(decodePayload(Buffer.from('ALARM high temp'), 1000), { ok: true, message: 'ALARM high temp' });
    assert.deepEqual(decodePayload(Buffer.from('{"broken"'), 1000), { ok: true, message: '{"broken"' });
    assert.deepEqual(decodePayload(Buffer.from([0xff, 0xfe, 0x00]), 1000), { ok: false, reason: 'bad_payload' });
    assert.deepEqual(decodePayload(Buffer.alloc(0), 1000), { ok: false, reason: 'empty_payload' });
    assert.deepEqual(decodePayload(Buffer.alloc(1001, 0x61), 1000), { ok: false, reason: 'oversized' });
    assert.deepEqual(decodePayload(Buffer.from('['.repeat(70) + ']'.repeat(70)), 10_000), { ok: false, reason: 'too_deep' });
  });

  test('mapMessage builds the Frappe event of the first matching rule, and names the drop reason otherwise', () => {
    const rules = [rule(), rule({ name: 'site-from-topic', topic: 'sites/+/alarm', site: '{2}', room: 'alarms', event: 'alarm_{3}' })];
    const m = mapMessage(rules, 'factory/l1/sensor/42/status', Buffer.from('{"state":"RUN"}'), 1000);
    assert.ok(m.ok);
    assert.equal(m.rule.name, 'status');
    assert.deepEqual(m.event, { event: 'sensor_status_change', message: { state: 'RUN' }, room: 'sensor:42', namespace: 'site1.local' });
    const s = mapMessage(rules, 'sites/plant2.local/alarm', Buffer.from('overheat'), 1000);
    assert.ok(s.ok);
    assert.deepEqual(s.event, { event: 'alarm_alarm', message: 'overheat', room: 'alarms', namespace: 'plant2.local' });

    const none = mapMessage(rules, 'other/topic', Buffer.from('1'), 1000);
    assert.deepEqual(none.ok ? null : [none.rule, none.reason], ['none', 'no_rule']);
    const bin = mapMessage(rules, 'factory/l1/sensor/42/status', Buffer.from([0xc3, 0x28]), 1000);
    assert.deepEqual(bin.ok ? null : [bin.rule, bin.reason], ['status', 'bad_payload']);
    // A site with whitespace or `/` can never be a namespace.
    const badSite = mapMessage(rules, 'sites/a b/alarm', Buffer.from('x'), 1000);
    assert.deepEqual(badSite.ok ? null : [badSite.rule, badSite.reason], ['site-from-topic', 'bad_target']);
    const reserved = mapMessage(
      [rule({ topic: 'factory/+/sensor/+/+', event: '{5}' })],
      'factory/l1/sensor/42/disconnect',
      Buffer.from('x'),
      1000,
    );
    assert.deepEqual(reserved.ok ? null : reserved.reason, 'bad_target');
  });
});

describe('custom room patterns', () => {
  test('sensor:{id} matches sensor:42 and fills the permission templates', () => {
    const p = compileRoomPattern({ pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', latest: true, conflate: false });
    assert.deepEqual(p.match('sensor:42'), { id: '42' });
    assert.deepEqual(p.match('sensor:a:b'), { id: 'a:b' });
    assert.equal(p.match('sensor:'), null);
    assert.equal(p.match('xsensor:42'), null);
    assert.equal(p.fill('{id}', { id: '42' }), '42');
    const two = compileRoomPattern({
      pattern: 'line:{line}:machine:{m}',
      doctype: 'Machine',
      name: '{line}-{m}',
      latest: false,
      conflate: true,
    });
    assert.deepEqual(two.match('line:L1:machine:M7'), { line: 'L1', m: 'M7' });
    assert.equal(two.match('line:L1:x:machine:M7'), null);
    assert.equal(findRoomPattern([p, two], 'line:L1:machine:M7')?.pattern, two);
    assert.equal(findRoomPattern([p, two], 'doc:ToDo/1'), null);
  });

  test('latest values live under the cluster prefix, hash-tagged with the redelivery markers', () => {
    assert.equal(latestKey(createKeys('rtg'), 'site1.local', 'sensor:42'), '{rtg}:latest:site1.local:sensor:42');
  });
});

describe('configuration', () => {
  test('every problem of the rules is reported, with where it is', () => {
    const problems: string[] = [];
    const text = JSON.stringify([
      { topic: 'a/#/b', site: 's', room: 'r', event: 'e' },
      { topic: 'a/+', site: 's', room: 'r{3}', event: 'e', qos: 2 },
      { topic: 'x', site: '', room: 'r', event: 'e', extra: 1 },
      'nope',
      { topic: '$share/g/a', site: 's', room: 'r', event: 'e' },
    ]);
    assert.deepEqual(parseMqttRules('GATEWAY_MQTT_RULES', text, 1, problems), []);
    const expected = [
      /\[0\]\.topic "a\/#\/b" `#` must be the whole last level/,
      /\[1\]\.qos must be 0 or 1/,
      /\[1\]\.room refers to topic level \{3\}, the filter "a\/\+" has levels 1-2/,
      /\[2\]\.site must be a non-empty string/,
      /\[2\] has an unknown key "extra"/,
      /\[3\] must be an object/,
      /\[4\]\.topic "\$share\/g\/a" must not be a shared subscription/,
    ];
    for (const re of expected)
      assert.ok(
        problems.some((p) => re.test(p)),
        `${re} in:\n${problems.join('\n')}`,
      );
    assert.equal(problems.length, expected.length, problems.join('\n'));
  });

  test('custom room patterns are checked: placeholders defined, no fixed rooms, booleans', () => {
    const problems: string[] = [];
    const text = JSON.stringify([
      { pattern: 'sensor:{id}', doctype: 'Sensor', name: '{sid}' },
      { pattern: 'fixed', doctype: 'X' },
      { pattern: 'm:{a}{b}', doctype: 'X', latest: 'yes' },
      { pattern: 'user:{u}', doctype: 'User', name: '{u}' },
      { pattern: '{anything}', doctype: 'X' },
      { pattern: 'alliance:{x}', doctype: 'X' },
    ]);
    // Only the last one is valid: a literal prefix that merely starts like `all` is not Frappe's room.
    assert.deepEqual(
      parseCustomRooms('GATEWAY_CUSTOM_ROOMS', text, problems).map((r) => r.pattern),
      ['alliance:{x}'],
    );
    assert.equal(problems.length, 6, problems.join('\n'));
    assert.match(problems.join('\n'), /"user:\{u\}" could name Frappe's own rooms \(user:/);
    assert.match(problems.join('\n'), /"\{anything\}" could name Frappe's own rooms/);
    assert.match(problems.join('\n'), /\{sid\}, which the pattern "sensor:\{id\}" does not define/);
    assert.match(problems.join('\n'), /"fixed" has no \{placeholder\}/);
    assert.match(problems.join('\n'), /latest must be true or false/);
    assert.match(problems.join('\n'), /adjacent placeholders/);
  });

  test('loadConfig: MQTT needs Redis and rules; rules from a file; the client id is shared by the cluster', (t) => {
    const r = loadConfig({ GATEWAY_MQTT_URL: 'mqtt://127.0.0.1:1', GATEWAY_CUSTOM_ROOMS: 'not json' });
    assert.ok(!r.ok);
    assert.ok(r.errors.some((e) => /GATEWAY_MQTT_URL needs GATEWAY_REDIS_URL/.test(e)));
    assert.ok(r.errors.some((e) => /neither GATEWAY_MQTT_RULES nor GATEWAY_MQTT_RULES_FILE/.test(e)));
    assert.ok(r.errors.some((e) => /GATEWAY_CUSTOM_ROOMS is not valid JSON/.test(e)));
    const bad = loadConfig({ GATEWAY_REDIS_URL: 'redis://127.0.0.1:1', GATEWAY_MQTT_URL: 'http://broker' });
    assert.ok(!bad.ok && bad.errors.some((e) => /GATEWAY_MQTT_URL must use mqtt: or mqtts:/.test(e)));

    const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-unit-mqtt-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'rules.json');
    writeFileSync(
      file,
      JSON.stringify([{ topic: 'factory/+/sensor/+/status', site: 'site1.local', room: 'sensor:{4}', event: 'e', qos: 0 }]),
    );
    const ok = loadConfig({
      GATEWAY_REDIS_URL: 'redis://127.0.0.1:1',
      GATEWAY_KEY_PREFIX: 'plant',
      GATEWAY_MQTT_URL: 'mqtts://broker:8883',
      GATEWAY_MQTT_RULES_FILE: file,
      GATEWAY_MQTT_PASSWORD: 'pw',
      GATEWAY_CUSTOM_ROOMS: JSON.stringify([{ pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', latest: true }]),
    });
    if (!ok.ok) assert.fail(ok.errors.join('; '));
    const m = ok.config.mqtt;
    assert.ok(m);
    assert.equal(m.clientId, 'plant-gateway-leader');
    assert.equal(m.cleanSession, false);
    assert.equal(m.qos, 1);
    assert.equal(m.password, 'pw');
    assert.equal(m.rules[0]?.qos, 0);
    assert.equal(m.rules[0]?.name, 'factory/+/sensor/+/status');
    assert.deepEqual(ok.config.customRooms, [{ pattern: 'sensor:{id}', doctype: 'Sensor', name: '{id}', latest: true, conflate: false }]);
  });
});
