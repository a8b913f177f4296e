import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Metrics } from '../metrics/metrics';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import { guardedSocket } from './app-socket';

export type AppHandler = (socket: unknown) => unknown;

const APP_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/**
 * In a v16 bench, apps/frappe/realtime/handlers.js is Frappe's own core
 * (rooms, ping, doc_viewers), which the gateway implements itself
 * (docs/protocol.md sections 3-5). Loading it too would answer every ping
 * twice and double every permission call.
 */
const CORE_APP = 'frappe';

/**
 * Frappe v16's per-app realtime handlers: `<bench>/apps/<app>/realtime/handlers.js`
 * (CommonJS, `module.exports = function (socket) {...}`), called for every
 * connection of a user who has the app installed (docs/protocol.md section 7).
 * Files are loaded once per process; a file that fails to load is logged and
 * counted, and the app is skipped from then on. Each app gets its own guarded
 * view of the socket, so an error thrown (or rejected) by the handler or by
 * any listener it registers is logged and counted under that app and never
 * breaks the connection or the process.
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
      if (app === CORE_APP) {
        if (existsSync(file)) this.log.info({ app, file }, "not loading Frappe's core realtime handlers: the gateway implements them");
      } else if (existsSync(file)) {
        handler = this.require(app, file);
      }
    }
    this.cache.set(app, handler);
    return handler;
  }

  private require(app: string, file: string): AppHandler | null {
    try {
      const mod: unknown = require(file);
      const fn = typeof mod === 'function' ? mod : (mod as { default?: unknown } | null)?.default;
      if (typeof fn === 'function') {
        this.log.info({ app, file }, 'loaded app realtime handlers');
        return fn as AppHandler;
      }
      this.metrics.appHandlerErrors.inc({ app });
      this.log.error({ app, file }, 'app realtime handlers.js does not export a function');
    } catch (err) {
      this.metrics.appHandlerErrors.inc({ app });
      this.log.error({ app, file, err: errorMessage(err) }, 'failed to load app realtime handlers');
    }
    return null;
  }

  attach(socket: object, installedApps: readonly string[]): void {
    for (const app of installedApps) {
      const handler = this.load(app);
      if (!handler) continue;
      const onError = (err: unknown, where: string): void => this.failed(app, err, where);
      try {
        const r = handler(guardedSocket(socket, (err) => onError(err, 'listener')));
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          (r as Promise<unknown>).then(undefined, (err: unknown) => onError(err, 'handler'));
        }
      } catch (err) {
        onError(err, 'handler');
      }
    }
  }

  private failed(app: string, err: unknown, where: string): void {
    this.metrics.appHandlerErrors.inc({ app });
    this.log.error(
      { app, where, err: errorMessage(err), stack: err instanceof Error ? err.stack : undefined },
      where === 'handler' ? 'app realtime handler threw' : 'app realtime listener threw',
    );
  }
}
