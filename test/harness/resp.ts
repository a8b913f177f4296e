/**
 * A one-shot RESP2 client for readiness probes (PING, INFO, CLUSTER INFO,
 * SENTINEL ...). Opens a connection per call and closes it, so probing a
 * process that is still starting leaves no reconnecting client behind.
 */
import net from 'node:net';

export type RespValue = string | number | null | RespValue[];

export class RespError extends Error {
  readonly code = 'HARNESS_ERR_RESP';
  constructor(message: string) {
    super(message);
    this.name = 'RespError';
  }
}

function encodeCommand(args: readonly string[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(arg, 'utf8');
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
}

interface Parsed {
  value: RespValue | RespError;
  next: number;
}

/** Parses one RESP value at `offset`; undefined when the buffer is incomplete. */
function parseValue(buf: Buffer, offset: number): Parsed | undefined {
  const lineEnd = buf.indexOf('\r\n', offset);
  if (lineEnd < 0) return undefined;
  const type = String.fromCharCode(buf[offset] ?? 0);
  const line = buf.toString('utf8', offset + 1, lineEnd);
  const afterLine = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, next: afterLine };
    case '-':
      return { value: new RespError(line), next: afterLine };
    case ':':
      return { value: Number(line), next: afterLine };
    case '$': {
      const length = Number(line);
      if (length < 0) return { value: null, next: afterLine };
      if (buf.length < afterLine + length + 2) return undefined;
      return { value: buf.toString('utf8', afterLine, afterLine + length), next: afterLine + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count < 0) return { value: null, next: afterLine };
      const items: RespValue[] = [];
      let next = afterLine;
      for (let i = 0; i < count; i++) {
        const item = parseValue(buf, next);
        if (item === undefined) return undefined;
        if (item.value instanceof RespError) return item;
        items.push(item.value);
        next = item.next;
      }
      return { value: items, next };
    }
    default:
      return { value: new RespError(`unexpected RESP type byte ${JSON.stringify(type)}`), next: afterLine };
  }
}

/** Sends one command and returns its reply; error replies reject with RespError. */
export function redisCommand(host: string, port: number, args: readonly string[], timeoutMs = 2000): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    let settled = false;
    const socket = net.connect({ host, port });
    const finish = (err: Error | undefined, value?: RespValue): void => {
      if (settled) return;
      settled = true;
      socket.destroy();
      if (err !== undefined) reject(err);
      else resolve(value ?? null);
    };
    socket.setTimeout(timeoutMs, () => finish(new Error(`redis ${host}:${port} ${args[0] ?? ''}: no reply within ${timeoutMs} ms`)));
    socket.once('error', (err) => finish(err));
    socket.once('close', () => finish(new Error(`redis ${host}:${port}: connection closed before a reply`)));
    socket.once('connect', () => socket.write(encodeCommand(args)));
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const parsed = parseValue(buffer, 0);
      if (parsed === undefined) return;
      if (parsed.value instanceof RespError) finish(parsed.value);
      else finish(undefined, parsed.value);
    });
  });
}

/** Parses `INFO`-style text (`key:value` lines) into a record. */
export function parseInfo(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon > 0) out[line.slice(0, colon)] = line.slice(colon + 1);
  }
  return out;
}

/** `[k1, v1, k2, v2, ...]` (SENTINEL MASTER / REPLICAS entries) into a record. */
export function pairsToRecord(value: RespValue): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(value)) return out;
  for (let i = 0; i + 1 < value.length; i += 2) {
    const key = value[i];
    const val = value[i + 1];
    if (typeof key === 'string') out[key] = typeof val === 'string' ? val : String(val);
  }
  return out;
}
