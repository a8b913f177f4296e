/**
 * Reading k6 `__ENV` into typed settings. Pure (no k6 imports) so that the
 * unit tests can exercise it; scripts pass `__ENV` in.
 *
 * Every problem is collected and reported at once, in one exception, so a
 * misconfigured run fails in the init context before any VU starts.
 */

export type Env = Readonly<Record<string, string | undefined>>;

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super(`invalid k6 configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
const DURATION_WHOLE = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/;
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60000, h: 3600000 };

/**
 * Parses a k6 duration (`90s`, `5m`, `1h30m`, `250ms`; a bare number means
 * seconds) into milliseconds. Returns undefined when it is not one.
 */
export function parseDurationMs(text: string): number | undefined {
  const trimmed = text.trim();
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  if (!DURATION_WHOLE.test(trimmed)) return undefined;
  let total = 0;
  DURATION_PART.lastIndex = 0;
  let match = DURATION_PART.exec(trimmed);
  while (match !== null) {
    total += Number(match[1]) * (UNIT_MS[match[2] ?? 's'] ?? 1000);
    match = DURATION_PART.exec(trimmed);
  }
  return total;
}

/** Milliseconds as a k6 duration string (k6 options want strings). */
export function formatDuration(ms: number): string {
  if (ms % 3600000 === 0 && ms > 0) return `${ms / 3600000}h`;
  if (ms % 60000 === 0 && ms > 0) return `${ms / 60000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${Math.round(ms)}ms`;
}

/** Typed reads of the environment that remember every problem. */
export class EnvReader {
  private readonly env: Env;
  private readonly problems: string[] = [];

  constructor(env: Env) {
    this.env = env;
  }

  /** Raw value, undefined when unset or empty. */
  raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback;
  }

  optionalString(name: string): string | undefined {
    return this.raw(name);
  }

  int(name: string, fallback: number, min = 0): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) {
      this.problems.push(`${name} must be an integer >= ${min} (got ${JSON.stringify(value)})`);
      return fallback;
    }
    return n;
  }

  number(name: string, fallback: number, min = 0, max = Number.POSITIVE_INFINITY): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max) {
      this.problems.push(`${name} must be a number in [${min}, ${max}] (got ${JSON.stringify(value)})`);
      return fallback;
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const lower = value.toLowerCase();
    if (['1', 'true', 'yes', 'on'].indexOf(lower) !== -1) return true;
    if (['0', 'false', 'no', 'off'].indexOf(lower) !== -1) return false;
    this.problems.push(`${name} must be true or false (got ${JSON.stringify(value)})`);
    return fallback;
  }

  /** A k6 duration, returned in milliseconds. */
  durationMs(name: string, fallback: string): number {
    const value = this.raw(name) ?? fallback;
    const ms = parseDurationMs(value);
    if (ms === undefined) {
      this.problems.push(`${name} must be a duration such as 30s, 5m or 1h30m (got ${JSON.stringify(value)})`);
      return parseDurationMs(fallback) ?? 0;
    }
    return ms;
  }

  /** Whether the variable is present at all, even empty. */
  isSet(name: string): boolean {
    return this.env[name] !== undefined;
  }

  list(name: string): string[] {
    const value = this.raw(name);
    if (value === undefined) return [];
    return value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== '');
  }

  problem(message: string): void {
    this.problems.push(message);
  }

  /** Throws a ConfigError listing every problem seen so far. */
  done(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}

// ---------------------------------------------------------------------------
// The gateway under test

export interface ParsedUrl {
  scheme: string;
  host: string;
  hostname: string;
  path: string;
}

const URL_PATTERN = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]+)([^?#]*)/;

/** Minimal URL split (k6 has no WHATWG URL global). */
export function parseUrl(url: string): ParsedUrl | undefined {
  const match = URL_PATTERN.exec(url.trim());
  if (match === null) return undefined;
  const scheme = (match[1] ?? '').toLowerCase();
  const host = match[2] ?? '';
  const hostname = host.startsWith('[') ? host.substring(0, host.indexOf(']') + 1) : (host.split(':')[0] ?? '');
  return { scheme, host, hostname: hostname.toLowerCase(), path: (match[3] ?? '').replace(/\/+$/, '') };
}

export interface Credentials {
  /** Frappe session cookie value, sent as `Cookie: sid=<sid>`. */
  sid?: string;
  /** Full `Authorization` header value, e.g. `token <api_key>:<api_secret>`. */
  authorization?: string;
}

export interface GatewayTarget {
  /** `http(s)://host[:port][/prefix]` of the deployment, no trailing slash. */
  baseUrl: string;
  /** Websocket-only Engine.IO URL. */
  socketUrl: string;
  /** Value of the `Origin` handshake header. */
  origin: string;
  /** Frappe site name; the namespace is `/<site>`. */
  site: string;
  namespace: string;
  /** Whether to send `X-Frappe-Site-Name: <site>`. */
  sendSiteHeader: boolean;
  /** One credential per VU, picked round-robin. */
  credentials: Credentials[];
  connectTimeoutMs: number;
}

/**
 * Reads BASE_URL, SITE, ORIGIN, SID / SIDS, AUTHORIZATION, SITE_HEADER and
 * CONNECT_TIMEOUT.
 */
export function readGatewayTarget(r: EnvReader): GatewayTarget {
  const baseUrl = r.string('BASE_URL', 'http://127.0.0.1:9000').replace(/\/+$/, '');
  const parsed = parseUrl(baseUrl);
  if (parsed === undefined || ['http', 'https', 'ws', 'wss'].indexOf(parsed.scheme) === -1) {
    r.problem(`BASE_URL must be an http(s):// or ws(s):// URL (got ${JSON.stringify(baseUrl)})`);
  }
  const scheme = parsed?.scheme ?? 'http';
  const secure = scheme === 'https' || scheme === 'wss';
  const host = parsed?.host ?? '127.0.0.1:9000';
  const hostname = parsed?.hostname ?? '127.0.0.1';
  const path = parsed?.path ?? '';

  const site = r.string('SITE', hostname);
  if (site.indexOf(',') !== -1 || site.indexOf('/') !== -1) {
    r.problem(`SITE must be a bare site name such as site1.local (got ${JSON.stringify(site)})`);
  }
  const origin = r.string('ORIGIN', `${secure ? 'https' : 'http'}://${host}`);
  // Frappe resolves the site from X-Frappe-Site-Name first; send it whenever
  // the site is not simply the host name the request goes to.
  const sendSiteHeader = r.bool('SITE_HEADER', site !== hostname);

  const credentials: Credentials[] = [];
  const authorization = r.optionalString('AUTHORIZATION');
  for (const sid of r.list('SIDS')) credentials.push({ sid });
  if (authorization !== undefined) credentials.push({ authorization });
  const sid = r.optionalString('SID');
  if (sid !== undefined) credentials.push({ sid });
  // Frappe answers an unknown sid as Guest; Guest is still a valid connection
  // (rooms `website` and `user:Guest`), so the scripts run with no credential.
  if (credentials.length === 0) credentials.push({ sid: 'Guest' });

  return {
    baseUrl,
    socketUrl: `${secure ? 'wss' : 'ws'}://${host}${path}/socket.io/?EIO=4&transport=websocket`,
    origin,
    site,
    namespace: `/${site}`,
    sendSiteHeader,
    credentials,
    connectTimeoutMs: r.durationMs('CONNECT_TIMEOUT', '10s'),
  };
}

/** Credential for a VU (1-based, as k6's `__VU`). */
export function credentialsFor(target: GatewayTarget, vu: number): Credentials {
  const list = target.credentials;
  const index = (((vu - 1) % list.length) + list.length) % list.length;
  return list[index] ?? {};
}

/** The handshake headers Frappe's realtime server looks at. */
export function handshakeHeaders(target: GatewayTarget, credentials: Credentials): Record<string, string> {
  const headers: Record<string, string> = { Origin: target.origin };
  if (credentials.authorization !== undefined) headers['Authorization'] = credentials.authorization;
  if (credentials.sid !== undefined) headers['Cookie'] = `sid=${credentials.sid}`;
  if (target.sendSiteHeader) headers['X-Frappe-Site-Name'] = target.site;
  return headers;
}

// ---------------------------------------------------------------------------
// Subscriptions a simulated Frappe page makes

export interface Subscriptions {
  /** `doctype_subscribe` (list view). */
  doctypes: string[];
  /** `doc_subscribe` (form view), as `[doctype, name]`. */
  docs: Array<[string, string]>;
  /** Also `doc_open` each doc (presence / doc_viewers). */
  openDocs: boolean;
  /** `task_subscribe` a per-VU task id (no permission check). */
  task: boolean;
}

/**
 * DOCTYPES=ToDo,Note  DOCS=ToDo/abc,Note/xyz  OPEN_DOCS=true  TASK_SUBSCRIBE=true
 */
export function readSubscriptions(r: EnvReader): Subscriptions {
  // Present but empty (`-e DOCTYPES=`) means none.
  const doctypes = r.isSet('DOCTYPES') ? r.list('DOCTYPES') : ['ToDo'];
  const docs: Array<[string, string]> = [];
  for (const item of r.list('DOCS')) {
    const slash = item.indexOf('/');
    if (slash <= 0 || slash === item.length - 1) {
      r.problem(`DOCS entries must look like Doctype/name (got ${JSON.stringify(item)})`);
      continue;
    }
    docs.push([item.substring(0, slash), item.substring(slash + 1)]);
  }
  return {
    doctypes,
    docs,
    openDocs: r.bool('OPEN_DOCS', false),
    task: r.bool('TASK_SUBSCRIBE', true),
  };
}

/** Threshold knobs shared by the scenarios. */
export interface ThresholdSettings {
  connectP95Ms: number;
  connectP99Ms: number;
  maxConnectErrorRate: number;
  minChecksRate: number;
}

export function readThresholdSettings(r: EnvReader, defaults: ThresholdSettings): ThresholdSettings {
  return {
    connectP95Ms: r.number('CONNECT_P95_MS', defaults.connectP95Ms),
    connectP99Ms: r.number('CONNECT_P99_MS', defaults.connectP99Ms),
    maxConnectErrorRate: r.number('MAX_CONNECT_ERROR_RATE', defaults.maxConnectErrorRate, 0, 1),
    minChecksRate: r.number('MIN_CHECKS_RATE', defaults.minChecksRate, 0, 1),
  };
}

// ---------------------------------------------------------------------------
// Publishing through the ops server

export interface PublishTarget {
  /** `POST` endpoint of the gateway's publish API. */
  url: string;
  /** Bearer token (`GATEWAY_PUBLISH_TOKEN` of the gateway); loopback needs none. */
  token?: string;
}

/** OPS_URL (default: the BASE_URL host on port 9090) and PUBLISH_TOKEN. */
export function readPublishTarget(r: EnvReader, target: GatewayTarget): PublishTarget {
  const parsed = parseUrl(target.baseUrl);
  const secure = parsed !== undefined && (parsed.scheme === 'https' || parsed.scheme === 'wss');
  const fallback = `${secure ? 'https' : 'http'}://${parsed?.hostname ?? '127.0.0.1'}:9090`;
  const opsUrl = r.string('OPS_URL', fallback).replace(/\/+$/, '');
  const opsParsed = parseUrl(opsUrl);
  if (opsParsed === undefined || (opsParsed.scheme !== 'http' && opsParsed.scheme !== 'https')) {
    r.problem(`OPS_URL must be an http(s):// URL (got ${JSON.stringify(opsUrl)})`);
  }
  const token = r.optionalString('PUBLISH_TOKEN');
  const publish: PublishTarget = { url: `${opsUrl}/api/v1/publish` };
  if (token !== undefined) publish.token = token;
  return publish;
}

/**
 * The client event that puts a Frappe client into `room`, if any: rooms such
 * as `website`, `all` and `user:<user>` are joined on connect, app rooms
 * (`sensor:12`) only through app handlers.
 */
export function subscriptionForRoom(room: string): { event: string; args: string[] } | undefined {
  const colon = room.indexOf(':');
  if (colon === -1) return undefined;
  const kind = room.substring(0, colon);
  const rest = room.substring(colon + 1);
  const slash = rest.indexOf('/');
  switch (kind) {
    case 'doctype':
      return { event: 'doctype_subscribe', args: [rest] };
    case 'doc':
      return slash > 0 ? { event: 'doc_subscribe', args: [rest.substring(0, slash), rest.substring(slash + 1)] } : undefined;
    case 'open_doc':
      return slash > 0 ? { event: 'doc_open', args: [rest.substring(0, slash), rest.substring(slash + 1)] } : undefined;
    case 'task_progress':
      return { event: 'task_subscribe', args: [rest] };
    default:
      return undefined;
  }
}
