import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';

export type AppHandler = (socket: unknown) => unknown;

const APP_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/**
 * Frappe v16's per-app realtime handlers: `<bench>/apps/<app>/realtime/handlers.js`
 * (CommonJS, `module.exports = function (socket) {...}`), called for every
 * connection of a user who has the app installed. Files are loaded once per
 * process; a file that fails to load is logged and counted, and the app is
 * skipped from then on. Errors thrown (or rejected) by a handler never break
 * the connection.
 */
export class AppHandlers {
  private readonly cache = new Map<string, AppHandler | null>();

  constructor(
    private readonly appsPath: string | null,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  private load(app: string): AppHandler | null {
    const cached = this.cache.get(app);
    if (cached !== undefined) return cached;
    let handler: AppHandler | null = null;
    // installed_apps comes from the backend; still refuse names that could walk the filesystem.
    if (this.appsPath !== null && APP_NAME_RE.test(app)) {
      const file = join(this.appsPath, app, 'realtime', 'handlers.js');
      if (existsSync(file)) {
        try {
          const mod: unknown = require(file);
          const fn = typeof mod === 'function' ? mod : (mod as { default?: unknown } | null)?.default;
          if (typeof fn === 'function') {
            handler = fn as AppHandler;
            this.log.info({ app, file }, 'loaded app realtime handlers');
          } else {
            this.metrics.appHandlerErrors.inc({ app });
            this.log.error({ app, file }, 'app realtime handlers.js does not export a function');
          }
        } catch (err) {
          this.metrics.appHandlerErrors.inc({ app });
          this.log.error({ app, file, err: errorMessage(err) }, 'failed to load app realtime handlers');
        }
      }
    }
    this.cache.set(app, handler);
    return handler;
  }

  attach(socket: unknown, installedApps: readonly string[]): void {
    for (const app of installedApps) {
      const handler = this.load(app);
      if (!handler) continue;
      try {
        const r = handler(socket);
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          (r as Promise<unknown>).then(undefined, (err: unknown) => this.failed(app, err));
        }
      } catch (err) {
        this.failed(app, err);
      }
    }
  }

  private failed(app: string, err: unknown): void {
    this.metrics.appHandlerErrors.inc({ app });
    this.log.error({ app, err: errorMessage(err) }, 'app realtime handler threw');
  }
}
