/**
 * Sticky routing keys: an Engine.IO session id names the worker that owns it,
 * and the primary reads it from the request line only.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { leastLoaded, sessionIdFor, workerIdOfRequest } from '../../src/cluster/sticky-master';

test('sessionIdFor: URL-safe, unique, and names its worker', () => {
  const ids = new Set<string>();
  for (const worker of [1, 2, 35, 36, 1000]) {
    for (let i = 0; i < 50; i++) {
      const sid = sessionIdFor(worker);
      assert.match(sid, /^[0-9a-z]+\.[\w-]+$/);
      assert.equal(encodeURIComponent(sid), sid);
      ids.add(sid);
      assert.equal(workerIdOfRequest(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`), worker);
    }
  }
  assert.equal(ids.size, 250);
});

test('workerIdOfRequest: only the request line counts, not a Frappe sid cookie', () => {
  assert.equal(workerIdOfRequest('GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nCookie: sid=3.abcdefghijklmnop\r\n\r\n'), undefined);
  assert.equal(workerIdOfRequest('GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\n'), undefined);
  assert.equal(workerIdOfRequest('POST /socket.io/?EIO=4&transport=polling&sid=2.x HTTP/1.1\r\n'), 2);
  // A library-style id (no worker prefix) is not routed by id.
  assert.equal(workerIdOfRequest('GET /socket.io/?EIO=4&sid=AbCdEfGhIjKlMnOpQrSt HTTP/1.1\r\n'), undefined);
  // A request line split before its end still routes.
  assert.equal(workerIdOfRequest('GET /socket.io/?EIO=4&transport=polling&sid=a.xyz'), 10);
});

test('leastLoaded: the least loaded responsive worker; an unresponsive one only when no other is left', () => {
  const workers = [{ id: 1 }, { id: 2 }, { id: 3 }];
  const loads = new Map([
    [1, 0],
    [2, 5],
    [3, 3],
  ]);
  const load = (w: { id: number }): number => loads.get(w.id) ?? 0;
  assert.equal(leastLoaded(workers, load, () => true)?.id, 1);
  // Worker 1 is stopped: its low load (its clients left without telling it) must not attract new sessions.
  assert.equal(leastLoaded(workers, load, (id) => id !== 1)?.id, 3);
  assert.equal(leastLoaded(workers, load, (id) => id === 2)?.id, 2);
  // Nobody responsive: still the least loaded, rather than refusing.
  assert.equal(leastLoaded(workers, load, () => false)?.id, 1);
  assert.equal(
    leastLoaded([], load, () => true),
    undefined,
  );
});
