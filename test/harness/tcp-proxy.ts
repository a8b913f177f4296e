/**
 * A TCP proxy between one gateway host and the spawned redis-server, to cut
 * that host off from Redis while its processes stay alive (issue 12: "a host
 * cut off from Redis").
 *
 * Why a proxy and not network namespaces: a namespace per host needs root,
 * iproute2 and veth/bridge set-up that differs between machines and CI
 * runners, and its teardown must survive a crashed test. A proxy in the test
 * process needs none of that and cuts exactly one host's connections, while
 * the other hosts and the test's own publisher keep talking to Redis directly.
 *
 * Modes:
 *  - `blackhole()`: connections stay open, nothing passes in either
 *    direction and nobody is told (no FIN, no RST), like a link dropping every
 *    packet. TCP retransmits dropped segments, so a real partition never
 *    removes bytes from the middle of a stream: they are late, or the
 *    connection dies. The proxy therefore stops reading both sides (the kernel
 *    buffers fill and the sender's writes back up, as with a peer that no
 *    longer acknowledges) and delivers what was held, in order, on `heal()`:
 *    a partition shorter than the TCP retransmission timeout. Dropping the
 *    bytes for good would hand Redis half a command followed by the next one,
 *    something no network does. New connections made while blackholed are
 *    accepted but not connected upstream until `heal()` (a SYN with no answer
 *    looks the same to the client: the handshake never completes).
 *  - `withholdRepliesOn(match)`: the connection that sends a chunk matching
 *    `match` gets no more replies (Redis runs its commands, their answers are
 *    held); every other connection is untouched. A reply lost on the way back,
 *    for one client, deterministically. Held replies are delivered on `heal()`.
 *  - `heal()`: traffic flows again.
 *  - `reset()`: every open connection is closed with an RST on both sides
 *    (a partition that outlasted TCP's timeout, or a middlebox dropping state).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import { REDIS_HOST } from './redis';
import type { Scope } from './scope';

export interface TcpProxy {
  /** Port the proxy listens on (127.0.0.1). */
  readonly port: number;
  /** `redis://127.0.0.1:<port>`: give it to the host that goes through the proxy. */
  readonly url: string;
  readonly mode: 'open' | 'blackhole';
  /** Connections currently open through the proxy. */
  readonly connections: number;
  /** Bytes forwarded so far, each direction. */
  readonly forwarded: { readonly up: number; readonly down: number };
  blackhole(): void;
  /**
   * Blackholes the moment a chunk travelling towards Redis matches `when`
   * (that chunk included: it reaches Redis only on heal). Cuts a host off
   * between sending a command and receiving its reply, deterministically.
   */
  blackholeOn(when: (chunk: Buffer) => boolean): Promise<void>;
  /** See the modes above: resolves when the matching chunk was seen (and forwarded to Redis). */
  withholdRepliesOn(when: (chunk: Buffer) => boolean): Promise<void>;
  heal(): void;
  /** RST every open connection (both sides); new connections are still accepted. */
  reset(): void;
  close(): Promise<void>;
}

export interface StartTcpProxyOptions {
  targetPort: number;
  targetHost?: string;
  scope?: Scope;
}

interface Pair {
  readonly client: Socket;
  upstream: Socket | null;
  /** Chunks read but not forwarded because the proxy was blackholed meanwhile. */
  readonly held: { to: Socket; chunk: Buffer }[];
  /** Replies (Redis to client) are held for this connection only (`withholdRepliesOn`). */
  withholding: boolean;
}

export async function startTcpProxy(options: StartTcpProxyOptions): Promise<TcpProxy> {
  const targetHost = options.targetHost ?? REDIS_HOST;
  const pairs = new Set<Pair>();
  let mode: 'open' | 'blackhole' = 'open';
  const forwarded = { up: 0, down: 0 };
  let armed: { when: (chunk: Buffer) => boolean; fired: () => void } | null = null;
  let armedReplies: { when: (chunk: Buffer) => boolean; fired: () => void } | null = null;

  const destroy = (pair: Pair, rst: boolean): void => {
    for (const s of [pair.client, pair.upstream]) {
      if (!s || s.destroyed) continue;
      if (rst) s.resetAndDestroy();
      else s.destroy();
    }
    pairs.delete(pair);
  };

  const pipe = (pair: Pair, from: Socket, to: Socket, dir: 'up' | 'down'): void => {
    from.on('data', (chunk: Buffer) => {
      if (dir === 'up' && armed?.when(chunk)) {
        const { fired } = armed;
        armed = null;
        proxy.blackhole();
        fired();
      }
      if (dir === 'up' && armedReplies?.when(chunk)) {
        const { fired } = armedReplies;
        armedReplies = null;
        pair.withholding = true;
        fired();
      }
      if (mode === 'blackhole' || (dir === 'down' && pair.withholding)) {
        pair.held.push({ to, chunk });
        return;
      }
      forwarded[dir] += chunk.length;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => {
          if (mode === 'open') from.resume();
        });
      }
    });
  };

  const connectUpstream = (pair: Pair): void => {
    const upstream = connect({ host: targetHost, port: options.targetPort });
    pair.upstream = upstream;
    upstream.on('error', () => destroy(pair, false));
    upstream.on('close', () => destroy(pair, false));
    upstream.on('connect', () => {
      pipe(pair, pair.client, upstream, 'up');
      pipe(pair, upstream, pair.client, 'down');
      if (mode === 'open') pair.client.resume();
      else upstream.pause();
    });
  };

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    const pair: Pair = { client, upstream: null, held: [], withholding: false };
    pairs.add(pair);
    client.on('error', () => destroy(pair, false));
    client.on('close', () => destroy(pair, false));
    if (mode === 'open') connectUpstream(pair);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('tcp proxy: no port');
  const port = address.port;

  let closing: Promise<void> | undefined;
  const proxy: TcpProxy = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get mode() {
      return mode;
    },
    get connections() {
      return pairs.size;
    },
    forwarded,
    blackhole() {
      mode = 'blackhole';
      for (const p of pairs) {
        p.client.pause();
        p.upstream?.pause();
      }
    },
    heal() {
      mode = 'open';
      for (const p of [...pairs]) {
        p.withholding = false;
        if (p.upstream === null) connectUpstream(p);
        else {
          for (const { to, chunk } of p.held.splice(0)) to.write(chunk);
          p.client.resume();
          p.upstream.resume();
        }
      }
    },
    blackholeOn(when) {
      return new Promise<void>((resolve) => {
        armed = { when, fired: resolve };
      });
    },
    withholdRepliesOn(when) {
      return new Promise<void>((resolve) => {
        armedReplies = { when, fired: resolve };
      });
    },
    reset() {
      for (const p of [...pairs]) destroy(p, true);
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const p of [...pairs]) destroy(p, false);
        server.close(() => resolve());
      });
      return closing;
    },
  };
  options.scope?.add(proxy);
  return proxy;
}
