/**
 * The leader's encoders, byte for byte against what socket.io-parser and
 * @socket.io/redis-adapter themselves produce, so a worker (or a stock
 * adapter) reading the leader's publications cannot tell the difference.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { createAdapter, createShardedAdapter } from '@socket.io/redis-adapter';
import { decode as msgpackDecode, encode as msgpackEncode } from 'notepack.io';
import type { Namespace } from 'socket.io';
import type { Adapter, BroadcastOptions } from 'socket.io-adapter';
import { Encoder } from 'socket.io-parser';
import {
  closeEventArgs,
  compareOffsets,
  encodeEventPacket,
  encodeRoomBroadcast,
  offsetOf,
  openEventArgs,
  sitePacket,
} from '../../src/events/encode';

const encoder = new Encoder();
const parserEncode = (nsp: string, data: unknown[]): string => {
  const out = encoder.encode({ type: 2, nsp, data });
  assert.equal(out.length, 1, 'no binary attachments');
  return out[0] as string;
};

const json = fc.jsonValue({ maxDepth: 4 });
const eventName = fc.string({ minLength: 1, maxLength: 20 });
const site = fc.stringMatching(/^[a-z0-9.-]{1,20}$/);

test('encodeEventPacket equals socket.io-parser for any JSON arguments', () => {
  fc.assert(
    fc.property(site, eventName, fc.array(json, { maxLength: 3 }), (s, ev, args) => {
      assert.equal(encodeEventPacket(s, ev, args), parserEncode(`/${s}`, [ev, ...args]));
    }),
  );
});

test('an open argument list closed with an offset is the packet with the offset as last argument', () => {
  fc.assert(
    fc.property(site, eventName, json, fc.nat(), fc.nat(), (s, ev, msg, ms, seq) => {
      const offset = `${ms}-${seq}`;
      const packet = sitePacket(s, closeEventArgs(openEventArgs(ev, [msg]), offset));
      assert.equal(packet, parserEncode(`/${s}`, [ev, msg, offset]));
      assert.equal(offsetOf(packet), offset);
      assert.equal(sitePacket(s, closeEventArgs(openEventArgs(ev, [msg]), null)), parserEncode(`/${s}`, [ev, msg]));
    }),
  );
});

test('offsetOf reads only offsets the leader appended', () => {
  assert.equal(offsetOf('["ev",{"a":1}]'), null);
  assert.equal(offsetOf('["ev","plain string"]'), null, 'an ordinary string argument is not an offset');
  assert.equal(offsetOf('["ev",{"x":",\\"1-2"}]'), null);
  assert.equal(offsetOf('["ev",{},"1700000000000-3"]'), '1700000000000-3');
  assert.ok(compareOffsets('1-10', '2-0') < 0);
  assert.ok(compareOffsets('5-10', '5-9') > 0, 'sequence numbers compare as numbers');
  assert.equal(compareOffsets('7-7', '7-7'), 0);
  assert.throws(() => openEventArgs('ev', [10n]), 'unencodable values throw for the caller to drop');
});

interface Captured {
  command: string;
  channel: string;
  payload: Buffer | string;
}

function fakeRedis(captured: Captured[]) {
  const ok = (): Promise<number> => Promise.resolve(1);
  return {
    on: () => undefined,
    psubscribe: ok,
    subscribe: ok,
    ssubscribe: ok,
    publish: (channel: string, payload: Buffer | string) => (captured.push({ command: 'PUBLISH', channel, payload }), ok()),
    spublish: (channel: string, payload: Buffer | string) => (captured.push({ command: 'SPUBLISH', channel, payload }), ok()),
  };
}

function fakeNamespace(name: string): Namespace {
  return { name, server: { encoder, opts: {}, _opts: {} }, sockets: new Map() } as unknown as Namespace;
}

const broadcastOpts = (room: string): BroadcastOptions => ({ rooms: new Set([room]), except: new Set(), flags: {} });

test('classic mode: the same channel and msgpack bytes as the classic adapter (but for its uid)', () => {
  const captured: Captured[] = [];
  const redis = fakeRedis(captured);
  const adapter = createAdapter(redis, redis, { key: 'rtg:sio' })(fakeNamespace('/site1.local')) as Adapter & { uid: string };
  const message = { doctype: 'ToDo', name: 'T-1', n: [1, 2.5, 'x', null, true] };
  adapter.broadcast({ type: 2, data: ['doc_update', message] } as never, broadcastOpts('doc:ToDo/T-1'));
  const theirs = captured.find((c) => c.command === 'PUBLISH');
  assert.ok(theirs, 'the adapter published');
  const ours = encodeRoomBroadcast('classic', 'rtg:sio', 'site1.local', 'doc:ToDo/T-1', 'doc_update', [message]);
  assert.equal(ours.channel, theirs.channel);
  const [uid, ...rest] = msgpackDecode(theirs.payload as Buffer) as [string, ...unknown[]];
  assert.equal(uid, adapter.uid);
  assert.deepEqual(Buffer.from(ours.payload), msgpackEncode(['emitter', ...rest]));
});

test('sharded mode: the dynamic room channel of the sharded adapter, carrying the packet socket.io-parser encodes', async () => {
  const captured: Captured[] = [];
  const redis = fakeRedis(captured);
  const make = createShardedAdapter(redis, redis, { channelPrefix: 'rtg:sio', subscriptionMode: 'dynamic' });
  const adapter = make(fakeNamespace('/site1.local')) as Adapter;
  const message = { progress: [3, 10], title: 'Import' };
  await adapter.broadcast({ type: 2, data: ['task_progress', message] } as never, broadcastOpts('task_progress:t1'));
  const theirs = captured.find((c) => c.command === 'SPUBLISH');
  assert.ok(theirs, 'the adapter published');
  const ours = encodeRoomBroadcast('sharded', 'rtg:sio', 'site1.local', 'task_progress:t1', 'task_progress', [message]);
  assert.equal(ours.channel, theirs.channel);
  // ClusterAdapter envelope: { uid, nsp, type, data: { packet, opts } }; the namespace is the envelope's.
  const envelope = JSON.parse(String(theirs.payload)) as {
    nsp: string;
    type: number;
    data: { packet: { data: unknown[] }; opts: unknown };
  };
  assert.equal(envelope.type, 3, 'a BROADCAST message');
  const packet = envelope.data.packet;
  assert.deepEqual(envelope.data.opts, { rooms: ['task_progress:t1'], except: [], flags: {} });
  assert.equal(ours.payload, `!${parserEncode(envelope.nsp, packet.data)}`);
});
