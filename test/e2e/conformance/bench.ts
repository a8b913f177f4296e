/**
 * A temporary Frappe bench directory for the conformance suite: bench config
 * files (to prove they are read and that GATEWAY_* variables win over them)
 * and apps with `realtime/handlers.js` (docs/protocol.md section 7), one working
 * and several broken ones.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Scope } from '../../harness';

/** The site the bench names as `default_site` in sites/common_site_config.json. */
export const BENCH_DEFAULT_SITE = 'site1.local';
/** What config.json says; common_site_config.json (read later) must win. */
export const CONFIG_JSON_DEFAULT_SITE = 'overridden-by-common-site-config.local';

/** The app whose handlers work: `hello_chat(id)` joins `sensor:<id>` when permitted. */
export const CHAT_APP = 'chat';
/** Apps whose handlers.js fails: at load (syntax), when called (throws), asynchronously (rejects). */
export const BROKEN_APPS = ['broken_syntax', 'broken_throws', 'broken_async'] as const;
/** The path the chat handler requests through `socket.frappe_request` (not a gateway call). */
export const CHAT_APP_PATH = '/api/method/chat.api.sensor_hello';

const CHAT_HANDLERS = `'use strict';
// Written by the conformance suite: a v16-style app handler. A custom client
// event joins an app room after a permission check, then reports what the
// socket API gave it.
module.exports = function (socket) {
  socket.on('hello_chat', (id) => {
    if (typeof id !== 'string' && typeof id !== 'number') return;
    // Synchronous receipt, so a test can tell "not attached" from "not yet".
    socket.emit('hello_chat_seen', { id: String(id) });
    const room = 'sensor:' + id;
    // Frappe's contract: resolves only when permitted.
    socket.has_permission('Sensor', String(id)).then(async () => {
      socket.join(room);
      const res = await socket.frappe_request(${JSON.stringify(CHAT_APP_PATH)}, { sensor: String(id) });
      const roomUsers = await socket.gateway.roomUsers(room);
      socket.emit('hello_chat_joined', {
        room,
        user: socket.user,
        user_type: socket.user_type,
        installed_apps: socket.installed_apps,
        backend_status: res.status,
        room_users: roomUsers,
      });
    });
  });
};
`;

/**
 * What a v16 bench has in apps/frappe/realtime/handlers.js: Frappe's core
 * handlers, which the gateway implements itself. Reduced to its ping handler;
 * loading it would answer every ping twice.
 */
const FRAPPE_CORE_HANDLERS = `module.exports = function (socket) { socket.on('ping', () => socket.emit('pong')); };\n`;

/** An app whose listeners fail after the handler returned: a sync throw, a rejection, an onAny throw. */
export const LISTENER_THROWS_APP = 'listener_throws';
const LISTENER_THROWS = `module.exports = function (socket) {
  socket.on('explode_sync', () => { throw new Error('listener_throws: sync'); });
  socket.on('explode_async', async () => { await null; throw new Error('listener_throws: async'); });
  socket.onAny((event) => { if (event === 'explode_any') throw new Error('listener_throws: onAny'); });
};
`;

const BROKEN: Record<(typeof BROKEN_APPS)[number], string> = {
  broken_syntax: `module.exports = function (socket) { socket.on('x', () => { ;\n`,
  broken_throws: `module.exports = function () { throw new Error('broken_throws: handler exploded'); };\n`,
  broken_async: `module.exports = async function () { throw new Error('broken_async: handler rejected'); };\n`,
};

export interface BenchOptions {
  scope: Scope;
  /** Written as bench keys that the environment must override. */
  socketioPort: number;
  deadPort: number;
  /** Cluster topologies also get a `redis_queue` that the environment overrides. */
  withRedisQueue: boolean;
}

/** Creates the bench; removed when the scope closes. */
export function makeBench(o: BenchOptions): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-bench-'));
  o.scope.add(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'sites'), { recursive: true });
  const configJson: Record<string, unknown> = {
    socketio_port: o.socketioPort,
    default_site: CONFIG_JSON_DEFAULT_SITE,
    webserver_port: o.deadPort,
  };
  if (o.withRedisQueue) configJson['redis_queue'] = `redis://127.0.0.1:${o.deadPort}`;
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify(configJson, null, 1));
  writeFileSync(
    path.join(dir, 'sites', 'common_site_config.json'),
    JSON.stringify({ default_site: BENCH_DEFAULT_SITE, developer_mode: 1, webserver_port: o.deadPort }, null, 1),
  );
  const write = (app: string, source: string): void => {
    mkdirSync(path.join(dir, 'apps', app, 'realtime'), { recursive: true });
    writeFileSync(path.join(dir, 'apps', app, 'realtime', 'handlers.js'), source);
  };
  write('frappe', FRAPPE_CORE_HANDLERS);
  write(LISTENER_THROWS_APP, LISTENER_THROWS);
  write(CHAT_APP, CHAT_HANDLERS);
  for (const app of BROKEN_APPS) write(app, BROKEN[app]);
  return dir;
}
