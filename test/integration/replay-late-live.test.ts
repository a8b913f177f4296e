/**
 * The duplicate of the history-on jitter benchmark (BENCHMARKS.md, Recovery):
 * a replay reads history on the command connection while live packets come
 * over the adapter's subscriber connection, and Redis orders nothing between
 * the two. When the subscriber connection is behind, the live copy of an
 * event the replay already wrote arrives after the replay released the
 * socket, and was written a second time. Reproduced here by delivering that
 * late live copy by hand, against a real socket.io server and client.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Server, type Socket } from 'socket.io';
import { io as ioClient } from 'socket.io-client';
import { closeEventArgs, openEventArgs, sitePacket } from '../../src/events/encode';
import { createMetrics } from '../../src/metrics/metrics';
import { deliverPreEncoded } from '../../src/realtime/fast-adapter';
import type { HistoryEntry, HistoryReader } from '../../src/recovery/history';
import { replayMissed } from '../../src/recovery/replay';
import { FLOOR_MS, ReplayGate } from '../../src/recovery/replay-gate';
import { withScope } from '../harness/scope';
import { EventRecorder } from '../harness/clients';

const SITE = 'site1.local';
const ROOM = 'doc:ToDo/T-1';
const args = (n: number): string => openEventArgs('seq', [{ n }]);
const live = (n: number): string => sitePacket(SITE, closeEventArgs(args(n), `${n}-0`));

/** History holding events 1..upTo of ROOM (entry id `<n>-0`). */
function historyUpTo(upTo: number): HistoryReader {
  return {
    check: () => Promise.resolve(null),
    current: () => Promise.resolve(`${upTo}-0`),
    readAfter: (offset: string, visit: (e: HistoryEntry) => void) => {
      const from = Number(offset.split('-')[0]);
      for (let n = from + 1; n <= upTo; n++) visit({ id: `${n}-0`, namespace: SITE, room: ROOM, args: args(n) });
      return Promise.resolve(`${upTo}-0`);
    },
  } as unknown as HistoryReader;
}

for (const fastPath of [true, false]) {
  test(`a live copy arriving after the replay of its event is dropped, later ones pass (fast path ${fastPath ? 'on' : 'off'})`, async (t) => {
    const scope = withScope(t);
    const http = createServer();
    const io = new Server(http, { transports: ['websocket'] });
    scope.add(() => new Promise<void>((r) => io.close(() => r())));
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
    const nsp = io.of(`/${SITE}`);
    const metrics = createMetrics(new Registry(), { defaults: false });
    const gate = new ReplayGate();
    const src = { history: historyUpTo(5), gate, fastPath };
    const replayed = new Promise<Socket>((resolve) => {
      nsp.on('connection', (socket) => {
        void socket.join(ROOM);
        gate.hold(socket.id);
        // Live 5 arrives during the replay (held, then skipped as covered)...
        deliverPreEncoded(nsp, ROOM, live(5), fastPath, gate, metrics);
        void replayMissed(socket, '2-0', src, metrics, pino({ level: 'silent' })).then(() => resolve(socket));
      });
    });
    const client = ioClient(`http://127.0.0.1:${(http.address() as AddressInfo).port}/${SITE}`, {
      transports: ['websocket'],
      reconnection: false,
    });
    scope.add(() => void client.close());
    const rec = new EventRecorder(client);
    await replayed;
    // ...while live 4 and 5 come late, after the replay released the socket: already written.
    for (const n of [4, 5, 6]) deliverPreEncoded(nsp, ROOM, live(n), fastPath, gate.active ? gate : null, metrics);
    await rec.waitForCount('seq', 4, undefined, 5000);
    // A marker after everything: once it is there, nothing else is still on its way.
    nsp.to(ROOM).emit('marker');
    await rec.waitFor('marker', undefined, 5000);
    assert.deepEqual(
      rec.payloads('seq').map((p) => (p as { n: number }).n),
      [3, 4, 5, 6],
      'the missed events once, in order, then the new one',
    );
    assert.equal((await metrics.recoveryLiveDuplicates.get()).values[0]?.value, 2, 'the two late copies were counted');
  });
}

test('the floor lasts FLOOR_MS, then the gate is idle again', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const gate = new ReplayGate();
  gate.hold('a');
  gate.release('a', '5-0');
  assert.equal(gate.active, true);
  assert.equal(gate.offerLive('a', 'p', '5-0'), 'duplicate');
  assert.equal(gate.offerLive('a', 'p', '6-0'), 'write');
  assert.equal(gate.offerLive('a', 'p', '4-0'), 'duplicate', 'a packet above the floor does not lift it');
  assert.equal(gate.offerLive('a', 'p', null), 'write', 'packets without an offset are never duplicates');
  assert.equal(gate.offerLive('b', 'p', '1-0'), 'write', 'other sockets are not affected');
  t.mock.timers.tick(FLOOR_MS);
  assert.equal(gate.active, false);
  assert.equal(gate.offerLive('a', 'p', '4-0'), 'write');
  gate.release('c', '1-0');
  gate.forget('c');
  assert.equal(gate.active, false, 'a disconnected socket leaves nothing behind');
});
