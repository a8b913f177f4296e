import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * `@socket.io/sticky` hands each new TCP connection to a worker once its
 * first chunk is read. Until the worker acknowledges the handle, the
 * primary's copy of the socket keeps reading, and Node discards what it
 * reads there (the handle's `onread` is a no-op once sent). A WebSocket
 * client writes as soon as it sees the 101 (the Socket.IO CONNECT packet,
 * or the upgrade probe), so that frame was sometimes lost and the client
 * hung. The primary stops reading once the first chunk is in; requests with
 * a body are left alone, sticky forwards their later chunks itself.
 * Register before `setupMaster` so this runs first.
 */
export function stopReadingOnHandoff(server: Server): void {
  server.prependListener('connection', (socket: Socket) => {
    socket.prependOnceListener('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = (end === -1 ? text : text.slice(0, end)).toLowerCase();
      if (head.includes('content-length:') || head.includes('transfer-encoding:')) return;
      (socket as unknown as { _handle?: { readStop?: () => number } | null })._handle?.readStop?.();
    });
  });
}
