/**
 * Driving and reading the fake site's pages. Everything waits on the page
 * (page.waitForFunction, locator.waitFor) with a timeout; nothing sleeps.
 *
 * Functions passed to page.evaluate/waitForFunction run in the browser and are
 * shipped as source text: they must not declare inner named functions or
 * const arrow functions (tsx wraps those in a `__name()` helper that does not
 * exist in the page), and reach the page's globals through `globalThis`.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { repoRoot } from '../harness/paths';
import type { Scope } from '../harness/scope';
import type { SiteUser } from './frappe-site';

export const ARTIFACTS_DIR = path.join(repoRoot, 'artifacts', 'browser');
export const WAIT_MS = 10_000;

/** What desk-realtime.js records in `window.rt` (see that file). */
export interface RtSnapshot {
  connected: boolean;
  socketId: string | null;
  engineId: string | null;
  transport: string | null;
  connects: number;
  disconnects: string[];
  connectErrors: string[];
  firstTransport: string | null;
  openTransports: string[];
  upgradedTo: string | null;
  socketIds: string[];
  events: { event: string; message: unknown }[];
  reconnectFailed: boolean;
}

/** The page globals, as far as the tests read them. */
interface PageGlobals {
  rt?: Omit<RtSnapshot, 'connected' | 'socketId' | 'engineId' | 'transport'> & {
    socket: { id?: string; connected: boolean; io: { engine?: { id?: string; transport?: { name: string } } } };
  };
  document: {
    querySelector(selector: string): { textContent: string | null; hidden?: boolean } | null;
    querySelectorAll(selector: string): ArrayLike<{ getAttribute(name: string): string | null }>;
  };
}

export function screenshotPath(name: string): string {
  mkdirSync(ARTIFACTS_DIR, { recursive: true });
  return path.join(ARTIFACTS_DIR, `${name.replace(/[^a-zA-Z0-9._-]+/g, '-')}.png`);
}

export async function screenshot(page: Page, name: string): Promise<string> {
  const file = screenshotPath(name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** A fresh browser context (own cookie jar: another user on another machine), closed by the scope. */
export async function newContext(browser: Browser, scope: Scope): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
  scope.add(() => context.close());
  return context;
}

/**
 * Opens `path` on the site; when the site redirects to its login page, logs in
 * as `user` through the form and follows redirect-to back to `path`.
 */
export async function openAs(context: BrowserContext, origin: string, user: SiteUser, pathname: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(`${origin}${pathname}`);
  if (new URL(page.url()).pathname === '/login') {
    await page.fill('#login-email', user.user);
    await page.fill('#login-password', user.password);
    await Promise.all([
      page.waitForURL((url) => url.pathname === pathname.split('?')[0], { timeout: WAIT_MS }),
      page.click('#login-submit'),
    ]);
  }
  return page;
}

export async function rtSnapshot(page: Page): Promise<RtSnapshot> {
  return page.evaluate(() => {
    const rt = (globalThis as unknown as PageGlobals).rt;
    if (rt === undefined) throw new Error('window.rt is missing: the realtime script did not run');
    const engine = rt.socket.io.engine;
    return {
      connected: rt.socket.connected,
      socketId: rt.socket.id ?? null,
      engineId: engine?.id ?? null,
      transport: engine?.transport?.name ?? null,
      connects: rt.connects,
      disconnects: rt.disconnects.slice(),
      connectErrors: rt.connectErrors.slice(),
      firstTransport: rt.firstTransport,
      openTransports: rt.openTransports.slice(),
      upgradedTo: rt.upgradedTo,
      socketIds: rt.socketIds.slice(),
      events: rt.events.map((e) => ({ event: e.event, message: e.message })),
      reconnectFailed: rt.reconnectFailed,
    };
  });
}

async function explain(page: Page, what: string, err: unknown): Promise<Error> {
  let state = '';
  try {
    const s = await rtSnapshot(page);
    state = ` | page: connected=${String(s.connected)} connects=${s.connects} transport=${String(s.transport)} disconnects=${JSON.stringify(s.disconnects)} connectErrors=${JSON.stringify(s.connectErrors)} events=${JSON.stringify(s.events.map((e) => e.event))}`;
  } catch {
    // the page may be gone
  }
  return new Error(`${what}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}${state}`);
}

/** Resolves when the page has connected at least `connects` times and is connected now. */
export async function waitConnected(page: Page, connects = 1, timeoutMs = WAIT_MS): Promise<RtSnapshot> {
  try {
    await page.waitForFunction(
      (n) => {
        const rt = (globalThis as unknown as PageGlobals).rt;
        return rt !== undefined && rt.connects >= n && rt.socket.connected;
      },
      connects,
      { timeout: timeoutMs },
    );
  } catch (err) {
    throw await explain(page, `waiting for connect #${connects}`, err);
  }
  return rtSnapshot(page);
}

/** Resolves when the current Engine.IO connection runs on `transport` (e.g. after the upgrade). */
export async function waitTransport(page: Page, transport: string, timeoutMs = WAIT_MS): Promise<RtSnapshot> {
  try {
    await page.waitForFunction(
      (name) => {
        const rt = (globalThis as unknown as PageGlobals).rt;
        return rt !== undefined && rt.socket.connected && rt.socket.io.engine?.transport?.name === name;
      },
      transport,
      { timeout: timeoutMs },
    );
  } catch (err) {
    throw await explain(page, `waiting for transport ${transport}`, err);
  }
  return rtSnapshot(page);
}

/** Resolves when the element's text is exactly `text`. */
export async function waitText(page: Page, selector: string, text: string, timeoutMs = WAIT_MS): Promise<void> {
  try {
    await page.waitForFunction(
      ([sel, expected]) => (globalThis as unknown as PageGlobals).document.querySelector(sel)?.textContent === expected,
      [selector, text] as const,
      { timeout: timeoutMs },
    );
  } catch (err) {
    const actual = await page
      .locator(selector)
      .first()
      .textContent({ timeout: 500 })
      .catch(() => '(missing)');
    throw await explain(page, `waiting for ${selector} to read ${JSON.stringify(text)} (it reads ${JSON.stringify(actual)})`, err);
  }
}

/** Resolves when an element matching `selector` is attached. */
export async function waitElement(page: Page, selector: string, timeoutMs = WAIT_MS): Promise<void> {
  try {
    await page.locator(selector).first().waitFor({ state: 'attached', timeout: timeoutMs });
  } catch (err) {
    throw await explain(page, `waiting for ${selector}`, err);
  }
}

/** Resolves when the page has received `event` (optionally with a message containing `contains` in its JSON). */
export async function waitEvent(page: Page, event: string, contains?: string, timeoutMs = WAIT_MS): Promise<void> {
  try {
    await page.waitForFunction(
      ([name, needle]) =>
        ((globalThis as unknown as PageGlobals).rt?.events ?? []).some(
          (e) => e.event === name && (needle === '' || JSON.stringify(e.message).includes(needle)),
        ),
      [event, contains ?? ''] as const,
      { timeout: timeoutMs },
    );
  } catch (err) {
    throw await explain(page, `waiting for event ${event}${contains === undefined ? '' : ` containing ${contains}`}`, err);
  }
}

/** The `data-*` attribute values of the elements matching `selector`, in document order. */
export async function dataValues(page: Page, selector: string, attribute: string): Promise<string[]> {
  return page.evaluate(
    ([sel, attr]) =>
      Array.from((globalThis as unknown as PageGlobals).document.querySelectorAll(sel)).map((el) => el.getAttribute(attr) ?? ''),
    [selector, attribute] as const,
  );
}

/** Resolves when the `data-<attribute>` values under `selector` are exactly `expected`, in order. */
export async function waitDataValues(
  page: Page,
  selector: string,
  attribute: string,
  expected: readonly string[],
  timeoutMs = WAIT_MS,
): Promise<void> {
  try {
    await page.waitForFunction(
      ([sel, attr, want]) =>
        JSON.stringify(
          Array.from((globalThis as unknown as PageGlobals).document.querySelectorAll(sel)).map((el) => el.getAttribute(attr) ?? ''),
        ) === want,
      [selector, attribute, JSON.stringify(expected)] as const,
      { timeout: timeoutMs },
    );
  } catch (err) {
    const actual = await dataValues(page, selector, attribute).catch(() => ['(page gone)']);
    throw await explain(
      page,
      `waiting for ${selector} [${attribute}] to be ${JSON.stringify(expected)} (it is ${JSON.stringify(actual)})`,
      err,
    );
  }
}
