/**
 * docs/protocol.md sections 7 and 8: app handlers from the bench, and the bench
 * configuration (read, with GATEWAY_* variables taking precedence).
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { expectConnectError, waitConnect } from '../../harness';
import { BENCH_DEFAULT_SITE, BROKEN_APPS, CHAT_APP, CHAT_APP_PATH, CONFIG_JSON_DEFAULT_SITE, LISTENER_THROWS_APP } from './bench';
import { SITE, type ConformanceCase } from './context';

interface HelloChat {
  room: string;
  user: string;
  user_type: string;
  installed_apps: string[];
  backend_status: number;
  room_users: string[];
}

function refusesTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', () => resolve(true));
  });
}

export const APP_CASES: ConformanceCase[] = [
  {
    name: 'app handlers: hello_chat joins sensor:<id> using socket.user, has_permission, frappe_request and gateway.roomUsers; sensor:12 events arrive',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const apps = ['frappe', CHAT_APP];
      const [u1, u2, denied] = [0, 1, 2].map(() => ctx.newUser({ installed_apps: apps }));
      if (!u1 || !u2 || !denied) throw new Error('unreachable');
      frappe.allow(u1.user, 'Sensor', '12');
      frappe.allow(u2.user, 'Sensor', '12');
      const c1 = await ctx.connect(u1);
      // On the other worker (cluster): roomUsers has to be cluster-wide.
      const c2 = await ctx.connectElsewhere(u2, [c1]);
      const c3 = await ctx.connect(denied);

      c1.socket.emit('hello_chat', '12');
      const first = await c1.rec.waitFor<HelloChat>('hello_chat_joined');
      assert.deepEqual(first, {
        room: 'sensor:12',
        user: u1.user,
        user_type: 'System User',
        installed_apps: apps,
        backend_status: 404, // the fake backend has no such app method; the request reached it
        room_users: [u1.user],
      });
      const appCall = await frappe.waitForCall(CHAT_APP_PATH, (r) => r.headers.cookie === `sid=${u1.sid}`);
      assert.deepEqual(appCall.query, { sensor: '12' });
      assert.equal(appCall.headers['x-frappe-site-name'], SITE);
      assert.equal(appCall.headers['x-frappe-socket-secret'], main.socketSecret);

      c2.socket.emit('hello_chat', 12);
      const second = await c2.rec.waitFor<HelloChat>('hello_chat_joined');
      assert.deepEqual([...second.room_users].sort(), [u1.user, u2.user].sort());

      // No permission: has_permission never resolves, nothing is joined.
      c3.socket.emit('hello_chat', '12');
      await frappe.waitForCall('has_permission', (r) => r.headers.cookie === `sid=${denied.sid}` && r.query['name'] === '12');
      await main.waitJoined(SITE, c2.socket, 'sensor:12');
      await main.waitJoined(SITE, c1.socket, 'sensor:12');

      // A user without the app installed: its handlers are not attached. Events
      // of one socket are handled in order, so pong comes after any receipt.
      const noApp = ctx.newUser({ installed_apps: ['frappe'] });
      frappe.allow(noApp.user, 'Sensor', '12');
      const c4 = await ctx.connect(noApp);
      c4.socket.emit('hello_chat', '12');
      c4.socket.emit('ping');
      await c4.rec.waitForRecord('pong');
      assert.equal(c4.rec.count('hello_chat_seen'), 0, 'handlers run only for apps in installed_apps');
      c1.socket.emit('hello_chat', '12');
      c1.socket.emit('ping');
      const pong = await c1.rec.waitForRecord('pong');
      const seen = c1.rec.records('hello_chat_seen');
      assert.equal(seen.length, 2);
      assert.ok((seen[1]?.seq ?? Infinity) < pong.seq, 'the control: an installed app sees the event before pong');

      await main.publish({
        event: 'sensor_status_change',
        message: { sensor_id: '12', status: 'offline' },
        namespace: SITE,
        room: 'sensor:12',
      });
      for (const c of [c1, c2]) assert.deepEqual(await c.rec.waitFor('sensor_status_change'), { sensor_id: '12', status: 'offline' });
      await ctx.notReceived([c3, c4], 'sensor_status_change');
      assert.equal(c3.rec.count('hello_chat_joined'), 0);
    },
  },
  {
    name: 'app handlers: a broken handlers.js (syntax error, throws, rejects) is logged and counted and breaks neither the connection nor other apps',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const apps = ['frappe', ...BROKEN_APPS, CHAT_APP, 'not_on_this_bench'];
      const u = ctx.newUser({ installed_apps: apps });
      frappe.allow(u.user, 'Sensor', '77');
      const before: Record<string, number> = {};
      for (const app of BROKEN_APPS) before[app] = await main.metric('gateway_app_handler_errors_total', { app });

      const c1 = await ctx.connect(u);
      const c2 = await ctx.connect(u);
      // Every connection calls the handlers: two errors each for throws/rejects; a file that cannot load is counted once per process.
      for (const app of ['broken_throws', 'broken_async']) {
        await main.waitMetric('gateway_app_handler_errors_total', { app }, (v) => v >= (before[app] ?? 0) + 2, `${app} errors`);
      }
      await main.waitMetric('gateway_app_handler_errors_total', { app: 'broken_syntax' }, (v) => v >= 1, 'broken_syntax load error');
      assert.equal(
        await main.metric('gateway_app_handler_errors_total', { app: 'not_on_this_bench' }),
        0,
        'an app without handlers.js is not an error',
      );
      for (const app of BROKEN_APPS) {
        const line = await main.gw.waitForLog(
          (_l, json) => json?.['app'] === app && typeof json['level'] === 'number' && json['level'] >= 50,
        );
        assert.ok(line.length > 0);
      }

      // Both connections work, and the chat app (listed after the broken ones) still runs.
      for (const c of [c1, c2]) {
        assert.ok(c.socket.connected);
        c.socket.emit('ping');
        await c.rec.waitForRecord('pong');
      }
      c2.socket.emit('hello_chat', '77');
      assert.equal((await c2.rec.waitFor<HelloChat>('hello_chat_joined')).room, 'sensor:77');
      await main.waitJoined(SITE, c2.socket, 'sensor:77');
      await main.publish({ event: 'sensor_status_change', message: { sensor_id: '77' }, namespace: SITE, room: 'sensor:77' });
      assert.deepEqual(await c2.rec.waitFor('sensor_status_change'), { sensor_id: '77' });
    },
  },
  {
    name: "app handlers: Frappe's own apps/frappe/realtime/handlers.js is not loaded (one pong per ping)",
    async run(ctx) {
      const { main } = ctx.topo;
      const a = await ctx.connect(ctx.newUser({ installed_apps: ['frappe', CHAT_APP] }));
      a.socket.emit('ping');
      a.socket.emit('ping');
      await a.rec.waitForRecord('pong');
      await ctx.barrier([a]);
      assert.equal(a.rec.count('pong'), 2, 'one pong per ping');
      // The info line saying so is checked in test/unit/app-handlers.test.ts (the harness logs at warn).
      assert.equal(await main.metric('gateway_app_handler_errors_total', { app: 'frappe' }), 0);
    },
  },
  {
    name: 'app handlers: a listener that throws or rejects later is counted and logged with the app and stack; the connection, its peers and the process carry on',
    async run(ctx) {
      const { main } = ctx.topo;
      const apps = [LISTENER_THROWS_APP, CHAT_APP];
      const victim = await ctx.connect(ctx.newUser({ installed_apps: apps }));
      // A bystander on the same process (cluster: same worker) as the victim.
      const peers: (typeof victim)[] = [];
      const bystanderUser = ctx.newUser();
      for (let i = 0; i < 6 && peers.length === 0; i++) {
        const c = await ctx.connect(bystanderUser);
        if (ctx.kind !== 'cluster' || (await ctx.workerOf(c)) === (await ctx.workerOf(victim))) peers.push(c);
      }
      const bystander = peers[0];
      assert.ok(bystander, 'a bystander on the same process');
      let disconnects = 0;
      for (const c of [victim, bystander]) c.socket.on('disconnect', () => disconnects++);
      const before = await main.metric('gateway_app_handler_errors_total', { app: LISTENER_THROWS_APP });
      victim.socket.emit('explode_sync');
      victim.socket.emit('explode_async');
      victim.socket.emit('explode_any');
      await main.waitMetric(
        'gateway_app_handler_errors_total',
        { app: LISTENER_THROWS_APP },
        (v) => v >= before + 3,
        'three listener errors',
      );
      for (const what of ['sync', 'async', 'onAny']) {
        const line = await main.gw.waitForLog(
          (_l, json) => json?.['app'] === LISTENER_THROWS_APP && json['err'] === `listener_throws: ${what}` && json['level'] === 50,
        );
        assert.match(line, /handlers\.js/, 'the stack is logged');
      }
      // Same connections, still served: the process did not restart.
      const victimId = victim.socket.id;
      victim.socket.emit('ping');
      await victim.rec.waitForRecord('pong');
      assert.equal(victim.socket.id, victimId);
      assert.ok(victim.socket.connected && bystander.socket.connected);
      await ctx.barrier([victim, bystander]);
      assert.equal(disconnects, 0);
      victim.socket.emit('hello_chat', 'x');
      await victim.rec.waitFor('hello_chat_seen');
    },
  },
  {
    name: 'bench config: default_site comes from sites/common_site_config.json (over config.json); GATEWAY_* env wins over socketio_port, webserver_port and redis_queue',
    async run(ctx) {
      const { main, benchSocketioPort } = ctx.topo;
      const u = ctx.newUser();
      // default_site: the later file wins.
      const ok = ctx.open(u, { site: BENCH_DEFAULT_SITE, siteHeader: false });
      await waitConnect(ok.socket);
      assert.equal(
        await expectConnectError(ctx.open(u, { site: CONFIG_JSON_DEFAULT_SITE, siteHeader: false }).socket),
        'Invalid namespace',
      );
      // socketio_port: GATEWAY_PORT wins; nothing listens on the bench's port.
      assert.notEqual(main.gw.port, benchSocketioPort);
      assert.ok(await refusesTcp(benchSocketioPort), `nothing may listen on the bench socketio_port ${benchSocketioPort}`);
      // webserver_port (developer_mode) points at a closed port: auth went to GATEWAY_BACKEND_URL.
      assert.ok(ok.socket.connected);
      // redis_queue (cluster bench) points at a closed port: events flow through GATEWAY_REDIS_URL.
      await main.waitJoined(SITE, ok.socket, `user:${u.user}`);
      await main.publish({ event: 'bench_probe', message: { ok: true }, namespace: SITE, room: `user:${u.user}` });
      assert.deepEqual(await ok.rec.waitFor('bench_probe'), { ok: true });
    },
  },
];
