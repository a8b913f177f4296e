/**
 * docs/protocol.md sections 1-3: what the backend publishes reaches exactly the
 * sockets in the addressed room of the addressed site, byte-for-byte Frappe
 * input, the shared fixtures, site-wide broadcasts, drops, transports.
 */
import assert from 'node:assert/strict';
import { httpRequest, loadFrappeFixtures, waitConnect, type FrappeFixture, type RecordedEvent } from '../../harness';
import { CHAT_APP } from './bench';
import { SITE, type CaseContext, type Client, type ConformanceCase } from './context';

/** docs/protocol.md section 2, byte for byte. */
export const PROTOCOL_EXAMPLE =
  '{\n "event": "list_update",\n "message": {\n  "doctype": "ToDo",\n  "name": "abc123",\n  "user": "Administrator"\n },\n "namespace": "site1.local",\n "room": "doctype:ToDo"\n}';

const FIXTURE_SITE = 'erp.example.com';
const OTHER_SITE = 'other.example.com';

async function subscribeDoctype(ctx: CaseContext, c: Client, doctype: string): Promise<void> {
  c.socket.emit('doctype_subscribe', doctype);
  await c.variant.waitJoined(c.site, c.socket, `doctype:${doctype}`);
}

function keyOf(event: string, message: unknown): string {
  return JSON.stringify([event, message]);
}

/**
 * The arguments Frappe published: a cluster with missed-event history adds
 * the event's history offset (a Redis stream id) as last argument, the way
 * socket.io's connection state recovery does, for socket.io-client to send
 * back on reconnection.
 */
function frappeArgs(kind: string, args: readonly unknown[]): unknown[] {
  const last = args[args.length - 1];
  return kind !== 'standalone' && args.length > 1 && typeof last === 'string' && /^\d+-\d+$/.test(last) ? args.slice(0, -1) : [...args];
}

export const DELIVERY_CASES: ConformanceCase[] = [
  {
    name: 'delivery: the byte-for-byte Frappe message of docs/protocol.md section 2 reaches doctype:ToDo on site1.local only',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      frappe.allow('*', 'ToDo');
      const subscriber = await ctx.connect(ctx.newUser());
      const bystander = await ctx.connect(ctx.newUser());
      const otherSite = await ctx.connect(ctx.newUser(), { site: 'site2.local' });
      await subscribeDoctype(ctx, subscriber, 'ToDo');
      await subscribeDoctype(ctx, otherSite, 'ToDo');
      await main.publishRaw(PROTOCOL_EXAMPLE);
      const got = await subscriber.rec.waitForRecord('list_update');
      assert.deepEqual(frappeArgs(ctx.kind, got.args), [{ doctype: 'ToDo', name: 'abc123', user: 'Administrator' }]);
      await ctx.notReceived([bystander, otherSite], 'list_update');
      await ctx.barrier([subscriber]);
      assert.equal(subscriber.rec.count('list_update'), 1, 'delivered exactly once');
    },
  },
  {
    name: 'delivery: every fixture of frappe-events.txt reaches exactly the sockets in its room of its site (doc, doctype, user, task_progress, all, app rooms, no room)',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const fixtures = loadFrappeFixtures();
      assert.ok(fixtures.length >= 10);
      const ana = ctx.newUser({ user: 'ana@example.com', user_type: 'System User', installed_apps: ['frappe', CHAT_APP] });
      const operador = ctx.newUser({ user: 'operador@example.com', user_type: 'System User' });
      const cliente = ctx.newUser({ user: 'cliente@example.com', user_type: 'Website User' });
      frappe.allow(ana.user, 'Sales Order');
      frappe.allow(ana.user, 'Sensor', '12');

      interface Target {
        client: Client;
        rooms: Set<string>;
      }
      const subscribeAll = async (c: Client): Promise<Set<string>> => {
        c.socket.emit('doc_subscribe', 'Sales Order', 'SO-2026-00042');
        c.socket.emit('doctype_subscribe', 'Sales Order');
        c.socket.emit('task_subscribe', '8b1f0c');
        c.socket.emit('hello_chat', '12');
        await c.rec.waitFor('hello_chat_joined');
        const rooms = ['doc:Sales Order/SO-2026-00042', 'doctype:Sales Order', 'task_progress:8b1f0c', 'sensor:12'];
        for (const room of rooms) await main.waitJoined(c.site, c.socket, room);
        return new Set([...rooms, `user:${ana.user}`, 'all', 'website']);
      };
      const targets: Target[] = [];
      const anaErp = await ctx.connect(ana, { site: FIXTURE_SITE });
      targets.push({ client: anaErp, rooms: await subscribeAll(anaErp) });
      const anaOther = await ctx.connect(ana, { site: OTHER_SITE });
      targets.push({ client: anaOther, rooms: await subscribeAll(anaOther) });
      targets.push({
        client: await ctx.connect(operador, { site: FIXTURE_SITE }),
        rooms: new Set([`user:${operador.user}`, 'all', 'website']),
      });
      targets.push({ client: await ctx.connect(cliente, { site: FIXTURE_SITE }), rooms: new Set([`user:${cliente.user}`, 'website']) });

      const recipients = (f: FrappeFixture): Target[] =>
        targets.filter((t) => (f.parsed.room ? t.client.site === f.parsed.namespace && t.rooms.has(f.parsed.room) : true));
      for (const f of fixtures)
        assert.ok(recipients(f).length > 0 || f.parsed.namespace !== FIXTURE_SITE, `fixture ${f.parsed.event} reaches nobody`);

      for (const f of fixtures) await main.publishRaw(f.raw);
      const fixtureEvents = new Set(fixtures.map((f) => f.parsed.event));
      const siteWide = fixtures.filter((f) => !f.parsed.room);
      // Site-wide events travel another route than room events: await them explicitly.
      for (const t of targets) {
        for (const f of siteWide) await t.client.rec.waitFor(f.parsed.event);
      }
      await ctx.barrier(targets.map((t) => t.client));

      for (const t of targets) {
        const received = t.client.rec.records().filter((r: RecordedEvent) => fixtureEvents.has(r.event));
        const expected = fixtures.filter((f) => recipients(f).includes(t));
        const who = `${t.client.user} on /${t.client.site}`;
        // Room events in publish order; site-wide ones may interleave differently.
        assert.deepEqual(
          received.filter((r) => !siteWide.some((f) => f.parsed.event === r.event)).map((r) => keyOf(r.event, r.args[0])),
          expected.filter((f) => f.parsed.room).map((f) => keyOf(f.parsed.event, f.parsed.message)),
          `${who}: room events`,
        );
        assert.deepEqual(
          received.filter((r) => siteWide.some((f) => f.parsed.event === r.event)).map((r) => keyOf(r.event, r.args[0])),
          siteWide.map((f) => keyOf(f.parsed.event, f.parsed.message)),
          `${who}: site-wide events`,
        );
        for (const r of received) assert.equal(frappeArgs(ctx.kind, r.args).length, 1, `${who}: ${r.event} must carry one argument`);
      }
    },
  },
  {
    name: 'delivery: an event without a room reaches every site namespace (whatever its namespace field says)',
    async run(ctx) {
      const { main } = ctx.topo;
      const s1 = await ctx.connect(ctx.newUser(), { site: 'site1.local' });
      const s2 = await ctx.connect(ctx.newUser(), { site: 'site2.local' });
      const guest = await ctx.connect(
        { user: 'Guest', user_type: 'Guest', sid: ctx.uid('expired'), installed_apps: undefined },
        { site: 'site3.local', expectUser: 'Guest' },
      );
      const build = ctx.uid('build');
      await main.publish({ event: 'build_event', message: { success: true, build } });
      await main.publish({ event: 'build_event', message: { success: false, build }, namespace: 'site1.local', room: null });
      for (const c of [s1, s2, guest]) {
        await c.rec.waitForCount('build_event', 2, (p) => (p as { build?: string }).build === build);
      }
    },
  },
  {
    name: 'delivery: a room without a namespace is dropped and counted (gateway_events_dropped_total{reason="no_namespace"})',
    async run(ctx) {
      const { main } = ctx.topo;
      const c = await ctx.connect(ctx.newUser());
      const labels = { reason: 'no_namespace' };
      const before = await main.metric('gateway_events_dropped_total', labels);
      await main.publishRaw(JSON.stringify({ event: 'lost_event', message: { a: 1 }, room: 'website' }));
      await main.publishRaw(JSON.stringify({ event: 'lost_event', message: { a: 2 }, room: `user:${c.user}`, namespace: null }));
      await main.waitMetric('gateway_events_dropped_total', labels, (v) => v >= before + 2, 'two no_namespace drops');
      await ctx.notReceived([c], 'lost_event');
      assert.equal(await main.metric('gateway_events_dropped_total', labels), before + 2);
    },
  },
  {
    name: 'delivery: sites are isolated (same user and room names on two sites)',
    async run(ctx) {
      const { main } = ctx.topo;
      const u = ctx.newUser();
      const a = await ctx.connect(u, { site: 'site-a.example' });
      const b = await ctx.connect(u, { site: 'site-b.example' });
      await main.publish({ event: 'only_a', message: { site: 'a' }, namespace: 'site-a.example', room: `user:${u.user}` });
      await main.publish({ event: 'only_b', message: { site: 'b' }, namespace: 'site-b.example', room: 'website' });
      assert.deepEqual(await a.rec.waitFor('only_a'), { site: 'a' });
      assert.deepEqual(await b.rec.waitFor('only_b'), { site: 'b' });
      await ctx.notReceived([a], 'only_b');
      await ctx.notReceived([b], 'only_a');
    },
  },
  {
    name: 'transport: Engine.IO 4 on /socket.io/ (pingInterval 25000, pingTimeout 20000, maxPayload 1e6, websocket upgrade), CORS reflecting the Origin with credentials',
    async run(ctx) {
      const { main } = ctx.topo;
      const origin = 'https://erp.example.com';
      const base = `${main.gw.url}/socket.io/?EIO=4&transport=polling`;
      const hs = await httpRequest(`${base}&t=${ctx.uid('t')}`, { headers: { Origin: origin } });
      assert.equal(hs.status, 200, hs.body);
      assert.equal(hs.headers['access-control-allow-origin'], origin);
      assert.equal(hs.headers['access-control-allow-credentials'], 'true');
      assert.equal(hs.body[0], '0', 'an Engine.IO open packet');
      const open = JSON.parse(hs.body.slice(1)) as {
        sid: string;
        upgrades: string[];
        pingInterval: number;
        pingTimeout: number;
        maxPayload: number;
      };
      assert.deepEqual(
        { upgrades: open.upgrades, pingInterval: open.pingInterval, pingTimeout: open.pingTimeout, maxPayload: open.maxPayload },
        { upgrades: ['websocket'], pingInterval: 25000, pingTimeout: 20000, maxPayload: 1e6 },
      );
      assert.equal(typeof open.sid, 'string');
      const preflight = await httpRequest(`${base}&sid=${open.sid}`, {
        method: 'OPTIONS',
        headers: { Origin: origin, 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'content-type' },
      });
      assert.ok(preflight.status === 204 || preflight.status === 200, `preflight: ${preflight.status}`);
      assert.equal(preflight.headers['access-control-allow-origin'], origin);
      assert.equal(preflight.headers['access-control-allow-credentials'], 'true');
      // The session's next request reaches the process that owns it (sticky routing in a cluster): close it.
      const close = await httpRequest(`${base}&sid=${open.sid}`, {
        method: 'POST',
        headers: { Origin: origin, 'Content-Type': 'text/plain;charset=UTF-8' },
        body: '1',
      });
      assert.equal(close.status, 200, close.body);
      assert.equal(close.body, 'ok');
    },
  },
  {
    name: 'transports: a polling-only client, a websocket-only client and an upgrading client all receive events',
    async run(ctx) {
      const { main } = ctx.topo;
      const polling = await ctx.connect(ctx.newUser(), { transports: ['polling'] });
      const websocket = await ctx.connect(ctx.newUser(), { transports: ['websocket'] });
      const upgrading = ctx.open(ctx.newUser());
      const upgraded = new Promise<string>((resolve) =>
        upgrading.socket.io.engine.once('upgrade', (t: { name: string }) => resolve(t.name)),
      );
      await waitConnect(upgrading.socket);
      assert.equal(await upgraded, 'websocket');
      await main.waitJoined(SITE, upgrading.socket, `user:${upgrading.user}`);
      for (const c of [polling, websocket, upgrading]) {
        // Several events each, so a polling client needs several requests (sticky routing in a cluster).
        for (let i = 0; i < 3; i++)
          await main.publish({ event: 'transport_probe', message: { i }, namespace: SITE, room: `user:${c.user}` });
        const got = await c.rec.waitForCount('transport_probe', 3);
        assert.deepEqual(
          got.map((r) => r.args[0]),
          [{ i: 0 }, { i: 1 }, { i: 2 }],
        );
      }
      assert.equal(polling.socket.io.engine.transport.name, 'polling');
      assert.equal(websocket.socket.io.engine.transport.name, 'websocket');
      assert.equal(upgrading.socket.io.engine.transport.name, 'websocket');
    },
  },
];
