import net from 'node:net';

const LOOPBACK = '127.0.0.1';

function listenEphemeral(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ host: LOOPBACK, port: 0, exclusive: true }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function portOf(server: net.Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') {
    throw new Error('ports: listener has no TCP address');
  }
  return address.port;
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * A TCP port that was free on 127.0.0.1 a moment ago. Another process can
 * still take it before the caller binds it; the OS hands out ephemeral ports
 * round-robin, so in practice this is reliable for tests.
 */
export async function freePort(): Promise<number> {
  const server = await listenEphemeral();
  const port = portOf(server);
  await closeServer(server);
  return port;
}

/** `n` distinct free ports: all listeners stay open until every port is known. */
export async function freePorts(n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`freePorts: n must be a non-negative integer, got ${n}`);
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral());
    return servers.map(portOf);
  } finally {
    await Promise.all(servers.map(closeServer));
  }
}
