import { randomFillSync } from 'node:crypto';

/** Bytes drawn from the CSPRNG at once; each byte is handed out once. */
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let offset = 0;

/**
 * `bytes` random bytes from the CSPRNG as base64url, taken from a pool
 * filled 4 KiB at a time. `randomBytes(n)` per call costs a native call and
 * a Buffer each time: a session id and an auth lock token per handshake were
 * ~1.5% of a worker's CPU in a connect storm (BENCHMARKS.md, "Connect storm
 * on 2 workers").
 */
export function randomBase64url(bytes: number): string {
  if (bytes > POOL_BYTES) return randomFillSync(Buffer.allocUnsafe(bytes)).toString('base64url');
  if (offset + bytes > pool.length) {
    pool = randomFillSync(Buffer.allocUnsafe(POOL_BYTES));
    offset = 0;
  }
  const s = pool.toString('base64url', offset, offset + bytes);
  // Handed-out bytes are not kept readable in the pool.
  pool.fill(0, offset, offset + bytes);
  offset += bytes;
  return s;
}
