/**
 * docs/protocol.md sections 3, 4 and 6: subscriptions, permission flavours,
 * unsubscription, task rooms, ping, and bad client input.
 */
import assert from 'node:assert/strict';
import { CAN_SUBSCRIBE_DOC, CAN_SUBSCRIBE_DOCTYPE, HAS_PERMISSION, type RecordedRequest } from '../../harness';
import { SITE, type CaseContext, type Client, type ConformanceCase, type TestUser } from './context';
import type { Variant } from './topology';

const DENIED = { result: 'denied' };
const ALLOWED = { result: 'allowed' };

function callsBy(ctx: CaseContext, u: TestUser, path: string): RecordedRequest[] {
  return ctx.topo.frappe.requests.filter((r) => r.path === path && r.headers.cookie === `sid=${u.sid}`);
}

/** Publishes one event per room and waits for each (by a unique marker). */
async function expectDelivered(c: Client, rooms: string[], uid: (p: string) => string): Promise<void> {
  for (const room of rooms) {
    const marker = uid('m');
    await c.variant.publish({ event: 'room_event', message: { room, marker }, namespace: c.site, room });
    await c.rec.waitFor('room_event', (p) => (p as { marker?: string }).marker === marker);
  }
}

/** Publishes to each room, then proves with a barrier that none of it reached the client. */
async function expectNotDelivered(ctx: CaseContext, c: Client, rooms: string[]): Promise<void> {
  const markers = new Set<string>();
  for (const room of rooms) {
    const marker = ctx.uid('forbidden');
    markers.add(marker);
    await c.variant.publish({ event: 'room_event', message: { room, marker }, namespace: c.site, room });
  }
  await ctx.notReceived([c], 'room_event', (p) => markers.has((p as { marker?: string }).marker ?? ''));
}

/** Both permission flavours, one scenario: allowed doctype and doc join, denied ones never do. */
async function permissionScenario(ctx: CaseContext, variant: Variant): Promise<void> {
  const { frappe } = ctx.topo;
  const u = ctx.newUser();
  const open = ctx.uid('OpenDoctype');
  const partly = ctx.uid('PartlyDoctype');
  frappe.allow(u.user, open);
  frappe.allow(u.user, partly, 'P-1');
  frappe.deny(u.user, partly, 'P-2');
  const c = await ctx.connect(u, { variant });

  const deniedBefore = await variant.metric('gateway_permission_checks_total', DENIED);
  c.socket.emit('doctype_subscribe', partly);
  c.socket.emit('doc_subscribe', partly, 'P-2');
  c.socket.emit('doctype_subscribe', open);
  c.socket.emit('doc_subscribe', partly, 'P-1');
  await variant.waitJoined(SITE, c.socket, `doctype:${open}`);
  await variant.waitJoined(SITE, c.socket, `doc:${partly}/P-1`);
  // Both refusals decided (nothing is joined after the decision).
  await variant.waitMetric('gateway_permission_checks_total', DENIED, (v) => v >= deniedBefore + 2, 'two denied permission checks');

  await expectDelivered(c, [`doctype:${open}`, `doc:${partly}/P-1`], ctx.uid);
  await expectNotDelivered(ctx, c, [`doctype:${partly}`, `doc:${partly}/P-2`]);
  for (const room of [`doctype:${partly}`, `doc:${partly}/P-2`]) {
    assert.ok(!(await variant.roomMembers(SITE, room)).flat().some((m) => m.id === c.socket.id), `${room} must not be joined`);
  }

  const queries = (path: string): Record<string, string>[] => callsBy(ctx, u, path).map((r) => r.query);
  const sortByJson = (a: Record<string, string>[]): Record<string, string>[] =>
    [...a].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
  if (variant.flavour === 'v16') {
    assert.deepEqual(
      sortByJson(queries(HAS_PERMISSION)),
      sortByJson([
        { doctype: partly, name: '' },
        { doctype: partly, name: 'P-2' },
        { doctype: open, name: '' },
        { doctype: partly, name: 'P-1' },
      ]),
    );
    assert.equal(callsBy(ctx, u, CAN_SUBSCRIBE_DOC).length + callsBy(ctx, u, CAN_SUBSCRIBE_DOCTYPE).length, 0);
  } else {
    assert.deepEqual(sortByJson(queries(CAN_SUBSCRIBE_DOCTYPE)), sortByJson([{ doctype: partly }, { doctype: open }]));
    assert.deepEqual(
      sortByJson(queries(CAN_SUBSCRIBE_DOC)),
      sortByJson([
        { doctype: partly, docname: 'P-2' },
        { doctype: partly, docname: 'P-1' },
      ]),
    );
    assert.equal(callsBy(ctx, u, HAS_PERMISSION).length, 0);
  }
  for (const r of callsBy(ctx, u, variant.flavour === 'v16' ? HAS_PERMISSION : CAN_SUBSCRIBE_DOC)) {
    assert.equal(r.method, 'GET');
    assert.equal(r.headers['x-frappe-site-name'], SITE);
  }
}

export const ROOM_CASES: ConformanceCase[] = [
  {
    name: 'permissions v16: has_permission(doctype, name or "") is asked; a truthy message joins, a falsy one never does',
    run: (ctx) => permissionScenario(ctx, ctx.topo.main),
  },
  {
    name: 'permissions v15: can_subscribe_doctype / can_subscribe_doc are asked; HTTP 200 joins, a 403 never does',
    run: (ctx) => permissionScenario(ctx, ctx.topo.alt),
  },
  {
    name: 'permissions v16: a backend error on has_permission joins nothing',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const u = ctx.newUser();
      const dt = ctx.uid('Doctype');
      frappe.allow(u.user, dt);
      const c = await ctx.connect(u);
      frappe.setFailure(u.sid, 'http500', 'has_permission');
      ctx.scope.add(() => frappe.setFailure(u.sid, null));
      // A 5xx is the backend failing, not a denial: counted as an error and not cached.
      const ERROR = { result: 'error' };
      const errorsBefore = await main.metric('gateway_permission_checks_total', ERROR);
      c.socket.emit('doctype_subscribe', dt);
      await main.waitMetric('gateway_permission_checks_total', ERROR, (v) => v >= errorsBefore + 1, 'the failed check to be decided');
      await expectNotDelivered(ctx, c, [`doctype:${dt}`]);
    },
  },
  {
    name: 'doctype_unsubscribe and doc_unsubscribe leave their rooms',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const u = ctx.newUser();
      const dt = ctx.uid('Doctype');
      frappe.allow(u.user, dt);
      const c = await ctx.connect(u);
      c.socket.emit('doctype_subscribe', dt);
      c.socket.emit('doc_subscribe', dt, 'N-1');
      await main.waitJoined(SITE, c.socket, `doctype:${dt}`);
      await main.waitJoined(SITE, c.socket, `doc:${dt}/N-1`);
      await expectDelivered(c, [`doctype:${dt}`, `doc:${dt}/N-1`], ctx.uid);
      c.socket.emit('doctype_unsubscribe', dt);
      c.socket.emit('doc_unsubscribe', dt, 'N-1');
      await main.waitLeft(SITE, c.socket, `doctype:${dt}`);
      await main.waitLeft(SITE, c.socket, `doc:${dt}/N-1`);
      await expectNotDelivered(ctx, c, [`doctype:${dt}`, `doc:${dt}/N-1`]);
    },
  },
  {
    name: 'task_subscribe and progress_subscribe join task_progress:<id> without a permission check; task_unsubscribe leaves',
    async run(ctx) {
      const { main } = ctx.topo;
      const u = ctx.newUser();
      const c = await ctx.connect(u);
      const t1 = ctx.uid('task');
      const t2 = ctx.uid('task');
      c.socket.emit('task_subscribe', t1);
      c.socket.emit('progress_subscribe', t2);
      await main.waitJoined(SITE, c.socket, `task_progress:${t1}`);
      await main.waitJoined(SITE, c.socket, `task_progress:${t2}`);
      await expectDelivered(c, [`task_progress:${t1}`, `task_progress:${t2}`], ctx.uid);
      c.socket.emit('task_unsubscribe', t1);
      await main.waitLeft(SITE, c.socket, `task_progress:${t1}`);
      await expectNotDelivered(ctx, c, [`task_progress:${t1}`]);
      await expectDelivered(c, [`task_progress:${t2}`], ctx.uid);
      const permissionCalls = ctx.topo.frappe.requests.filter(
        (r) => r.headers.cookie === `sid=${u.sid}` && !r.path.endsWith('get_user_info'),
      );
      assert.deepEqual(
        permissionCalls.map((r) => r.path),
        [],
      );
    },
  },
  {
    name: 'ping: the server answers pong (no payload) to that socket only',
    async run(ctx) {
      const a = await ctx.connect(ctx.newUser());
      const b = await ctx.connect(ctx.newUser());
      a.socket.emit('ping');
      const pong = await a.rec.waitForRecord('pong');
      assert.deepEqual(pong.args, []);
      await ctx.barrier([a, b]);
      assert.equal(b.rec.count('pong'), 0);
      assert.equal(a.rec.count('pong'), 1);
    },
  },
  {
    name: 'client events with wrong argument types or sizes are ignored and counted; the connection survives',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const u = ctx.newUser();
      frappe.allow('*', 'ToDo');
      const c = await ctx.connect(u);
      const huge = 'x'.repeat(10_000);
      const bad: unknown[][] = [
        ['doctype_subscribe', 1.5],
        ['doctype_subscribe', 'To\u0000Do'],
        ['doctype_subscribe'],
        ['doctype_subscribe', ''],
        ['doctype_subscribe', huge],
        ['doctype_unsubscribe', { doctype: 'ToDo' }],
        ['doc_subscribe', 'ToDo'],
        ['doc_subscribe', 'ToDo', { name: 'x' }],
        ['doc_subscribe', ['ToDo'], 'x'],
        ['doc_unsubscribe', 'ToDo', null],
        ['doc_open', null, 'x'],
        ['doc_close', 'ToDo', 4.2],
        ['doc_open', 'ToDo', 'line\nbreak'],
        ['task_subscribe', {}],
        ['progress_subscribe', true],
        ['task_unsubscribe', huge],
      ];
      const before = await main.metric('gateway_client_events_rejected_total');
      for (const [event, ...args] of bad) c.socket.emit(event as string, ...args);
      await main.waitMetric(
        'gateway_client_events_rejected_total',
        {},
        (v) => v >= before + bad.length,
        `${bad.length} rejected client events`,
      );
      assert.equal(await main.metric('gateway_client_events_rejected_total'), before + bad.length);
      assert.ok(c.socket.connected);
      c.socket.emit('ping');
      await c.rec.waitForRecord('pong');
      const calls = frappe.requests.filter((r) => r.headers.cookie === `sid=${u.sid}` && !r.path.endsWith('get_user_info'));
      assert.deepEqual(
        calls.map((r) => r.path),
        [],
        'rejected events must not reach the backend',
      );
      // Still fully functional.
      c.socket.emit('doctype_subscribe', 'ToDo');
      await main.waitJoined(SITE, c.socket, 'doctype:ToDo');
      assert.ok((await main.metric('gateway_permission_checks_total', ALLOWED)) >= 1);
    },
  },
  {
    name: 'numeric names (autoincrement naming) join the rooms Frappe builds with template strings: doc:ToDo/42, open_doc:ToDo/42, doctype:7, task_progress:99',
    async run(ctx) {
      const { main, frappe } = ctx.topo;
      const u = ctx.newUser();
      const dt = ctx.uid('Doctype');
      frappe.allow(u.user, 'ToDo', '42');
      frappe.allow(u.user, '7');
      const c = await ctx.connect(u);
      const rejectedBefore = await main.metric('gateway_client_events_rejected_total');
      const deniedBefore = await main.metric('gateway_permission_checks_total', DENIED);
      c.socket.emit('doc_subscribe', 'ToDo', 42);
      c.socket.emit('doc_open', 'ToDo', 42);
      c.socket.emit('task_subscribe', 99);
      c.socket.emit('doctype_subscribe', 7);
      for (const room of ['doc:ToDo/42', 'open_doc:ToDo/42', 'task_progress:99', 'doctype:7']) {
        await main.waitJoined(SITE, c.socket, room);
      }
      await expectDelivered(c, ['doc:ToDo/42', 'open_doc:ToDo/42', 'task_progress:99', 'doctype:7'], ctx.uid);
      // The permission check is asked about the same string the room is named with.
      const names = callsBy(ctx, u, HAS_PERMISSION).map((r) => r.query);
      assert.ok(
        names.some((q) => q['doctype'] === 'ToDo' && q['name'] === '42'),
        JSON.stringify(names),
      );
      assert.ok(
        names.some((q) => q['doctype'] === '7' && q['name'] === ''),
        JSON.stringify(names),
      );
      // A number where a denied name is asked for joins nothing.
      c.socket.emit('doc_subscribe', dt, 43);
      await main.waitMetric('gateway_permission_checks_total', DENIED, (v) => v >= deniedBefore + 1, 'the denied check');
      await expectNotDelivered(ctx, c, [`doc:${dt}/43`]);
      assert.equal(await main.metric('gateway_client_events_rejected_total'), rejectedBefore);
      c.socket.emit('doc_unsubscribe', 'ToDo', 42);
      c.socket.emit('task_unsubscribe', 99);
      await main.waitLeft(SITE, c.socket, 'doc:ToDo/42');
      await main.waitLeft(SITE, c.socket, 'task_progress:99');
    },
  },
];
