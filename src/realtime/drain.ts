import type { Server } from 'socket.io';
import type { GatewayConfig } from '../config';
import type { Logger } from '../shared/logger';
import { engineClients } from '../shared/io-internals';

interface EngineConnection {
  readyState: string;
  close(): void;
  once(event: 'close', fn: () => void): void;
}

/** How a drain is paced: GATEWAY_DRAIN_MS, GATEWAY_DRAIN_RATE and the grace it must fit in. */
export interface DrainPace {
  /** The drain's length for a process holding up to rate x drainMs connections. */
  readonly drainMs: number;
  /** At most this many disconnects per second (0 = no bound: always `drainMs`). */
  readonly rate: number;
  /** The longest the drain may last (it has to end inside the shutdown grace). */
  readonly maxMs: number;
}

/**
 * How long to spread `connections` disconnects over. A fixed period sends a
 * big host's clients to the survivors at a rate that grows with its size
 * (5,000 clients in 10 s: 500 handshakes/s onto a host that authenticated
 * ~210/s in the rolling-restart bench); a rate keeps it bounded, within the
 * grace.
 */
export function drainPeriodMs(connections: number, pace: DrainPace): number {
  if (pace.rate <= 0) return pace.drainMs;
  const byRate = Math.ceil((connections / pace.rate) * 1000);
  return Math.max(pace.drainMs, Math.min(byRate, pace.maxMs));
}

/** What a drain leaves of the shutdown grace: the wait for closes (3 s), the services' stop, the primary's margin. */
export const DRAIN_GRACE_MARGIN_MS = 8000;

/** The pace from the configuration; `drainMs` as the primary asked, when it did. */
export function drainPace(config: Pick<GatewayConfig, 'drainMs' | 'drainRate' | 'shutdownGraceMs'>, drainMs = config.drainMs): DrainPace {
  return { drainMs, rate: config.drainRate, maxMs: Math.max(drainMs, config.shutdownGraceMs - DRAIN_GRACE_MARGIN_MS) };
}

/**
 * Closes every client connection in jittered batches spread over `drainMs`,
 * at the transport level so that clients treat it as a lost connection and
 * reconnect by themselves (to another node, with their state). Walks
 * Engine.IO's connections, not the namespaces: a connection still in its
 * handshake, or whose socket ended up outside every listed namespace, is
 * drained too.
 */
export async function drainConnections(io: Server, pace: number | DrainPace, log: Logger): Promise<void> {
  // engine.io keeps its connections in a protected field.
  const conns = engineClients<EngineConnection>(io);
  // Shuffle so that batches are not biased towards one site.
  for (let i = conns.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    const a = conns[i] as EngineConnection;
    conns[i] = conns[j] as EngineConnection;
    conns[j] = a;
  }
  if (conns.length === 0) return;
  const drainMs = typeof pace === 'number' ? pace : drainPeriodMs(conns.length, pace);
  // A long-polling client learns of the close with its next poll: wait for
  // every connection to finish closing (bounded), so the process does not
  // exit in between and turn a clean close into a transport error.
  const closed = Promise.all(
    conns.map((c) => new Promise<void>((resolve) => (c.readyState === 'closed' ? resolve() : c.once('close', () => resolve())))),
  );
  const steps = drainMs <= 0 ? 1 : Math.max(1, Math.min(conns.length, Math.floor(drainMs / 100)));
  const per = Math.ceil(conns.length / steps);
  log.info({ connections: conns.length, drainMs, batches: steps }, 'draining connections');
  for (let i = 0; i < steps; i++) {
    for (const c of conns.slice(i * per, (i + 1) * per)) c.close();
    if (i < steps - 1) {
      const jitter = (drainMs / steps) * (0.5 + Math.random());
      await new Promise((r) => setTimeout(r, jitter));
    }
  }
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([closed, new Promise<void>((r) => (timer = setTimeout(r, CLOSE_WAIT_MS)))]);
  clearTimeout(timer);
}

/** Upper bound on waiting for closes to complete after the last batch. */
const CLOSE_WAIT_MS = 3000;
