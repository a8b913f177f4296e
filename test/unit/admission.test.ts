/**
 * Admission control (src/shared/admission.ts): which requests are handshakes,
 * and the host's bucket at its threshold.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADMISSION_REFUSAL, ADMISSION_REFUSAL_RESPONSE, Admission, isHandshake, requestLineParts } from '../../src/shared/admission';

test('admission: exactly `burst` handshakes at once, then one per 1/rate, never more than burst saved up', () => {
  let now = 1000;
  const a = new Admission(4, 3, () => now);
  assert.equal(a.tokens(), 3);
  assert.deepEqual([a.admit(), a.admit(), a.admit(), a.admit()], [true, true, true, false]);
  now += 249;
  assert.equal(a.admit(), false, 'less than one token after 249 ms at 4/s');
  now += 1;
  assert.equal(a.admit(), true, 'one token after 250 ms');
  assert.equal(a.admit(), false);
  now += 60_000;
  assert.equal(a.tokens(), 3, 'an idle minute saves up the burst, no more');
  assert.deepEqual([a.admit(), a.admit(), a.admit(), a.admit()], [true, true, true, false]);
});

test('admission: rate 0 is off, every handshake is admitted', () => {
  const a = new Admission(0, 1);
  assert.equal(a.enabled, false);
  for (let i = 0; i < 1000; i++) assert.equal(a.admit(), true);
});

test('isHandshake: a GET on the Socket.IO path without a sid; session requests and upgrades are not', () => {
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling'), true);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=websocket'), true);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling&t=x&sid=1.abc'), false);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=websocket&sid=2.abc'), false);
  assert.equal(isHandshake('POST', '/socket.io/?EIO=4&transport=polling&sid=1.abc'), false);
  assert.equal(isHandshake('GET', '/socket.io/?EIO=4&transport=polling&notsid=1'), true);
  assert.equal(isHandshake('GET', '/metrics'), false);
  assert.equal(isHandshake('GET', '/socket.iox/?EIO=4'), false);
  assert.deepEqual(requestLineParts('GET /socket.io/?EIO=4 HTTP/1.1\r\nHost: x\r\n'), { method: 'GET', target: '/socket.io/?EIO=4' });
  assert.equal(requestLineParts('garbage'), undefined);
});

test('the refusal is an HTTP 503 with Retry-After and the documented JSON body', () => {
  const [head, body] = ADMISSION_REFUSAL_RESPONSE.split('\r\n\r\n');
  assert.match(head ?? '', /^HTTP\/1\.1 503 Service Unavailable\r\n/);
  assert.match(head ?? '', /\r\nRetry-After: 1(\r\n|$)/);
  assert.match(head ?? '', new RegExp(`\\r\\nContent-Length: ${Buffer.byteLength(body ?? '')}(\\r\\n|$)`));
  assert.deepEqual(JSON.parse(body ?? ''), ADMISSION_REFUSAL);
});
