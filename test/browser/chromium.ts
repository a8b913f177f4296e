/**
 * Debian's Chromium (/usr/bin/chromium) driven by playwright-core: no
 * downloaded browser. Headless, as root (so --no-sandbox), on a machine
 * without internet (so everything that phones home is off, or Chromium
 * floods refused connections). Site host names are mapped to 127.0.0.1 with
 * --host-resolver-rules, so the page origin is http://<site>:<nginx port>
 * and nginx sees the site name in Host.
 */
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';
import type { Scope } from '../harness/scope';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
  '--no-default-browser-check',
  '--metrics-recording-only',
] as const;

export class BrowserHarnessError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'BrowserHarnessError';
    this.code = code;
  }
}

export interface LaunchChromiumOptions {
  scope?: Scope;
  /** Host names resolved to 127.0.0.1 (e.g. the site names). */
  hosts: readonly string[];
}

/**
 * One browser; tests open a fresh context (own cookie jar, like a separate
 * browser profile) per user. Playwright gives every launch a fresh temporary
 * --user-data-dir of its own and deletes it on close (it refuses the flag in
 * `args`: that is what launchPersistentContext is for).
 */
export async function launchChromium(options: LaunchChromiumOptions): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new BrowserHarnessError(
      'HARNESS_ERR_CHROMIUM_MISSING',
      `${CHROMIUM_PATH} not found: run scripts/ensure-browser-deps.sh (apt-get install -y chromium)`,
    );
  }
  const rules = options.hosts.map((h) => `MAP ${h} 127.0.0.1`).join(', ');
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    chromiumSandbox: false,
    args: [...CHROMIUM_FLAGS, `--host-resolver-rules=${rules}`],
    timeout: 30_000,
  });
  options.scope?.add(() => browser.close());
  return browser;
}
