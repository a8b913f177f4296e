/**
 * The browser scenarios, run against each topology (one host with several
 * workers, two hosts) by the *.test.ts files of this folder. Each scenario
 * uses its own users and documents, so the scenarios of one file share one
 * stack (Redis, gateways, nginx, Chromium) without seeing each other's events.
 */
import assert from 'node:assert/strict';
import { after, before, it, type TestContext } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { GET_USER_INFO } from '../harness/fake-frappe';
import { Scope, withScope } from '../harness/scope';
import { pollUntil } from '../harness/wait';
import { DESK_DOCTYPE, type SiteUser } from './frappe-site';
import {
  WAIT_MS,
  newContext,
  openAs,
  rtSnapshot,
  screenshot,
  screenshotPath,
  waitConnected,
  waitDataValues,
  waitElement,
  waitEvent,
  waitText,
  waitTransport,
} from './page';
import { startBrowserStack, type BrowserStack, type SocketLocation, type Topology } from './stack';

const SCENARIO_TIMEOUT_MS = 90_000;
const STACK_START_TIMEOUT_MS = 120_000;
const RECONNECT_TIMEOUT_MS = 30_000;
/** Fresh browsers tried until one lands apart from another user's process: 1 in 2^10 to fail with two hosts. */
const PLACEMENT_ATTEMPTS = 10;

function user(name: string, topology: Topology, userType: SiteUser['userType'] = 'System User'): SiteUser {
  const id = `${name}.${topology}@example.com`;
  return { user: id, password: `pw-${name}`, fullName: `${name[0]?.toUpperCase() ?? ''}${name.slice(1)} (${topology})`, userType };
}

function formPath(docname: string, taskId?: string): string {
  return `/app/todo/${encodeURIComponent(docname)}${taskId === undefined ? '' : `?task=${encodeURIComponent(taskId)}`}`;
}

/** Rooms a desk form page for `docname` ends up in (automatic + subscribed). */
function deskRooms(u: SiteUser, docname: string, taskId?: string): string[] {
  const rooms = [
    `user:${u.user}`,
    'website',
    'all',
    `doctype:${DESK_DOCTYPE}`,
    `doc:${DESK_DOCTYPE}/${docname}`,
    `open_doc:${DESK_DOCTYPE}/${docname}`,
  ];
  if (taskId !== undefined) rooms.push(`task_progress:${taskId}`);
  return rooms;
}

/**
 * Shared stack for a test file, started in `before` and torn down in `after`.
 * A scenario's failure leaves screenshots of its open pages as FAILED-*.png.
 */
export function useBrowserStack(topology: Topology): () => BrowserStack {
  const scope = new Scope();
  let stack: BrowserStack | undefined;
  before(
    async () => {
      stack = await startBrowserStack(scope, topology);
    },
    { timeout: STACK_START_TIMEOUT_MS },
  );
  after(() => scope.close());
  return () => {
    if (stack === undefined) throw new Error('browser stack not started');
    return stack;
  };
}

type ScenarioBody = (
  t: TestContext,
  pages: { open(context: BrowserContext, u: SiteUser, pathname: string): Promise<Page> },
  scope: Scope,
) => Promise<void>;

/** A scenario: its contexts close with it; on failure its pages are screenshotted first. */
function scenario(name: string, stackOf: () => BrowserStack, body: ScenarioBody): void {
  it(name, { timeout: SCENARIO_TIMEOUT_MS }, async (t) => {
    const scope = withScope(t);
    const opened: Page[] = [];
    const pages = {
      open: async (context: BrowserContext, u: SiteUser, pathname: string) => {
        const page = await openAs(context, stackOf().origin, u, pathname);
        opened.push(page);
        return page;
      },
    };
    try {
      await body(t, pages, scope);
    } catch (err) {
      for (const [i, page] of opened.entries()) {
        if (!page.isClosed())
          await page
            .screenshot({ path: screenshotPath(`FAILED-${stackOf().topology}-${name.slice(0, 60)}-${i}`), fullPage: true })
            .catch(() => undefined);
      }
      throw err;
    }
  });
}

export function deskScenarios(topology: Topology, stackOf: () => BrowserStack): void {
  scenario(
    'login, then Python-format publishes on `events` reach the desk page: doc update, list update, progress bar, msgprint to the user room',
    stackOf,
    async (t, pages, scope) => {
      const stack = stackOf();
      const ana = user('ana', topology);
      stack.addUser(ana, [DESK_DOCTYPE]);
      const docname = 'TODO-0001';
      const taskId = `import-${topology}`;
      const context = await newContext(stack.browser, scope);
      const page = await pages.open(context, ana, formPath(docname, taskId));

      // The session cookie is HttpOnly: the page script cannot read it, only the browser sends it.
      const sid = (await context.cookies(stack.origin)).find((c) => c.name === 'sid');
      assert.ok(sid !== undefined && sid.httpOnly, 'login set an HttpOnly sid cookie');
      assert.deepEqual(stack.site.sessionsOf(ana.user), [sid.value]);
      assert.ok(!(await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie)).includes('sid='));

      const rt = await waitConnected(page);
      assert.ok(rt.socketId !== null);
      const where = await stack.waitInRooms(rt.socketId, deskRooms(ana, docname, taskId));
      t.diagnostic(`page socket ${rt.socketId} is on gateway host ${where.host}, worker ${where.worker}`);

      // The gateway authenticated with the browser's cookie, as nginx forwarded it.
      const auth = await stack.frappe.waitForCall(GET_USER_INFO, (r) => r.headers.cookie === `sid=${sid.value}`, WAIT_MS);
      assert.equal(auth.headers['x-frappe-site-name'], stack.siteName);
      await waitText(page, '#navbar-user', ana.fullName);

      const modified = '2026-11-20 10:15:02.118233';
      assert.ok(
        (await stack.publish({
          event: 'doc_update',
          message: { doctype: DESK_DOCTYPE, name: docname, modified },
          namespace: stack.siteName,
          room: `doc:${DESK_DOCTYPE}/${docname}`,
        })) >= 1,
      );
      await waitText(page, '#doc-modified', modified);
      assert.equal(await page.locator('#doc-banner').isVisible(), true);

      await stack.publish({
        event: 'list_update',
        message: { doctype: DESK_DOCTYPE, name: 'TODO-0002', user: 'someone@example.com' },
        namespace: stack.siteName,
        room: `doctype:${DESK_DOCTYPE}`,
      });
      await waitElement(page, '#list-updates li[data-name="TODO-0002"]');

      // frappe.publish_progress(..., task_id=...) publishes `progress` to the task's room.
      const progress = (message: Record<string, unknown>) =>
        stack.publish({
          event: 'progress',
          message: { title: 'Importing ToDos', ...message },
          namespace: stack.siteName,
          room: `task_progress:${taskId}`,
        });
      await progress({ percent: 25, description: '1 of 4' });
      await waitText(page, '#progress-percent', '25%');
      await waitText(page, '#progress-description', '1 of 4');
      await progress({ progress: [3, 4], description: '3 of 4' });
      await waitText(page, '#progress-percent', '75%');
      assert.equal(await page.locator('#progress-bar').evaluate((el) => (el as unknown as { value: number }).value), 75);
      await progress({ percent: 100, description: 'Done' });
      await waitText(page, '#progress-percent', '100%');
      await waitText(page, '#progress-title', 'Importing ToDos');

      // Non-ASCII travels as \u escapes in Frappe's JSON and must render decoded.
      await stack.publish({ event: 'msgprint', message: 'Relatório pronto', namespace: stack.siteName, room: `user:${ana.user}` });
      await waitText(page, '#msgprint-message', 'Relatório pronto');
      assert.equal(await page.locator('#msgprint').isVisible(), true);

      t.diagnostic(`screenshot: ${await screenshot(page, `${topology}-login-and-publish`)}`);
    },
  );

  scenario(
    'two users in two browser contexts see each other in doc_viewers, and the closed one disappears',
    stackOf,
    async (t, pages, scope) => {
      const stack = stackOf();
      const bob = user('bob', topology);
      const cara = user('cara', topology);
      stack.addUser(bob, [DESK_DOCTYPE]);
      stack.addUser(cara, [DESK_DOCTYPE]);
      const docname = 'TODO-SHARED';
      const openRoom = `open_doc:${DESK_DOCTYPE}/${docname}`;

      const bobPage = await pages.open(await newContext(stack.browser, scope), bob, formPath(docname));
      const bobRt = await waitConnected(bobPage);
      const bobAt = await stack.waitInRooms(bobRt.socketId ?? '', [openRoom]);

      // Presence must be right across processes: cara's browser should land on
      // another host (two hosts) or another worker (one host) than bob's. Where
      // a browser lands is up to nginx's hash / the sticky balancer, so a cara
      // on the same process starts over as a new browser (closing counts as doc_close).
      const apart = (at: SocketLocation) => (stack.topology === 'two-hosts' ? at.host !== bobAt.host : at.worker !== bobAt.worker);
      let cara$: { context: BrowserContext; page: Page; at: SocketLocation } | undefined;
      for (let attempt = 1; cara$ === undefined; attempt++) {
        const context = await newContext(stack.browser, scope);
        const page = await pages.open(context, cara, formPath(docname));
        const at = await stack.waitInRooms((await waitConnected(page)).socketId ?? '', [openRoom]);
        if (apart(at) || attempt === PLACEMENT_ATTEMPTS) cara$ = { context, page, at };
        else await context.close();
      }
      const { context: caraContext, page: caraPage, at: caraAt } = cara$;
      t.diagnostic(`bob on host ${bobAt.host} worker ${bobAt.worker}, cara on host ${caraAt.host} worker ${caraAt.worker}`);
      assert.ok(
        apart(caraAt),
        `cara landed on bob's ${stack.topology === 'two-hosts' ? 'host' : 'worker'} ${PLACEMENT_ATTEMPTS} times in a row`,
      );

      // In order of first opening, on both pages.
      await waitDataValues(bobPage, '#viewers li', 'data-user', [bob.user, cara.user]);
      await waitDataValues(caraPage, '#viewers li', 'data-user', [bob.user, cara.user]);
      t.diagnostic(
        `screenshots: ${await screenshot(bobPage, `${topology}-doc-viewers-bob`)} ${await screenshot(caraPage, `${topology}-doc-viewers-cara`)}`,
      );

      // Closing the browser closes the connection: that counts as doc_close.
      await caraContext.close();
      await waitDataValues(bobPage, '#viewers li', 'data-user', [bob.user]);
      t.diagnostic(`screenshot: ${await screenshot(bobPage, `${topology}-doc-viewers-after-close`)}`);
    },
  );

  scenario('the stock client starts with long-polling and upgrades to websocket through nginx', stackOf, async (t, pages, scope) => {
    const stack = stackOf();
    const dan = user('dan', topology);
    stack.addUser(dan, [DESK_DOCTYPE]);
    const context = await newContext(stack.browser, scope);
    const page = await pages.open(context, dan, formPath('TODO-UPGRADE'));

    const rt = await waitTransport(page, 'websocket');
    assert.equal(rt.firstTransport, 'polling', 'the first transport was long-polling');
    assert.equal(rt.upgradedTo, 'websocket');
    assert.equal(
      await page.evaluate(
        () =>
          (globalThis as unknown as { rt: { socket: { io: { engine: { transport: { name: string } } } } } }).rt.socket.io.engine.transport
            .name,
      ),
      'websocket',
    );
    assert.equal(rt.connects, 1, 'one connection: polling upgraded in place, no reconnect');
    await waitText(page, '#rt-first-transport', 'polling');
    await waitText(page, '#rt-transport', 'websocket');

    // Both directions over the upgraded connection: Frappe's ping/pong, then a publish.
    await page.click('#rt-ping');
    await waitText(page, '#rt-pongs', '1');
    await stack.publish({ event: 'msgprint', message: 'over websocket', namespace: stack.siteName, room: `user:${dan.user}` });
    await waitText(page, '#msgprint-message', 'over websocket');
    t.diagnostic(`screenshot: ${await screenshot(page, `${topology}-polling-upgraded-to-websocket`)}`);

    // nginx's own access log: the polling requests of this Engine.IO session
    // and, once the socket closes, the 101 of the websocket upgrade.
    const engineId = rt.engineId ?? '';
    assert.notEqual(engineId, '');
    await page.close();
    const lines = await pollUntil(
      () => {
        const mine = stack.nginx.accessLogLines().filter((l) => l.includes(`sid=${engineId}`));
        return mine.some((l) => /transport=websocket\S* 101 /.test(l)) ? mine : undefined;
      },
      {
        timeoutMs: WAIT_MS,
        intervalMs: 50,
        description: () => `nginx access log lines of session ${engineId}:\n${stack.nginx.accessLogLines().join('\n')}`,
      },
    );
    assert.ok(
      lines.some((l) => /transport=polling\S* 200 /.test(l)),
      `polling requests went through nginx:\n${lines.join('\n')}`,
    );
    const upstreams = new Set(lines.map((l) => l.split(' ')[2]));
    assert.equal(upstreams.size, 1, `every request of the session reached one gateway host:\n${lines.join('\n')}`);
    assert.ok(
      stack.gateways.some((g) => upstreams.has(`127.0.0.1:${g.port}`)),
      `the upstream is a gateway: ${[...upstreams].join(', ')}`,
    );
    if (stack.topology === 'two-hosts') {
      const affinity = (await context.cookies(`${stack.origin}/socket.io/`)).find((c) => c.name === 'rtgw_affinity');
      assert.ok(affinity !== undefined, 'nginx set the routing cookie that keeps polling sessions on one host');
    }
  });

  scenario('a logged-out cookie (sid=Guest) connects as Guest and receives only website events', stackOf, async (t, pages, scope) => {
    const stack = stackOf();
    const eve = user('eve', topology);
    stack.addUser(eve, [DESK_DOCTYPE]);
    const docname = 'TODO-GUEST';
    const context = await newContext(stack.browser, scope);
    const page = await pages.open(context, eve, formPath(docname));
    await waitConnected(page);

    // Log out: the site drops the session and leaves `sid=Guest`, then shows its public page.
    await Promise.all([page.waitForURL((url) => url.pathname === '/', { timeout: WAIT_MS }), page.click('#logout')]);
    const sid = (await context.cookies(stack.origin)).find((c) => c.name === 'sid');
    assert.equal(sid?.value, 'Guest');
    const rt = await waitConnected(page);
    const socketId = rt.socketId ?? '';
    await waitText(page, '#navbar-user', 'Guest');
    await stack.frappe.waitForCall(GET_USER_INFO, (r) => r.headers.cookie === 'sid=Guest', WAIT_MS);
    await stack.waitInRooms(socketId, ['user:Guest', 'website']);
    // The page asked for the doctype, the doc and presence on the doc; the
    // gateway checked the doctype and the doc for Guest (doc_subscribe and
    // doc_open share one answer) and Frappe refused both.
    const guestCheck = (name: string) =>
      stack.frappe.waitForCall(
        'has_permission',
        (r) => r.headers.cookie === 'sid=Guest' && r.query['doctype'] === DESK_DOCTYPE && r.query['name'] === name,
        WAIT_MS,
      );
    await Promise.all([guestCheck(''), guestCheck(docname)]);
    for (const room of [
      'all',
      `user:${eve.user}`,
      `doc:${DESK_DOCTYPE}/${docname}`,
      `doctype:${DESK_DOCTYPE}`,
      `open_doc:${DESK_DOCTYPE}/${docname}`,
    ]) {
      assert.equal(await stack.inRoom(socketId, room), false, `Guest must not be in ${room}`);
    }

    // Everything a logged-in user would get, then the website event last: one
    // leader publishes them in this order through one Redis, so once the last
    // one is on the page, any of the others that was going to arrive has.
    const ns = stack.siteName;
    await stack.publish({
      event: 'doc_update',
      message: { doctype: DESK_DOCTYPE, name: docname, modified: 'x' },
      namespace: ns,
      room: `doc:${DESK_DOCTYPE}/${docname}`,
    });
    await stack.publish({
      event: 'list_update',
      message: { doctype: DESK_DOCTYPE, name: docname },
      namespace: ns,
      room: `doctype:${DESK_DOCTYPE}`,
    });
    await stack.publish({ event: 'msgprint', message: 'for eve only', namespace: ns, room: `user:${eve.user}` });
    await stack.publish({ event: 'production_update', message: { line: 'L2' }, namespace: ns, room: 'all' });
    await stack.publish({ event: 'website_notice', message: { text: 'Maintenance at 22:00' }, namespace: ns, room: 'website' });
    await waitEvent(page, 'website_notice', 'Maintenance at 22:00');

    const received = await rtSnapshot(page);
    // `rtg_session` is the gateway's own session marker (sent once per connection), not a published event.
    assert.deepEqual(
      received.events.map((e) => e.event).filter((e) => e !== 'rtg_session'),
      ['website_notice'],
      'a Guest page receives the website event and nothing else',
    );
    await waitText(page, '#doc-modified', 'never');
    assert.equal(await page.locator('#msgprint').isVisible(), false);
    assert.equal(await page.locator('#list-updates li').count(), 0);
    t.diagnostic(`screenshot: ${await screenshot(page, `${topology}-guest-after-logout`)}`);
  });
}

/**
 * Two hosts only: restart the host a page is on; the page comes back on the
 * other host with its session (rooms) recovered.
 */
export function restartScenarios(stackOf: () => BrowserStack): void {
  const topology: Topology = 'two-hosts';
  const docname = 'TODO-RESTART';
  const shared: { page?: Page; socketId?: string } = {};
  // The page outlives the first scenario so the second can look at its subscriptions.
  const pageScope = new Scope();
  after(() => pageScope.close());

  scenario(
    'after its gateway host restarts (SIGTERM, start again) the page reconnects through nginx to the other host and receives user-room and `all` events',
    stackOf,
    async (t, pages) => {
      const stack = stackOf();
      const fay = user('fay', topology);
      stack.addUser(fay, [DESK_DOCTYPE]);
      const context = await newContext(stack.browser, pageScope);
      const page = await pages.open(context, fay, formPath(docname));
      const first = await waitTransport(page, 'websocket');
      const { host } = await stack.waitInRooms(first.socketId ?? '', deskRooms(fay, docname));
      const other = 1 - host;
      t.diagnostic(`page socket ${String(first.socketId)} on host ${host}; stopping that host`);
      t.diagnostic(`screenshot: ${await screenshot(page, `${topology}-before-host-restart`)}`);

      await stack.stopHost(host);
      // The drain closed the connection; the client reconnects by itself and
      // nginx sends it to the surviving host (proxy_next_upstream), polling then websocket again.
      const second = await waitConnected(page, 2, RECONNECT_TIMEOUT_MS);
      await waitTransport(page, 'websocket', RECONNECT_TIMEOUT_MS);
      // Session recovery: the client asked for its session back and got it,
      // socket id included, on the other host.
      assert.equal(second.socketId, first.socketId, 'the session was recovered on the other host');
      assert.equal(second.openTransports[1], 'polling');
      const socketId = second.socketId ?? '';
      assert.equal((await stack.waitInRooms(socketId, [`user:${fay.user}`, 'website', 'all'])).host, other);

      const restarted = await stack.startHost(host);
      t.diagnostic(`host ${host} is back on port ${restarted.port}`);

      // Published after the restart: automatic rooms are rejoined on every connect.
      await stack.publish({ event: 'msgprint', message: 'after the restart', namespace: stack.siteName, room: `user:${fay.user}` });
      await waitText(page, '#msgprint-message', 'after the restart');
      await stack.publish({ event: 'version-update', message: { after: 'restart' }, namespace: stack.siteName, room: 'all' });
      await waitEvent(page, 'version-update', 'restart');
      const now = await rtSnapshot(page);
      assert.equal(now.connected, true);
      assert.equal(now.connects, 2, 'no further reconnects once the host is back');
      assert.equal(now.reconnectFailed, false);
      await waitText(page, '#rt-status', 'connected');
      t.diagnostic(`screenshot: ${await screenshot(page, `${topology}-after-host-restart`)}`);
      shared.page = page;
      shared.socketId = socketId;
    },
  );

  scenario('doc/doctype subscriptions survive a host restart without the page re-subscribing (session recovery)', stackOf, async () => {
    // Frappe v15+ clients emit doc_subscribe/doctype_subscribe once per form
    // load and never again after a reconnect (the page script does not
    // either): the gateway restored the rooms on the other host.
    const stack = stackOf();
    const { page, socketId } = shared;
    assert.ok(page !== undefined && socketId !== undefined, 'the restart scenario ran');
    assert.equal(await stack.inRoom(socketId, `doc:${DESK_DOCTYPE}/${docname}`), true, 'doc room after reconnect');
    assert.equal(await stack.inRoom(socketId, `doctype:${DESK_DOCTYPE}`), true, 'doctype room after reconnect');
    await stack.publish({
      event: 'doc_update',
      message: { doctype: DESK_DOCTYPE, name: docname, modified: 'after restart' },
      namespace: stack.siteName,
      room: `doc:${DESK_DOCTYPE}/${docname}`,
    });
    await waitText(page, '#doc-modified', 'after restart', 3_000);
  });
}
