import { periodic, type RedisClient } from './connect';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

/** Frappe (2026) keeps the socket secret in this Redis key, unprefixed. */
export const FRAPPE_SOCKET_SECRET_KEY = 'socketio_auth_secret';
const REFRESH_MS = 30_000;

/**
 * The X-Frappe-Socket-Secret value: the configured one, else the one Frappe
 * stores in Redis (refreshed periodically; the last known value is kept while
 * Redis is away).
 */
export class SocketSecret {
  private value: string | null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    configured: string | null,
    private readonly client: RedisClient | null,
    private readonly log: Logger,
    /** A periodic read skipped (connection down or stalled, or the last read unanswered). */
    onSkip?: () => void,
  ) {
    this.value = configured;
    if (configured === null && client !== null) {
      // The client may still be connecting (a fail-fast client rejects
      // commands until then): read again whenever it becomes ready.
      client.on('ready', this.onReady);
      void this.refresh();
      const tick = periodic(client, () => this.refresh(), onSkip);
      this.timer = setInterval(tick, REFRESH_MS);
      this.timer.unref();
    }
  }

  private readonly onReady = (): void => void this.refresh();

  get(): string | null {
    return this.value;
  }

  private async refresh(): Promise<void> {
    await this.client
      ?.get(FRAPPE_SOCKET_SECRET_KEY)
      .then((v) => {
        this.value = v;
      })
      .catch((err: unknown) => this.log.debug({ err: errorMessage(err) }, 'socket secret not refreshed'));
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.client?.off('ready', this.onReady);
  }
}
