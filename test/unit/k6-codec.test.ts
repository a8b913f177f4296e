/**
 * The k6 scripts' Socket.IO codec, checked against the reference parsers
 * (socket.io-parser, engine.io-parser) byte for byte, driven against a real
 * socket.io 4 server over a raw websocket, plus the pure helpers the k6
 * scripts use (configuration, fan-out bookkeeping, text summary).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server } from 'socket.io';
import type { Socket as ServerSocket } from 'socket.io';
import { Decoder, Encoder } from 'socket.io-parser';
import type { Packet as ReferencePacket } from 'socket.io-parser';
import * as engineParser from 'engine.io-parser';
import { WebSocket } from 'ws';
import type { RawData } from 'ws';
import {
  CodecException,
  PAYLOAD_SEPARATOR,
  SocketIoPacketType,
  SocketIoSession,
  decodeEngineIoPacket,
  decodeEngineIoPayload,
  decodeSocketIoPacket,
  encodeEngineIoPacket,
  encodeEngineIoPayload,
  encodeSocketIoFrame,
  encodeSocketIoPacket,
  namespaceFor,
  parseEngineIoHandshake,
} from '../../k6/lib/codec';
import type { EngineIoPacket, SessionEventName, SocketIoPacket, SocketIoSessionEvents } from '../../k6/lib/codec';
import {
  ConfigError,
  EnvReader,
  credentialsFor,
  formatDuration,
  handshakeHeaders,
  parseDurationMs,
  readGatewayTarget,
  readPublishTarget,
  readSubscriptions,
  subscriptionForRoom,
} from '../../k6/lib/config';
import { FanoutTracker, fanoutEndMarker, fanoutMessage } from '../../k6/lib/fanout-tracker';
import { summaryOutputs, textSummary, thresholdStat } from '../../k6/lib/summary';
import type { SummaryData } from '../../k6/lib/summary';

// ---------------------------------------------------------------------------
// Reference implementations

function referenceEncode(packet: SocketIoPacket): string {
  const parts = new Encoder().encode(packet as unknown as ReferencePacket) as unknown[];
  assert.equal(parts.length, 1, 'reference encoder produced a binary packet');
  const [text] = parts;
  assert.equal(typeof text, 'string');
  return text as string;
}

function referenceDecode(text: string): unknown {
  const decoder = new Decoder();
  let decoded: unknown;
  decoder.on('decoded', (packet: unknown) => {
    decoded = packet;
  });
  decoder.add(text);
  return decoded;
}

function referenceDecodeThrows(text: string): boolean {
  try {
    referenceDecode(text);
    return false;
  } catch {
    return true;
  }
}

function referenceEngineEncode(packet: EngineIoPacket): string {
  let out: unknown;
  engineParser.encodePacket(packet, false, (encoded: unknown) => {
    out = encoded;
  });
  assert.equal(typeof out, 'string');
  return out as string;
}

function referenceEnginePayload(packets: EngineIoPacket[]): string {
  let out: unknown;
  engineParser.encodePayload(packets, (encoded: unknown) => {
    out = encoded;
  });
  assert.equal(typeof out, 'string');
  return out as string;
}

// ---------------------------------------------------------------------------
// Tables

const NESTED = {
  doctype: 'ToDo',
  name: 'abc123',
  owner: { user: 'Administrator', roles: ['System Manager', 'All'], meta: { level: 3, ok: true, none: null } },
  rows: [[1, 2.5, -3e-7], [{ deep: [{ deeper: ['x'] }] }]],
};

const UNICODE = 'héllo wörld ✓ 日本語 🚀 "quoted" \\ back\nnewline \u2028 \x1e';

const SOCKET_IO_TABLE: Array<[string, SocketIoPacket]> = [
  ['CONNECT, main namespace', { type: SocketIoPacketType.CONNECT, nsp: '/' }],
  ['CONNECT, main namespace with auth', { type: SocketIoPacketType.CONNECT, nsp: '/', data: { token: 'abc' } }],
  ['CONNECT, site namespace', { type: SocketIoPacketType.CONNECT, nsp: '/site1.local' }],
  [
    'CONNECT, site namespace with auth',
    { type: SocketIoPacketType.CONNECT, nsp: '/site1.local', data: { token: 'ü', nested: { a: [1, 2] } } },
  ],
  ['CONNECT, server reply with sid and pid', { type: SocketIoPacketType.CONNECT, nsp: '/site1.local', data: { sid: 'Xy_-1', pid: 'p1' } }],
  ['DISCONNECT, main namespace', { type: SocketIoPacketType.DISCONNECT, nsp: '/' }],
  ['DISCONNECT, site namespace', { type: SocketIoPacketType.DISCONNECT, nsp: '/site1.local' }],
  ['EVENT, main namespace', { type: SocketIoPacketType.EVENT, nsp: '/', data: ['doc_update', { name: 'x' }] }],
  ['EVENT, no arguments', { type: SocketIoPacketType.EVENT, nsp: '/site1.local', data: ['pong'] }],
  [
    'EVENT, Frappe list_update',
    {
      type: SocketIoPacketType.EVENT,
      nsp: '/site1.local',
      data: ['list_update', { doctype: 'ToDo', name: 'abc123', user: 'Administrator' }],
    },
  ],
  ['EVENT, positional string arguments', { type: SocketIoPacketType.EVENT, nsp: '/s', data: ['doc_subscribe', 'ToDo', 'abc'] }],
  ['EVENT, main namespace with ack id', { type: SocketIoPacketType.EVENT, nsp: '/', id: 12, data: ['ask', 1] }],
  ['EVENT, site namespace with ack id 0', { type: SocketIoPacketType.EVENT, nsp: '/site1.local', id: 0, data: ['ask'] }],
  ['EVENT, large ack id', { type: SocketIoPacketType.EVENT, nsp: '/site1.local', id: 987654321, data: ['ask'] }],
  ['EVENT, unicode payload', { type: SocketIoPacketType.EVENT, nsp: '/site1.local', data: ['msgprint', UNICODE] }],
  ['EVENT, nested JSON', { type: SocketIoPacketType.EVENT, nsp: '/site1.local', data: ['docinfo_update', NESTED, [NESTED]] }],
  ['EVENT, numeric event name', { type: SocketIoPacketType.EVENT, nsp: '/', data: [42, 'x'] }],
  ['EVENT, unicode namespace', { type: SocketIoPacketType.EVENT, nsp: '/sité-ü.local', data: ['e'] }],
  ['ACK, main namespace', { type: SocketIoPacketType.ACK, nsp: '/', id: 3, data: [] }],
  ['ACK, site namespace with values', { type: SocketIoPacketType.ACK, nsp: '/site1.local', id: 45, data: [null, { ok: true }, UNICODE] }],
  ['CONNECT_ERROR, Frappe message', { type: SocketIoPacketType.CONNECT_ERROR, nsp: '/site1.local', data: { message: 'Invalid origin' } }],
  [
    'CONNECT_ERROR, message with data',
    { type: SocketIoPacketType.CONNECT_ERROR, nsp: '/site1.local', data: { message: 'Unauthorized: 403', data: { status: 403 } } },
  ],
  ['CONNECT_ERROR, main namespace', { type: SocketIoPacketType.CONNECT_ERROR, nsp: '/', data: { message: 'Invalid namespace' } }],
  ['CONNECT_ERROR, bare string (older servers)', { type: SocketIoPacketType.CONNECT_ERROR, nsp: '/x', data: 'Not authorized' }],
];

// ---------------------------------------------------------------------------

describe('k6 codec: Socket.IO packets match socket.io-parser byte for byte', () => {
  for (const [name, packet] of SOCKET_IO_TABLE) {
    it(`${name}: encodes like the reference Encoder and round-trips through both decoders`, () => {
      const ours = encodeSocketIoPacket(packet);
      assert.equal(ours, referenceEncode(packet));

      const decodedByUs = decodeSocketIoPacket(ours);
      assert.ok(decodedByUs.ok, decodedByUs.ok ? '' : decodedByUs.error.message);
      assert.deepStrictEqual(decodedByUs.value, packet);
      assert.deepStrictEqual(decodedByUs.value, referenceDecode(ours));

      // The frame k6 sends: an Engine.IO message wrapping the packet.
      assert.equal(encodeSocketIoFrame(packet), referenceEngineEncode({ type: 'message', data: ours }));
    });
  }

  it('decodes a namespace without a trailing comma the way socket.io-parser does', () => {
    for (const text of ['0/admin', '1/site1.local', '2/a,5["x"]', '3/a,1[]', '0{"sid":"x"}', '0/a,{"k":"v"}']) {
      const ours = decodeSocketIoPacket(text);
      assert.ok(ours.ok, text);
      assert.deepStrictEqual(ours.value, referenceDecode(text), text);
    }
  });

  it('rejects what socket.io-parser rejects: reserved names, payload on DISCONNECT, bad JSON, unknown type', () => {
    const invalid = [
      '2["connect"]',
      '2/site1.local,["disconnect",1]',
      '2{"not":"array"}',
      '1/a,{"x":1}',
      '0[1]',
      '3/a,1{"x":1}',
      '2/a,["x"',
      '9',
      '4/a,[1]',
    ];
    for (const text of invalid) {
      assert.ok(referenceDecodeThrows(text), `reference accepts ${text}`);
      const ours = decodeSocketIoPacket(text);
      assert.equal(ours.ok, false, `codec accepted ${text}`);
    }
  });

  it('reports binary packets as unsupported instead of decoding them', () => {
    const ours = decodeSocketIoPacket('51-/site1.local,["upload",{"_placeholder":true,"num":0}]');
    assert.equal(ours.ok, false);
    assert.equal(ours.ok ? '' : ours.error.code, 'binary-unsupported');
    assert.equal(decodeSocketIoPacket('61-/a,3[{"_placeholder":true,"num":0}]').ok, false);

    assert.throws(
      () => encodeSocketIoPacket({ type: SocketIoPacketType.EVENT, nsp: '/', data: ['upload', new Uint8Array([1, 2])] }),
      (err: unknown) => err instanceof CodecException && err.code === 'binary-unsupported',
    );
    // socket.io-parser would turn that into a BINARY_EVENT with an attachment.
    const reference = new Encoder().encode({ type: 2, nsp: '/', data: ['upload', Buffer.from([1, 2])] });
    assert.equal(reference.length, 2);
  });

  it('refuses to encode namespaces that cannot be framed and invalid ack ids', () => {
    assert.throws(() => encodeSocketIoPacket({ type: SocketIoPacketType.CONNECT, nsp: 'site1.local' }), CodecException);
    assert.throws(() => encodeSocketIoPacket({ type: SocketIoPacketType.CONNECT, nsp: '/a,b' }), CodecException);
    assert.throws(() => encodeSocketIoPacket({ type: SocketIoPacketType.EVENT, nsp: '/', id: -1, data: ['x'] }), CodecException);
  });

  it('maps a Frappe site name to its namespace', () => {
    assert.equal(namespaceFor('site1.local'), '/site1.local');
    assert.equal(namespaceFor('/site1.local'), '/site1.local');
    assert.equal(namespaceFor('/'), '/');
  });
});

describe('k6 codec: Engine.IO packets match engine.io-parser byte for byte', () => {
  const packets: EngineIoPacket[] = [
    {
      type: 'open',
      data: '{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}',
    },
    { type: 'close' },
    { type: 'ping' },
    { type: 'ping', data: 'probe' },
    { type: 'pong' },
    { type: 'pong', data: 'probe' },
    { type: 'message', data: '2/site1.local,["list_update",{"doctype":"ToDo"}]' },
    { type: 'message', data: UNICODE },
    { type: 'upgrade' },
    { type: 'noop' },
  ];

  for (const packet of packets) {
    it(`${packet.type}${packet.data === undefined ? '' : ' with data'}: same encoding, same decoding`, () => {
      const ours = encodeEngineIoPacket(packet);
      assert.equal(ours, referenceEngineEncode(packet));
      const decoded = decodeEngineIoPacket(ours);
      assert.ok(decoded.ok);
      assert.deepStrictEqual(decoded.value, packet);
      assert.deepStrictEqual(decoded.value, engineParser.decodePacket(ours));
    });
  }

  it('long-polling payloads: records separated by \\x1e, identical to encodePayload/decodePayload', () => {
    const batch: EngineIoPacket[] = [
      { type: 'message', data: '40/site1.local,' },
      { type: 'ping' },
      { type: 'message', data: `2/site1.local,["msgprint",${JSON.stringify(UNICODE.replace('\x1e', ''))}]` },
      { type: 'noop' },
    ];
    const ours = encodeEngineIoPayload(batch);
    assert.equal(ours, referenceEnginePayload(batch));
    assert.equal(ours.split(PAYLOAD_SEPARATOR).length, batch.length);
    const decoded = decodeEngineIoPayload(ours);
    assert.ok(decoded.ok);
    assert.deepStrictEqual(decoded.value, batch);
    assert.deepStrictEqual(decoded.value, engineParser.decodePayload(ours));
  });

  it('reports binary frames and base64 binary messages as unsupported', () => {
    const buffer = decodeEngineIoPacket(Buffer.from([4, 1, 2]));
    assert.equal(buffer.ok ? '' : buffer.error.code, 'binary-unsupported');
    const base64 = decodeEngineIoPacket('bAQID');
    assert.equal(base64.ok ? '' : base64.error.code, 'binary-unsupported');
    const payload = decodeEngineIoPayload(`4hello${PAYLOAD_SEPARATOR}bAQID`);
    assert.equal(payload.ok ? '' : payload.error.code, 'binary-unsupported');
  });

  it('rejects unknown packet types and empty packets, as the reference flags them', () => {
    assert.deepStrictEqual(engineParser.decodePacket('9'), { type: 'error', data: 'parser error' });
    const unknown = decodeEngineIoPacket('9');
    assert.equal(unknown.ok ? '' : unknown.error.code, 'unknown-packet-type');
    assert.equal(decodeEngineIoPacket('').ok, false);
  });

  it('parses the open handshake', () => {
    const parsed = parseEngineIoHandshake('{"sid":"a","upgrades":[],"pingInterval":200,"pingTimeout":300,"maxPayload":1000000}');
    assert.ok(parsed.ok);
    assert.deepStrictEqual(parsed.value, { sid: 'a', upgrades: [], pingInterval: 200, pingTimeout: 300, maxPayload: 1000000 });
    assert.equal(parseEngineIoHandshake('{"sid":1}').ok, false);
    assert.equal(parseEngineIoHandshake('nope').ok, false);
    assert.equal(parseEngineIoHandshake(undefined).ok, false);
  });
});

// ---------------------------------------------------------------------------
// Session state machine, offline

type Recorded = { [K in SessionEventName]: Array<SocketIoSessionEvents[K]> };

function recordEvents(session: SocketIoSession): Recorded {
  const rec: Recorded = {
    open: [],
    connected: [],
    connectError: [],
    event: [],
    ack: [],
    ping: [],
    disconnected: [],
    protocolError: [],
  };
  session.on('open', (...a) => rec.open.push(a));
  session.on('connected', (...a) => rec.connected.push(a));
  session.on('connectError', (...a) => rec.connectError.push(a));
  session.on('event', (...a) => rec.event.push(a));
  session.on('ack', (...a) => rec.ack.push(a));
  session.on('ping', (...a) => rec.ping.push(a));
  session.on('disconnected', (...a) => rec.disconnected.push(a));
  session.on('protocolError', (...a) => rec.protocolError.push(a));
  return rec;
}

const OPEN_FRAME = '0{"sid":"eio1","upgrades":[],"pingInterval":200,"pingTimeout":300,"maxPayload":1000000}';

describe('k6 codec: SocketIoSession', () => {
  it('sends CONNECT for its namespace after open, then releases buffered emits in order once connected', () => {
    const session = new SocketIoSession({ namespace: 'site1.local' });
    const rec = recordEvents(session);
    assert.deepStrictEqual(session.emit('doctype_subscribe', 'ToDo'), []);
    assert.deepStrictEqual(session.emit('doc_subscribe', 'ToDo', 'abc'), []);
    assert.deepStrictEqual(session.receive(OPEN_FRAME), ['40/site1.local,']);
    assert.equal(session.state, 'connecting');
    assert.equal(rec.open[0]?.[0].pingInterval, 200);
    assert.deepStrictEqual(session.receive('40/site1.local,{"sid":"s1"}'), [
      '42/site1.local,["doctype_subscribe","ToDo"]',
      '42/site1.local,["doc_subscribe","ToDo","abc"]',
    ]);
    assert.deepStrictEqual(rec.connected, [['s1']]);
    assert.equal(session.sid, 's1');
    assert.deepStrictEqual(session.emit('ping'), ['42/site1.local,["ping"]']);
  });

  it('sends its auth payload with CONNECT when given one', () => {
    const session = new SocketIoSession({ namespace: '/', auth: { token: 't' } });
    assert.deepStrictEqual(session.receive(OPEN_FRAME), ['40{"token":"t"}']);
  });

  it('answers pings with pongs (echoing probe data) and ignores noop/upgrade', () => {
    const session = new SocketIoSession({ namespace: '/s' });
    const rec = recordEvents(session);
    session.receive(OPEN_FRAME);
    assert.deepStrictEqual(session.receive('2'), ['3']);
    assert.deepStrictEqual(session.receive('2probe'), ['3probe']);
    assert.deepStrictEqual(session.receive('6'), []);
    assert.equal(rec.ping.length, 2);
    assert.equal(session.pingsReceived, 2);
  });

  it('emits typed events and acks, and only for its own namespace', () => {
    const session = new SocketIoSession({ namespace: '/s' });
    const rec = recordEvents(session);
    session.receive(OPEN_FRAME);
    session.receive('40/s,{"sid":"x"}');
    session.receive('42/s,["list_update",{"doctype":"ToDo"}]');
    session.receive('42/other,["list_update",{}]');
    session.receive('42/s,7["ask","q"]');
    const { id, frames } = session.emitWithAck('add', 2, 3);
    assert.deepStrictEqual(frames, [`42/s,${id}["add",2,3]`]);
    session.receive(`43/s,${id}[5]`);
    assert.deepStrictEqual(rec.event, [
      ['list_update', [{ doctype: 'ToDo' }], undefined],
      ['ask', ['q'], 7],
    ]);
    assert.deepStrictEqual(rec.ack, [[id, [5]]]);
  });

  it('reports CONNECT_ERROR with its message and data, and then stays rejected', () => {
    const session = new SocketIoSession({ namespace: '/site1.local' });
    const rec = recordEvents(session);
    session.receive(OPEN_FRAME);
    session.emit('doctype_subscribe', 'ToDo');
    session.receive('44/site1.local,{"message":"Unauthorized: 403","data":{"status":403}}');
    assert.deepStrictEqual(rec.connectError, [['Unauthorized: 403', { status: 403 }]]);
    assert.equal(session.state, 'rejected');
    assert.deepStrictEqual(session.emit('x'), []);
    assert.deepStrictEqual(session.disconnect(), []);
  });

  it('reports server DISCONNECT, Engine.IO close and client disconnect with distinct reasons', () => {
    const server = new SocketIoSession({ namespace: '/s' });
    const serverRec = recordEvents(server);
    server.receive(OPEN_FRAME);
    server.receive('40/s,{"sid":"x"}');
    server.receive('41/s,');
    assert.deepStrictEqual(serverRec.disconnected, [['io server disconnect']]);

    const engine = new SocketIoSession({ namespace: '/s' });
    const engineRec = recordEvents(engine);
    engine.receive(OPEN_FRAME);
    engine.receive('1');
    assert.deepStrictEqual(engineRec.disconnected, [['transport close']]);

    const client = new SocketIoSession({ namespace: '/s' });
    const clientRec = recordEvents(client);
    client.receive(OPEN_FRAME);
    client.receive('40/s,{"sid":"x"}');
    assert.deepStrictEqual(client.disconnect(), ['41/s,']);
    assert.deepStrictEqual(clientRec.disconnected, [['io client disconnect']]);
    client.transportClosed();
    assert.equal(clientRec.disconnected.length, 1);
  });

  it('detects an overdue server ping with an injected clock', () => {
    let now = 1000;
    const session = new SocketIoSession({ namespace: '/s', now: () => now });
    const rec = recordEvents(session);
    assert.equal(session.msUntilPingTimeout(), undefined);
    session.receive(OPEN_FRAME);
    assert.equal(session.msUntilPingTimeout(), 500);
    now += 400;
    session.receive('2');
    assert.equal(session.msUntilPingTimeout(), 500);
    now += 499;
    assert.equal(session.checkPingTimeout(), false);
    now += 1;
    assert.equal(session.checkPingTimeout(), true);
    assert.deepStrictEqual(rec.disconnected, [['ping timeout']]);
  });

  it('reports binary and malformed frames as protocol errors without changing state', () => {
    const session = new SocketIoSession({ namespace: '/s' });
    const rec = recordEvents(session);
    session.receive(OPEN_FRAME);
    session.receive('40/s,{"sid":"x"}');
    assert.deepStrictEqual(session.receive(new ArrayBuffer(4)), []);
    session.receive('bAQID');
    session.receive('451-/s,["file",{"_placeholder":true,"num":0}]');
    session.receive('42/s,["broken"');
    session.receive(OPEN_FRAME);
    assert.deepStrictEqual(
      rec.protocolError.map(([e]) => e.code),
      ['binary-unsupported', 'binary-unsupported', 'binary-unsupported', 'invalid-payload', 'invalid-handshake'],
    );
    assert.equal(session.state, 'connected');
  });
});

// ---------------------------------------------------------------------------
// Against a real socket.io 4 server

interface RawClient {
  ws: WebSocket;
  session: SocketIoSession;
  sent: string[];
  opened: Promise<void>;
}

function connectRaw(url: string, namespace: string, headers: Record<string, string>, answerPings = true): RawClient {
  const ws = new WebSocket(url, { headers });
  const session = new SocketIoSession({ namespace });
  const sent: string[] = [];
  const send = (frame: string): void => {
    sent.push(frame);
    if (ws.readyState === WebSocket.OPEN) ws.send(frame);
  };
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const frame: unknown = isBinary ? data : data.toString();
    for (const reply of session.receive(frame)) {
      if (!answerPings && reply.startsWith('3')) continue;
      send(reply);
    }
  });
  ws.on('close', () => session.transportClosed());
  const opened = new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return { ws, session, sent, opened };
}

/** Resolves with the arguments of the next matching session event. */
function nextEvent<K extends SessionEventName>(
  session: SocketIoSession,
  name: K,
  matches: (...args: SocketIoSessionEvents[K]) => boolean = () => true,
  timeoutMs = 5000,
): Promise<SocketIoSessionEvents[K]> {
  return new Promise((resolve, reject) => {
    const listener = (...args: SocketIoSessionEvents[K]): void => {
      if (!matches(...args)) return;
      clearTimeout(guard);
      session.off(name, listener);
      resolve(args);
    };
    // A guard against a hung test, not a sleep: resolution is event driven.
    const guard = setTimeout(() => {
      session.off(name, listener);
      reject(new Error(`timed out waiting for session event ${name}`));
    }, timeoutMs);
    session.on(name, listener);
  });
}

const SITE = 'site1.local';
const NAMESPACE = `/${SITE}`;
const PING_INTERVAL_MS = 200;
const PING_TIMEOUT_MS = 1000;

describe('k6 codec: round trip with a real socket.io 4 server over a raw websocket', () => {
  const httpServer = createServer();
  const io = new Server(httpServer, { pingInterval: PING_INTERVAL_MS, pingTimeout: PING_TIMEOUT_MS });
  const clients: WebSocket[] = [];
  const serverSockets = new Map<string, ServerSocket>();
  let url = '';
  let origin = '';

  before(async () => {
    await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    const { port } = httpServer.address() as AddressInfo;
    origin = `http://127.0.0.1:${port}`;
    url = `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`;

    // Dynamic site namespaces with Frappe-style connect middleware.
    const sites = io.of(/^\/[a-z0-9.-]+$/);
    sites.use((socket, next) => {
      const headers = socket.handshake.headers;
      if (headers.origin !== origin) return next(new Error('Invalid origin'));
      const cookie = headers.cookie ?? '';
      if (!cookie.includes('sid=') && headers.authorization === undefined) {
        return next(
          Object.assign(new Error('No authentication method used. Use cookie or authorization header.'), {
            data: { site: socket.nsp.name },
          }),
        );
      }
      return next();
    });
    sites.on('connection', (socket) => {
      serverSockets.set(socket.id, socket);
      const sid = /sid=([^;]+)/.exec(socket.handshake.headers.cookie ?? '')?.[1] ?? 'Guest';
      socket.emit('welcome', { nsp: socket.nsp.name, sid, site: socket.handshake.headers['x-frappe-site-name'] ?? null });
      socket.on('echo', (...args: unknown[]) => socket.emit('echo', ...args));
      socket.on('ping', () => socket.emit('pong'));
      socket.on('add', (a: number, b: number, ack: (sum: number) => void) => ack(a + b));
    });
  });

  after(async () => {
    for (const ws of clients) ws.terminate();
    await new Promise<void>((resolve) => {
      void io.close(() => resolve());
    });
  });

  function open(headers: Record<string, string>, answerPings = true): RawClient {
    const client = connectRaw(url, NAMESPACE, headers, answerPings);
    clients.push(client.ws);
    return client;
  }

  it('connects to the site namespace with Frappe handshake headers and receives the on-connect event', async () => {
    const client = open({ Origin: origin, Cookie: 'sid=abc123', 'X-Frappe-Site-Name': SITE });
    const connected = nextEvent(client.session, 'connected');
    const welcome = nextEvent(client.session, 'event', (name) => name === 'welcome');
    const [sid] = await connected;
    assert.ok(serverSockets.has(sid), 'sid is the server-side socket id');
    assert.equal(client.sent[0], `40${NAMESPACE},`);
    const [, args] = await welcome;
    assert.deepStrictEqual(args, [{ nsp: NAMESPACE, sid: 'abc123', site: SITE }]);
  });

  it('emits client events that the server decodes and echoes back intact (unicode, nested JSON)', async () => {
    const client = open({ Origin: origin, Cookie: 'sid=echo' });
    await nextEvent(client.session, 'connected');
    const echoed = nextEvent(client.session, 'event', (name) => name === 'echo');
    for (const frame of client.session.emit('echo', UNICODE, NESTED, [1, null, true])) client.ws.send(frame);
    const [, args] = await echoed;
    assert.deepStrictEqual(args, [UNICODE, NESTED, [1, null, true]]);

    const pong = nextEvent(client.session, 'event', (name) => name === 'pong');
    for (const frame of client.session.emit('ping')) client.ws.send(frame);
    assert.deepStrictEqual((await pong)[1], []);

    const { id, frames } = client.session.emitWithAck('add', 2, 3);
    const ack = nextEvent(client.session, 'ack', (ackId) => ackId === id);
    for (const frame of frames) client.ws.send(frame);
    assert.deepStrictEqual((await ack)[1], [5]);
  });

  it('answers server pings: the server receives the pongs and keeps pinging and keeping the connection', async () => {
    const client = open({ Origin: origin, Cookie: 'sid=pinger' });
    const [sid] = await nextEvent(client.session, 'connected');
    const serverSocket = serverSockets.get(sid);
    assert.ok(serverSocket);
    let pongsSeenByServer = 0;
    serverSocket.conn.on('packet', (packet: { type: string }) => {
      if (packet.type === 'pong') pongsSeenByServer += 1;
    });
    // Engine.IO 4 schedules the next ping only when the pong of the previous
    // one arrived, so a third ping proves the first two pongs were accepted.
    let pings = 0;
    await nextEvent(client.session, 'ping', () => {
      pings += 1;
      return pings === 3;
    });
    assert.equal(client.session.state, 'connected');
    assert.ok(client.sent.filter((f) => f === '3').length >= 3);
    assert.ok(pongsSeenByServer >= 2, `server saw ${pongsSeenByServer} pongs`);
    assert.equal(serverSocket.connected, true);
  });

  it('is dropped by the server when it does not answer pings (what ping handling prevents)', async () => {
    const client = open({ Origin: origin, Cookie: 'sid=silent' }, false);
    await nextEvent(client.session, 'connected');
    const [reason] = await nextEvent(client.session, 'disconnected');
    assert.equal(reason, 'transport close');
  });

  it('reports CONNECT_ERROR from a rejecting middleware with the exact message', async () => {
    const client = open({ Origin: 'http://evil.example', Cookie: 'sid=abc' });
    const [message] = await nextEvent(client.session, 'connectError');
    assert.equal(message, 'Invalid origin');
    assert.equal(client.session.state, 'rejected');

    const anonymous = open({ Origin: origin });
    const [text, data] = await nextEvent(anonymous.session, 'connectError');
    assert.equal(text, 'No authentication method used. Use cookie or authorization header.');
    assert.deepStrictEqual(data, { site: NAMESPACE });
  });

  it('sees a server-side disconnect, and the server sees the client DISCONNECT', async () => {
    const kicked = open({ Origin: origin, Cookie: 'sid=kick' });
    const [kickedSid] = await nextEvent(kicked.session, 'connected');
    const gone = nextEvent(kicked.session, 'disconnected');
    serverSockets.get(kickedSid)?.disconnect();
    assert.deepStrictEqual(await gone, ['io server disconnect']);

    const leaving = open({ Origin: origin, Cookie: 'sid=leave' });
    const [leavingSid] = await nextEvent(leaving.session, 'connected');
    const serverSocket = serverSockets.get(leavingSid);
    assert.ok(serverSocket);
    const serverReason = new Promise<string>((resolve) => serverSocket.once('disconnect', resolve));
    for (const frame of leaving.session.disconnect()) leaving.ws.send(frame);
    assert.equal(await serverReason, 'client namespace disconnect');
  });

  it('works from the open frame the real server sends (connect before the websocket open event resolves)', async () => {
    const client = open({ Origin: origin, Cookie: 'sid=x' });
    await client.opened;
    const [handshake] = client.session.handshake === undefined ? await nextEvent(client.session, 'open') : [client.session.handshake];
    assert.equal(handshake.pingInterval, PING_INTERVAL_MS);
    assert.equal(handshake.pingTimeout, PING_TIMEOUT_MS);
  });
});

// ---------------------------------------------------------------------------
// Pure helpers of the k6 scripts

describe('k6 scripts: configuration from __ENV', () => {
  it('derives the websocket URL, Origin, namespace and headers from BASE_URL and SITE', () => {
    const target = readGatewayTarget(new EnvReader({ BASE_URL: 'https://erp.example.com/', SID: 's3cr3t' }));
    assert.equal(target.socketUrl, 'wss://erp.example.com/socket.io/?EIO=4&transport=websocket');
    assert.equal(target.origin, 'https://erp.example.com');
    assert.equal(target.site, 'erp.example.com');
    assert.equal(target.namespace, '/erp.example.com');
    assert.equal(target.sendSiteHeader, false);
    assert.deepStrictEqual(handshakeHeaders(target, credentialsFor(target, 1)), {
      Origin: 'https://erp.example.com',
      Cookie: 'sid=s3cr3t',
    });

    const local = readGatewayTarget(new EnvReader({ BASE_URL: 'http://127.0.0.1:9000', SITE: 'site1.local', AUTHORIZATION: 'token k:s' }));
    assert.equal(local.socketUrl, 'ws://127.0.0.1:9000/socket.io/?EIO=4&transport=websocket');
    assert.deepStrictEqual(handshakeHeaders(local, credentialsFor(local, 7)), {
      Origin: 'http://127.0.0.1:9000',
      Authorization: 'token k:s',
      'X-Frappe-Site-Name': 'site1.local',
    });
    assert.equal(readPublishTarget(new EnvReader({}), local).url, 'http://127.0.0.1:9090/api/v1/publish');
  });

  it('rotates SIDS over VUs and falls back to a Guest sid', () => {
    const target = readGatewayTarget(new EnvReader({ SIDS: 'a, b,c' }));
    assert.deepStrictEqual(
      [1, 2, 3, 4].map((vu) => credentialsFor(target, vu).sid),
      ['a', 'b', 'c', 'a'],
    );
    const guest = readGatewayTarget(new EnvReader({}));
    assert.deepStrictEqual(guest.credentials, [{ sid: 'Guest' }]);
  });

  it('reports every configuration problem at once', () => {
    const reader = new EnvReader({ BASE_URL: 'ftp://x', VUS: 'many', DURATION: '5 minutes', DOCS: 'ToDo' });
    readGatewayTarget(reader);
    reader.int('VUS', 1, 1);
    reader.durationMs('DURATION', '1m');
    readSubscriptions(reader);
    assert.throws(
      () => reader.done(),
      (err: unknown) => err instanceof ConfigError && err.problems.length === 4,
    );
  });

  it('reads subscriptions: ToDo list by default, none when DOCTYPES is set empty, DOCS as Doctype/name', () => {
    assert.deepStrictEqual(readSubscriptions(new EnvReader({})).doctypes, ['ToDo']);
    assert.deepStrictEqual(readSubscriptions(new EnvReader({ DOCTYPES: '' })).doctypes, []);
    const subs = readSubscriptions(new EnvReader({ DOCS: 'ToDo/abc, Sales Invoice/SINV-0001', OPEN_DOCS: 'yes' }));
    assert.deepStrictEqual(subs.docs, [
      ['ToDo', 'abc'],
      ['Sales Invoice', 'SINV-0001'],
    ]);
    assert.equal(subs.openDocs, true);
  });

  it('parses and formats k6 durations', () => {
    assert.equal(parseDurationMs('1h30m'), 5400000);
    assert.equal(parseDurationMs('250ms'), 250);
    assert.equal(parseDurationMs('1.5s'), 1500);
    assert.equal(parseDurationMs('90'), 90000);
    assert.equal(parseDurationMs('5 minutes'), undefined);
    assert.equal(formatDuration(5400000), '90m');
    assert.equal(formatDuration(3600000), '1h');
    assert.equal(formatDuration(1500), '1500ms');
  });

  it('knows which Frappe client event joins a room', () => {
    assert.deepStrictEqual(subscriptionForRoom('doctype:ToDo'), { event: 'doctype_subscribe', args: ['ToDo'] });
    assert.deepStrictEqual(subscriptionForRoom('doc:ToDo/a/b'), { event: 'doc_subscribe', args: ['ToDo', 'a/b'] });
    assert.deepStrictEqual(subscriptionForRoom('open_doc:Note/n1'), { event: 'doc_open', args: ['Note', 'n1'] });
    assert.deepStrictEqual(subscriptionForRoom('task_progress:t1'), { event: 'task_subscribe', args: ['t1'] });
    assert.equal(subscriptionForRoom('website'), undefined);
    assert.equal(subscriptionForRoom('user:Administrator'), undefined);
    assert.equal(subscriptionForRoom('sensor:12'), undefined);
  });
});

describe('k6 scripts: fan-out bookkeeping', () => {
  it('measures latency, ignores other runs, counts duplicates, and expects what the end marker says', () => {
    const tracker = new FanoutTracker('run1');
    const m0 = tracker.receive([fanoutMessage('run1', 0, 1000, 0)], 1040);
    assert.deepStrictEqual(m0, { kind: 'message', seq: 0, latencyMs: 40, duplicate: false });
    assert.equal(tracker.receive([fanoutMessage('run1', 0, 1000, 0)], 1050).kind, 'message');
    assert.equal((tracker.receive([fanoutMessage('run1', 0, 1000, 0)], 1050) as { duplicate: boolean }).duplicate, true);
    assert.equal(tracker.receive([fanoutMessage('other', 1, 1000, 0)], 1050).kind, 'foreign');
    assert.equal(tracker.receive(['not an object'], 1050).kind, 'foreign');
    tracker.receive([fanoutMessage('run1', 2, 1000, 8)], 1100);
    tracker.receive([fanoutMessage('run1', 4, 1000, 0)], 1100);

    // Without the marker, the planned count is expected.
    assert.deepStrictEqual(tracker.outcome(5), { expected: 5, delivered: 3, endSeen: false, missingSample: [1, 3] });
    // The publish API refused seq 3: it is not expected.
    assert.equal(tracker.receive([fanoutEndMarker('run1', 5, [3])], 1200).kind, 'end');
    assert.deepStrictEqual(tracker.outcome(99), { expected: 4, delivered: 3, endSeen: true, missingSample: [1] });
  });

  it('pads messages to the requested size and caps the failed list', () => {
    assert.equal(fanoutMessage('r', 1, 2, 16).k6_padding?.length, 16);
    const marker = fanoutEndMarker(
      'r',
      10000,
      Array.from({ length: 6000 }, (_, i) => i),
    );
    assert.equal(marker.k6_failed.length, 5000);
    assert.equal(marker.k6_failed_truncated, true);
  });
});

describe('k6 scripts: text summary', () => {
  const data: SummaryData = {
    state: { testRunDurationMs: 61234 },
    options: { summaryTrendStats: ['avg', 'p(95)', 'p(99)'] },
    root_group: {
      name: '',
      path: '',
      groups: [],
      checks: [
        { name: 'socket.io connected', path: '::socket.io connected', passes: 99, fails: 1 },
        { name: 'closed by the client', path: '::closed by the client', passes: 100, fails: 0 },
      ],
    },
    metrics: {
      sio_connect_duration: {
        type: 'trend',
        contains: 'time',
        values: { avg: 12.5, 'p(95)': 40.25, 'p(99)': 1500 },
        thresholds: { 'p(95)<1000': { ok: true }, 'p(99)<1000': { ok: false } },
      },
      sio_connect_errors: {
        type: 'rate',
        contains: 'default',
        values: { rate: 0.01, passes: 1, fails: 99 },
        thresholds: { 'rate<0.05': { ok: true } },
      },
      sio_events_received: { type: 'counter', contains: 'default', values: { count: 420, rate: 7 } },
      data_received: { type: 'counter', contains: 'data', values: { count: 2048000, rate: 34000 } },
    },
  };

  it('states the verdict, every threshold with its observed value, checks and metrics', () => {
    const text = textSummary(data, { scenario: 'connect-storm', config: { RATE: 20 } });
    assert.match(text, /result: +FAIL \(1 of 3 thresholds crossed\)/);
    assert.match(text, /✗ sio_connect_duration +p\(99\)<1000 +p\(99\)=1\.50s/);
    assert.match(text, /✓ sio_connect_duration +p\(95\)<1000 +p\(95\)=40\.25ms/);
    assert.match(text, /✓ sio_connect_errors +rate<0\.05 +rate=1\.00%/);
    assert.match(text, /✗ socket\.io connected: 99\.00% \(99 passed, 1 failed\)/);
    assert.match(text, /config: +RATE=20/);
    assert.match(text, /data_received \.+: 2\.0 MB/);
    assert.ok(text.indexOf('sio_events_received') < text.indexOf('data_received'), 'own metrics listed first');
    assert.equal(thresholdStat('p(99.9)<5'), 'p(99.9)');
  });

  it('writes the text and the JSON with a gateway verdict block', () => {
    const out = summaryOutputs(data, { scenario: 'fanout', dir: 'results/', config: {} });
    assert.deepStrictEqual(Object.keys(out).sort(), ['results/fanout-summary.json', 'results/fanout-summary.txt', 'stdout']);
    const json = JSON.parse(out['results/fanout-summary.json'] ?? '{}') as { gateway: { passed: boolean; failedThresholds: string[] } };
    assert.equal(json.gateway.passed, false);
    assert.deepStrictEqual(json.gateway.failedThresholds, ['sio_connect_duration: p(99)<1000 (p(99)=1.50s)']);
  });
});
