import type { Server } from 'socket.io';
import type { Logger } from '../shared/logger';
import { engineClients } from '../shared/io-internals';

interface EngineConnection {
  readyState: string;
  close(): void;
  once(event: 'close', fn: () => void): void;
}

/**
 * Closes every client connection in jittered batches spread over `drainMs`,
 * at the transport level so that clients treat it as a lost connection and
 * reconnect by themselves (to another node, with their state). Walks
 * Engine.IO's connections, not the namespaces: a connection still in its
 * handshake, or whose socket ended up outside every listed namespace, is
 * drained too.
 */
export async function drainConnections(io: Server, drainMs: number, log: Logger): Promise<void> {
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
