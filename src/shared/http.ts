import type { Server } from 'node:net';

/**
 * Accept queue length: Node's default (511) overflows in a reconnect storm
 * and the kernel answers the excess with resets. The kernel caps it at
 * net.core.somaxconn.
 */
const LISTEN_BACKLOG = 4096;

export function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    // An http.Server also closes its keep-alive connections; the primary's net.Server has none of its own.
    (server as { closeIdleConnections?: () => void }).closeIdleConnections?.();
  });
}
