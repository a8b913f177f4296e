/**
 * Engine.IO v4 / Socket.IO v5 text codec and a client session state machine.
 *
 * Pure TypeScript with no imports: it runs inside k6 (Sobek, types stripped
 * by esbuild) and under Node for the unit tests, which compare every encoding
 * byte for byte with `engine.io-parser` and `socket.io-parser`.
 *
 * Binary packets (Engine.IO `b<base64>` messages, binary websocket frames,
 * Socket.IO BINARY_EVENT/BINARY_ACK) are out of scope: they are detected and
 * reported as `binary-unsupported`, never half-decoded.
 */

// ---------------------------------------------------------------------------
// Errors

export type CodecErrorCode =
  | 'binary-unsupported'
  | 'empty-packet'
  | 'unknown-packet-type'
  | 'invalid-ack-id'
  | 'invalid-payload'
  | 'invalid-handshake'
  | 'invalid-namespace';

export interface CodecError {
  readonly code: CodecErrorCode;
  readonly message: string;
}

export type DecodeResult<T> = { ok: true; value: T } | { ok: false; error: CodecError };

/** Thrown by the encoders for packets that cannot be put on the wire. */
export class CodecException extends Error {
  readonly code: CodecErrorCode;
  constructor(code: CodecErrorCode, message: string) {
    super(message);
    this.name = 'CodecException';
    this.code = code;
  }
}

function fail<T>(code: CodecErrorCode, message: string): DecodeResult<T> {
  return { ok: false, error: { code, message } };
}

function ok<T>(value: T): DecodeResult<T> {
  return { ok: true, value };
}

// ---------------------------------------------------------------------------
// Engine.IO v4

export type EngineIoPacketType = 'open' | 'close' | 'ping' | 'pong' | 'message' | 'upgrade' | 'noop';

/** Same shape as `engine.io-parser`'s Packet for text data. */
export interface EngineIoPacket {
  type: EngineIoPacketType;
  data?: string;
}

const ENGINE_IO_CODES: Readonly<Record<EngineIoPacketType, string>> = {
  open: '0',
  close: '1',
  ping: '2',
  pong: '3',
  message: '4',
  upgrade: '5',
  noop: '6',
};

const ENGINE_IO_TYPES: readonly EngineIoPacketType[] = ['open', 'close', 'ping', 'pong', 'message', 'upgrade', 'noop'];

/** Record separator between packets of a long-polling payload. */
export const PAYLOAD_SEPARATOR = '\x1e';

export function encodeEngineIoPacket(packet: EngineIoPacket): string {
  return ENGINE_IO_CODES[packet.type] + (packet.data === undefined ? '' : packet.data);
}

/**
 * Decodes one Engine.IO packet (one websocket text frame). Anything that is
 * not a string is a binary frame and is reported, not decoded.
 */
export function decodeEngineIoPacket(frame: unknown): DecodeResult<EngineIoPacket> {
  if (typeof frame !== 'string') {
    return fail('binary-unsupported', 'binary websocket frames are not supported');
  }
  if (frame.length === 0) {
    return fail('empty-packet', 'empty Engine.IO packet');
  }
  const code = frame.charAt(0);
  if (code === 'b') {
    return fail('binary-unsupported', 'base64 binary Engine.IO messages are not supported');
  }
  const index = code.charCodeAt(0) - 48;
  const type = index >= 0 && index < ENGINE_IO_TYPES.length ? ENGINE_IO_TYPES[index] : undefined;
  if (type === undefined) {
    return fail('unknown-packet-type', `unknown Engine.IO packet type ${JSON.stringify(code)}`);
  }
  return ok(frame.length > 1 ? { type, data: frame.substring(1) } : { type });
}

/** Long-polling payload: packets joined by the \x1e record separator. */
export function encodeEngineIoPayload(packets: readonly EngineIoPacket[]): string {
  return packets.map(encodeEngineIoPacket).join(PAYLOAD_SEPARATOR);
}

/** Decodes a long-polling payload; the first bad record fails the whole payload. */
export function decodeEngineIoPayload(payload: string): DecodeResult<EngineIoPacket[]> {
  const packets: EngineIoPacket[] = [];
  for (const record of payload.split(PAYLOAD_SEPARATOR)) {
    const decoded = decodeEngineIoPacket(record);
    if (!decoded.ok) return decoded;
    packets.push(decoded.value);
  }
  return ok(packets);
}

/** The JSON body of the Engine.IO `open` packet. */
export interface EngineIoHandshake {
  sid: string;
  upgrades: string[];
  pingInterval: number;
  pingTimeout: number;
  maxPayload: number;
}

export function parseEngineIoHandshake(data: string | undefined): DecodeResult<EngineIoHandshake> {
  if (data === undefined) return fail('invalid-handshake', 'open packet without handshake data');
  const parsed = tryParseJson(data);
  if (!parsed.ok || !isPlainObject(parsed.value)) {
    return fail('invalid-handshake', 'open packet data is not a JSON object');
  }
  const h = parsed.value;
  const sid = h['sid'];
  const pingInterval = h['pingInterval'];
  const pingTimeout = h['pingTimeout'];
  const maxPayload = h['maxPayload'];
  const upgrades = h['upgrades'];
  if (typeof sid !== 'string' || typeof pingInterval !== 'number' || typeof pingTimeout !== 'number') {
    return fail('invalid-handshake', 'open packet lacks sid, pingInterval or pingTimeout');
  }
  return ok({
    sid,
    pingInterval,
    pingTimeout,
    maxPayload: typeof maxPayload === 'number' ? maxPayload : 0,
    upgrades: Array.isArray(upgrades) ? upgrades.filter((u): u is string => typeof u === 'string') : [],
  });
}

// ---------------------------------------------------------------------------
// Socket.IO v5 (protocol 5, socket.io-parser 4.x)

export const SocketIoPacketType = {
  CONNECT: 0,
  DISCONNECT: 1,
  EVENT: 2,
  ACK: 3,
  CONNECT_ERROR: 4,
  BINARY_EVENT: 5,
  BINARY_ACK: 6,
} as const;

export type SocketIoPacketTypeCode = (typeof SocketIoPacketType)[keyof typeof SocketIoPacketType];

/** Field names match socket.io-parser's Packet so values compare directly. */
export interface ConnectPacket {
  type: typeof SocketIoPacketType.CONNECT;
  nsp: string;
  /** Client to server: the `auth` object. Server to client: `{ sid, pid? }`. */
  data?: Record<string, unknown>;
}

export interface DisconnectPacket {
  type: typeof SocketIoPacketType.DISCONNECT;
  nsp: string;
}

export interface EventPacket {
  type: typeof SocketIoPacketType.EVENT;
  nsp: string;
  id?: number;
  /** `[eventName, ...args]` */
  data: unknown[];
}

export interface AckPacket {
  type: typeof SocketIoPacketType.ACK;
  nsp: string;
  id: number;
  data: unknown[];
}

export interface ConnectErrorPacket {
  type: typeof SocketIoPacketType.CONNECT_ERROR;
  nsp: string;
  /** Socket.IO 4 servers send `{ message, data? }`; v2-era servers a bare string. */
  data?: string | Record<string, unknown>;
}

export type SocketIoPacket = ConnectPacket | DisconnectPacket | EventPacket | AckPacket | ConnectErrorPacket;

/** Event names the Socket.IO libraries reserve; a packet carrying one is invalid. */
const RESERVED_EVENTS: readonly string[] = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];

/** Frappe's client connects to `/<site>`; `/` stays `/`. */
export function namespaceFor(site: string): string {
  if (site === '' || site === '/') return '/';
  return site.charAt(0) === '/' ? site : `/${site}`;
}

function containsBinary(value: unknown, depth: number): boolean {
  if (value === null || typeof value !== 'object' || depth > 64) return false;
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return true;
  if (Array.isArray(value)) return value.some((v) => containsBinary(v, depth + 1));
  return Object.keys(value).some((k) => containsBinary((value as Record<string, unknown>)[k], depth + 1));
}

/**
 * Encodes a Socket.IO packet exactly as socket.io-parser's Encoder does for
 * non-binary packets: `<type>[<nsp>,][<ack id>][<json>]`, the namespace
 * omitted for `/`.
 */
export function encodeSocketIoPacket(packet: SocketIoPacket): string {
  const nsp = packet.nsp;
  if (nsp.charAt(0) !== '/' || nsp.indexOf(',') !== -1) {
    throw new CodecException('invalid-namespace', `invalid namespace ${JSON.stringify(nsp)}`);
  }
  let out = String(packet.type);
  if (nsp !== '/') out += `${nsp},`;
  if (packet.type === SocketIoPacketType.EVENT || packet.type === SocketIoPacketType.ACK) {
    if (packet.id !== undefined) {
      if (!isAckId(packet.id)) {
        throw new CodecException('invalid-ack-id', `invalid ack id ${String(packet.id)}`);
      }
      out += String(packet.id);
    }
    if (containsBinary(packet.data, 0)) {
      throw new CodecException('binary-unsupported', 'binary arguments are not supported');
    }
  }
  if (packet.type !== SocketIoPacketType.DISCONNECT && packet.data !== undefined && packet.data !== null) {
    out += JSON.stringify(packet.data);
  }
  return out;
}

/** Decodes a Socket.IO packet (the data of an Engine.IO `message`). */
export function decodeSocketIoPacket(str: string): DecodeResult<SocketIoPacket> {
  if (str.length === 0) return fail('empty-packet', 'empty Socket.IO packet');
  const type = str.charCodeAt(0) - 48;
  if (type === SocketIoPacketType.BINARY_EVENT || type === SocketIoPacketType.BINARY_ACK) {
    return fail('binary-unsupported', 'binary Socket.IO packets are not supported');
  }
  if (!(type >= 0 && type <= 4)) {
    return fail('unknown-packet-type', `unknown Socket.IO packet type ${JSON.stringify(str.charAt(0))}`);
  }

  // `i` is the index of the last consumed character, as in socket.io-parser.
  let i = 0;
  let nsp = '/';
  if (str.charAt(1) === '/') {
    const comma = str.indexOf(',', 1);
    i = comma === -1 ? str.length : comma;
    nsp = str.substring(1, i);
  }

  let id: number | undefined;
  if (isDigit(str.charCodeAt(i + 1))) {
    const start = i + 1;
    while (isDigit(str.charCodeAt(i + 1))) i += 1;
    id = Number(str.substring(start, i + 1));
    if (!isAckId(id)) return fail('invalid-ack-id', 'ack id out of range');
  }

  let data: unknown;
  let hasData = false;
  if (i + 1 < str.length) {
    const parsed = tryParseJson(str.substring(i + 1));
    if (!parsed.ok) return fail('invalid-payload', 'packet payload is not valid JSON');
    data = parsed.value;
    hasData = true;
  }

  switch (type) {
    case SocketIoPacketType.CONNECT: {
      if (!hasData) return ok<ConnectPacket>({ type, nsp });
      if (!isPlainObject(data)) return fail('invalid-payload', 'CONNECT payload must be an object');
      return ok<ConnectPacket>({ type, nsp, data });
    }
    case SocketIoPacketType.DISCONNECT: {
      if (hasData) return fail('invalid-payload', 'DISCONNECT carries no payload');
      return ok<DisconnectPacket>({ type, nsp });
    }
    case SocketIoPacketType.EVENT: {
      if (!hasData || !isEventPayload(data)) {
        return fail('invalid-payload', 'EVENT payload must be [name, ...args] with an unreserved name');
      }
      return ok<EventPacket>(id === undefined ? { type, nsp, data } : { type, nsp, id, data });
    }
    case SocketIoPacketType.ACK: {
      if (!hasData || !Array.isArray(data)) return fail('invalid-payload', 'ACK payload must be an array');
      if (id === undefined) return fail('invalid-ack-id', 'ACK without an ack id');
      return ok<AckPacket>({ type, nsp, id, data });
    }
    default: {
      // CONNECT_ERROR
      if (!hasData) return ok<ConnectErrorPacket>({ type: SocketIoPacketType.CONNECT_ERROR, nsp });
      if (typeof data !== 'string' && !isPlainObject(data)) {
        return fail('invalid-payload', 'CONNECT_ERROR payload must be a string or an object');
      }
      return ok<ConnectErrorPacket>({ type: SocketIoPacketType.CONNECT_ERROR, nsp, data });
    }
  }
}

/** A Socket.IO packet wrapped in an Engine.IO `message`: one websocket frame. */
export function encodeSocketIoFrame(packet: SocketIoPacket): string {
  return encodeEngineIoPacket({ type: 'message', data: encodeSocketIoPacket(packet) });
}

function isDigit(charCode: number): boolean {
  return charCode >= 48 && charCode <= 57;
}

function isAckId(id: number): boolean {
  return Number.isSafeInteger(id) && id >= 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEventPayload(value: unknown): value is unknown[] {
  if (!Array.isArray(value)) return false;
  const name: unknown = value[0];
  return typeof name === 'number' || (typeof name === 'string' && RESERVED_EVENTS.indexOf(name) === -1);
}

function tryParseJson(text: string): DecodeResult<unknown> {
  try {
    return ok(JSON.parse(text) as unknown);
  } catch {
    return fail('invalid-payload', 'invalid JSON');
  }
}

// ---------------------------------------------------------------------------
// Client session state machine

export type SessionState = 'opening' | 'connecting' | 'connected' | 'rejected' | 'closed';

export type DisconnectReason =
  /** The server sent DISCONNECT for our namespace. */
  | 'io server disconnect'
  /** We called `disconnect()`. */
  | 'io client disconnect'
  /** Engine.IO `close` packet, or the caller reported the websocket closed. */
  | 'transport close'
  /** No ping within pingInterval + pingTimeout (reported by `checkPingTimeout`). */
  | 'ping timeout';

/** Listener argument lists, by event name. */
export interface SocketIoSessionEvents {
  open: [handshake: EngineIoHandshake];
  connected: [sid: string];
  connectError: [message: string, data: unknown];
  event: [name: string, args: unknown[], ackId: number | undefined];
  ack: [id: number, args: unknown[]];
  ping: [];
  disconnected: [reason: DisconnectReason];
  /** A frame that could not be handled: binary, malformed, or out of order. */
  protocolError: [error: CodecError];
}

export type SessionEventName = keyof SocketIoSessionEvents;

type Listener<A extends unknown[]> = (...args: A) => void;
type ListenerTable = { [K in SessionEventName]: Array<Listener<SocketIoSessionEvents[K]>> };

export interface SocketIoSessionOptions {
  /** Namespace to join, e.g. `/site1.local`. */
  namespace: string;
  /** CONNECT payload; Frappe's browser client sends none. */
  auth?: Record<string, unknown>;
  /** Clock in ms, injectable for tests. */
  now?: () => number;
}

/**
 * One websocket-only Engine.IO connection joined to one namespace.
 *
 * Feed it every incoming text frame with `receive()` and send back whatever
 * it returns. Emits made before the namespace is connected are buffered and
 * released (in order) by the `receive()` call that handles the CONNECT, as
 * socket.io-client does.
 */
export class SocketIoSession {
  readonly namespace: string;
  private readonly auth: Record<string, unknown> | undefined;
  private readonly now: () => number;
  private readonly listeners: ListenerTable = {
    open: [],
    connected: [],
    connectError: [],
    event: [],
    ack: [],
    ping: [],
    disconnected: [],
    protocolError: [],
  };
  private sendBuffer: string[] = [];
  private nextAckId = 0;
  private currentState: SessionState = 'opening';
  private engineHandshake: EngineIoHandshake | undefined;
  private socketSid: string | undefined;
  private lastPingAt: number | undefined;
  private openedAt: number | undefined;
  private pings = 0;

  constructor(options: SocketIoSessionOptions) {
    const nsp = namespaceFor(options.namespace);
    if (nsp.indexOf(',') !== -1) {
      throw new CodecException('invalid-namespace', `invalid namespace ${JSON.stringify(nsp)}`);
    }
    this.namespace = nsp;
    this.auth = options.auth;
    this.now = options.now ?? Date.now;
  }

  get state(): SessionState {
    return this.currentState;
  }

  get handshake(): EngineIoHandshake | undefined {
    return this.engineHandshake;
  }

  /** Socket.IO socket id of the namespace connection (not the Engine.IO sid). */
  get sid(): string | undefined {
    return this.socketSid;
  }

  get pingsReceived(): number {
    return this.pings;
  }

  on<K extends SessionEventName>(name: K, listener: Listener<SocketIoSessionEvents[K]>): this {
    (this.listeners[name] as Array<Listener<SocketIoSessionEvents[K]>>).push(listener);
    return this;
  }

  off<K extends SessionEventName>(name: K, listener: Listener<SocketIoSessionEvents[K]>): this {
    const list = this.listeners[name] as Array<Listener<SocketIoSessionEvents[K]>>;
    const index = list.indexOf(listener);
    if (index !== -1) list.splice(index, 1);
    return this;
  }

  /** Handles one incoming websocket frame; returns the frames to send back. */
  receive(frame: unknown): string[] {
    const decoded = decodeEngineIoPacket(frame);
    if (!decoded.ok) {
      this.fire('protocolError', decoded.error);
      return [];
    }
    const packet = decoded.value;
    switch (packet.type) {
      case 'open':
        return this.onOpen(packet.data);
      case 'ping':
        if (this.isClosed()) return [];
        this.lastPingAt = this.now();
        this.pings += 1;
        this.fire('ping');
        return [encodeEngineIoPacket(packet.data === undefined ? { type: 'pong' } : { type: 'pong', data: packet.data })];
      case 'close':
        this.close('transport close');
        return [];
      case 'message':
        return this.onMessage(packet.data ?? '');
      default:
        // pong, upgrade and noop carry nothing for a websocket-only client.
        return [];
    }
  }

  /** Emits a client event; returns the frames to send now (none while buffered). */
  emit(name: string, ...args: unknown[]): string[] {
    return this.queue({ type: SocketIoPacketType.EVENT, nsp: this.namespace, data: [name, ...args] });
  }

  /** Emits with an ack id; the reply arrives as an `ack` event with that id. */
  emitWithAck(name: string, ...args: unknown[]): { id: number; frames: string[] } {
    const id = this.nextAckId;
    this.nextAckId += 1;
    const frames = this.queue({ type: SocketIoPacketType.EVENT, nsp: this.namespace, id, data: [name, ...args] });
    return { id, frames };
  }

  /** Leaves the namespace; returns the DISCONNECT frame to send, if any. */
  disconnect(): string[] {
    const wasJoined = this.currentState === 'connected' || this.currentState === 'connecting';
    if (this.isClosed()) return [];
    this.close('io client disconnect');
    return wasJoined ? [encodeSocketIoFrame({ type: SocketIoPacketType.DISCONNECT, nsp: this.namespace })] : [];
  }

  /** Tell the session that the websocket itself closed. */
  transportClosed(): void {
    this.close('transport close');
  }

  /**
   * How long until the server's ping is overdue (pingInterval + pingTimeout
   * after the last ping or the open). Undefined before the handshake.
   */
  msUntilPingTimeout(): number | undefined {
    if (this.engineHandshake === undefined || this.openedAt === undefined) return undefined;
    const since = this.lastPingAt ?? this.openedAt;
    return since + this.engineHandshake.pingInterval + this.engineHandshake.pingTimeout - this.now();
  }

  /** Closes the session with `ping timeout` when the server's ping is overdue. */
  checkPingTimeout(): boolean {
    const left = this.msUntilPingTimeout();
    if (left === undefined || left > 0 || this.isClosed()) return false;
    this.close('ping timeout');
    return true;
  }

  private isClosed(): boolean {
    return this.currentState === 'closed' || this.currentState === 'rejected';
  }

  private queue(packet: EventPacket): string[] {
    const frame = encodeSocketIoFrame(packet);
    if (this.currentState === 'connected') return [frame];
    if (this.isClosed()) return [];
    this.sendBuffer.push(frame);
    return [];
  }

  private onOpen(data: string | undefined): string[] {
    if (this.currentState !== 'opening') {
      this.fire('protocolError', { code: 'invalid-handshake', message: 'unexpected second open packet' });
      return [];
    }
    const handshake = parseEngineIoHandshake(data);
    if (!handshake.ok) {
      this.fire('protocolError', handshake.error);
      return [];
    }
    this.engineHandshake = handshake.value;
    this.openedAt = this.now();
    this.currentState = 'connecting';
    this.fire('open', handshake.value);
    const connect: ConnectPacket =
      this.auth === undefined
        ? { type: SocketIoPacketType.CONNECT, nsp: this.namespace }
        : { type: SocketIoPacketType.CONNECT, nsp: this.namespace, data: this.auth };
    return [encodeSocketIoFrame(connect)];
  }

  private onMessage(data: string): string[] {
    const decoded = decodeSocketIoPacket(data);
    if (!decoded.ok) {
      this.fire('protocolError', decoded.error);
      return [];
    }
    const packet = decoded.value;
    // One namespace per session: packets for others are not ours to handle.
    if (packet.nsp !== this.namespace) return [];
    switch (packet.type) {
      case SocketIoPacketType.CONNECT: {
        const sid = packet.data === undefined ? undefined : packet.data['sid'];
        if (this.currentState !== 'connecting' || typeof sid !== 'string') {
          this.fire('protocolError', { code: 'invalid-payload', message: 'unexpected CONNECT' });
          return [];
        }
        this.socketSid = sid;
        this.currentState = 'connected';
        const buffered = this.sendBuffer;
        this.sendBuffer = [];
        this.fire('connected', sid);
        return buffered;
      }
      case SocketIoPacketType.CONNECT_ERROR: {
        if (this.isClosed()) return [];
        const payload = packet.data;
        const message =
          typeof payload === 'string'
            ? payload
            : payload !== undefined && typeof payload['message'] === 'string'
              ? payload['message']
              : 'connect error';
        const extra = typeof payload === 'string' || payload === undefined ? undefined : payload['data'];
        this.currentState = 'rejected';
        this.sendBuffer = [];
        this.fire('connectError', message, extra);
        return [];
      }
      case SocketIoPacketType.EVENT: {
        if (this.currentState !== 'connected') return [];
        const [name, ...args] = packet.data;
        this.fire('event', String(name), args, packet.id);
        return [];
      }
      case SocketIoPacketType.ACK:
        if (this.currentState === 'connected') this.fire('ack', packet.id, packet.data);
        return [];
      default:
        // DISCONNECT
        this.close('io server disconnect');
        return [];
    }
  }

  private close(reason: DisconnectReason): void {
    if (this.isClosed()) return;
    this.currentState = 'closed';
    this.sendBuffer = [];
    this.fire('disconnected', reason);
  }

  private fire<K extends SessionEventName>(name: K, ...args: SocketIoSessionEvents[K]): void {
    const list = this.listeners[name] as Array<Listener<SocketIoSessionEvents[K]>>;
    for (const listener of list.slice()) listener(...args);
  }
}
