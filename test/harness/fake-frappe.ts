/**
 * A fake Frappe web server answering the endpoints the gateway calls
 * (docs/protocol.md section 6): get_user_info, has_permission (v16) and
 * can_subscribe_doc / can_subscribe_doctype (v15). Records every request so
 * tests can assert which credential and headers were forwarded.
 */
import http from 'node:http';
import { EventEmitter } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Scope } from './scope';
import { withTimeout } from './wait';

export interface FrappeUser {
  user: string;
  user_type: string;
  /** Default: the server's `installedApps` (Frappe answers the site's apps for every user). */
  installed_apps?: string[];
}

export type FailureMode = 'http500' | 'notjson' | 'hang';

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  /** Lower-cased header names, as node:http reports them. */
  headers: http.IncomingHttpHeaders;
  /** Raw request body (POST). */
  body: string;
  /** Date.now() at arrival. */
  at: number;
}

export const METHOD_PREFIX = '/api/method/';
export const GET_USER_INFO = '/api/method/frappe.realtime.get_user_info';
export const HAS_PERMISSION = '/api/method/frappe.realtime.has_permission';
export const CAN_SUBSCRIBE_DOC = '/api/method/frappe.realtime.can_subscribe_doc';
export const CAN_SUBSCRIBE_DOCTYPE = '/api/method/frappe.realtime.can_subscribe_doctype';

const GUEST = 'Guest';
/** Matches any user in allow()/deny(); rules for a named user take precedence. */
export const ANY_USER = '*';

export interface FakeFrappe {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Every request in arrival order. */
  readonly requests: RecordedRequest[];
  /** Delay before every response, settable at runtime. */
  latencyMs: number;
  /** A browser session: `Cookie: sid=<sid>` identifies `user`. */
  addSession(sid: string, user: FrappeUser): void;
  removeSession(sid: string): void;
  /** Token auth: an exact `Authorization` header value identifies `user`. */
  addToken(authorization: string, user: FrappeUser): void;
  removeToken(authorization: string): void;
  /**
   * Makes calls carrying this credential (sid or Authorization value) fail.
   * `endpoint` is a path suffix ('get_user_info' by default, '*' for every
   * endpoint). `null` clears it.
   */
  setFailure(credential: string, mode: FailureMode | null, endpoint?: string): void;
  /** Permission for `user` ('*' = anyone) on a doctype (name omitted: the doctype and every doc of it) or one doc. */
  allow(user: string, doctype: string, name?: string): void;
  deny(user: string, doctype: string, name?: string): void;
  /** Forgets every allow/deny rule. */
  resetPermissions(): void;
  /** Recorded requests whose path ends with `suffix` (e.g. 'get_user_info'). */
  callsTo(suffix: string): RecordedRequest[];
  /** Resolves with the first request to `suffix` matching `predicate`, including ones already recorded. */
  waitForCall(suffix: string, predicate?: (req: RecordedRequest) => boolean, timeoutMs?: number): Promise<RecordedRequest>;
  clearRequests(): void;
  /** Idempotent: destroys open (also hanging) connections and stops listening. */
  close(): Promise<void>;
}

export interface StartFakeFrappeOptions {
  scope?: Scope;
  latencyMs?: number;
  /** What `installed_apps` holds for Guest and for users registered without their own list. Default []. */
  installedApps?: string[];
}

interface Resolved {
  user: string;
  /** The credential that identified the caller (for failure lookup). */
  credential: string | undefined;
  info: FrappeUser | undefined;
  /** An Authorization header that matched no token: Frappe raises AuthenticationError (401). */
  badAuthorization: boolean;
}

function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (header === undefined) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0) continue;
    const key = part.slice(0, eq).trim();
    const raw = part.slice(eq + 1).trim();
    let value = raw;
    try {
      value = decodeURIComponent(raw);
    } catch {
      // keep the raw value
    }
    if (!out.has(key)) out.set(key, value);
  }
  return out;
}

function frappeError(excType: string, message: string): string {
  return JSON.stringify({
    exception: `frappe.exceptions.${excType}: ${message}`,
    exc_type: excType,
    _server_messages: JSON.stringify([JSON.stringify({ message, title: 'Message', indicator: 'red' })]),
  });
}

function ruleKey(user: string, doctype: string, name: string | undefined): string {
  // JSON keeps doctype/name boundaries unambiguous whatever characters they hold.
  return JSON.stringify([user, doctype, name ?? null]);
}

export async function startFakeFrappe(options: StartFakeFrappeOptions = {}): Promise<FakeFrappe> {
  const installedApps = options.installedApps ?? [];
  const sessions = new Map<string, FrappeUser>();
  const tokens = new Map<string, FrappeUser>();
  const failures = new Map<string, { mode: FailureMode; endpoint: string }>();
  const rules = new Map<string, boolean>();
  const requests: RecordedRequest[] = [];
  const arrivals = new EventEmitter();
  const timers = new Set<NodeJS.Timeout>();
  let closing: Promise<void> | undefined;

  const resolveCaller = (headers: http.IncomingHttpHeaders): Resolved => {
    const authorization = headers.authorization;
    if (authorization !== undefined && authorization !== '') {
      const info = tokens.get(authorization);
      return { user: info?.user ?? GUEST, credential: authorization, info, badAuthorization: info === undefined };
    }
    const sid = parseCookies(headers.cookie).get('sid');
    const info = sid === undefined ? undefined : sessions.get(sid);
    return { user: info?.user ?? GUEST, credential: sid, info, badAuthorization: false };
  };

  const ruleFor = (user: string, doctype: string, name: string | undefined): boolean | undefined => {
    for (const who of [user, ANY_USER]) {
      if (name !== undefined) {
        const docRule = rules.get(ruleKey(who, doctype, name));
        if (docRule !== undefined) return docRule;
      }
      const doctypeRule = rules.get(ruleKey(who, doctype, undefined));
      if (doctypeRule !== undefined) return doctypeRule;
    }
    return undefined;
  };
  /** Most specific rule wins (user before '*', doc before doctype); default deny. */
  const permitted = (user: string, doctype: string, name: string | undefined): boolean =>
    doctype !== '' && ruleFor(user, doctype, name === '' ? undefined : name) === true;

  const send = (res: http.ServerResponse, status: number, body: string, contentType = 'application/json'): void => {
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const respond = (req: RecordedRequest, res: http.ServerResponse): void => {
    const caller = resolveCaller(req.headers);
    const failure = caller.credential === undefined ? undefined : failures.get(caller.credential);
    if (failure !== undefined && (failure.endpoint === '*' || req.path.endsWith(failure.endpoint))) {
      if (failure.mode === 'hang') return; // never answered; close() destroys the socket
      if (failure.mode === 'http500') return send(res, 500, frappeError('Exception', 'Internal Server Error (fake)'));
      return send(res, 200, '<!DOCTYPE html><html><body>Not JSON (fake)</body></html>', 'text/html; charset=utf-8');
    }
    const known = [GET_USER_INFO, HAS_PERMISSION, CAN_SUBSCRIBE_DOC, CAN_SUBSCRIBE_DOCTYPE];
    if (!known.includes(req.path) || (req.method !== 'GET' && req.method !== 'POST')) {
      return send(res, 404, frappeError('DoesNotExistError', `Not found: ${req.path}`));
    }
    if (caller.badAuthorization) {
      return send(res, 401, frappeError('AuthenticationError', 'Invalid Authorization headers'));
    }
    const q = req.query;
    const required: Record<string, string[]> = {
      [HAS_PERMISSION]: ['doctype', 'name'],
      [CAN_SUBSCRIBE_DOC]: ['doctype', 'docname'],
      [CAN_SUBSCRIBE_DOCTYPE]: ['doctype'],
    };
    const missing = (required[req.path] ?? []).filter((arg) => q[arg] === undefined);
    if (missing.length > 0) {
      // Frappe turns the Python TypeError of a missing argument into a 500.
      return send(res, 500, frappeError('TypeError', `missing required argument(s): ${missing.join(', ')}`));
    }
    const doctype = q['doctype'] ?? '';
    switch (req.path) {
      case GET_USER_INFO: {
        const info = caller.info;
        const message =
          info === undefined
            ? { user: GUEST, user_type: GUEST, installed_apps: installedApps }
            : { user: info.user, user_type: info.user_type, installed_apps: info.installed_apps ?? installedApps };
        return send(res, 200, JSON.stringify({ message }));
      }
      case HAS_PERMISSION:
        return send(res, 200, JSON.stringify({ message: permitted(caller.user, doctype, q['name']) }));
      case CAN_SUBSCRIBE_DOC:
        return permitted(caller.user, doctype, q['docname'])
          ? send(res, 200, JSON.stringify({ message: true }))
          : send(res, 403, frappeError('PermissionError', 'No permission to read this document'));
      default:
        return permitted(caller.user, doctype, undefined)
          ? send(res, 200, JSON.stringify({ message: true }))
          : send(res, 403, frappeError('PermissionError', 'No permission to read this doctype'));
    }
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake-frappe.invalid');
      const body = Buffer.concat(chunks).toString('utf8');
      const query: Record<string, string> = {};
      for (const [key, value] of url.searchParams) query[key] = value;
      // Whitelisted methods also accept their arguments as a form or JSON body.
      if (req.method === 'POST' && body !== '') {
        const type = req.headers['content-type'] ?? '';
        if (type.includes('application/json')) {
          try {
            const parsed = JSON.parse(body) as unknown;
            if (parsed !== null && typeof parsed === 'object') {
              for (const [key, value] of Object.entries(parsed)) query[key] = typeof value === 'string' ? value : JSON.stringify(value);
            }
          } catch {
            // recorded as-is; the endpoint sees only the query string
          }
        } else {
          for (const [key, value] of new URLSearchParams(body)) query[key] = value;
        }
      }
      const recorded: RecordedRequest = {
        method: req.method ?? 'GET',
        path: url.pathname,
        query,
        headers: req.headers,
        body,
        at: Date.now(),
      };
      requests.push(recorded);
      arrivals.emit('request', recorded);
      const latency = fake.latencyMs;
      if (latency > 0) {
        const timer = setTimeout(() => {
          timers.delete(timer);
          respond(recorded, res);
        }, latency);
        timers.add(timer);
      } else {
        respond(recorded, res);
      }
    });
  });
  // Hanging requests must not keep the gateway's sockets (or this server) open forever.
  server.keepAliveTimeout = 1000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  const setRule = (user: string, doctype: string, name: string | undefined, allowed: boolean): void => {
    rules.set(ruleKey(user, doctype, name), allowed);
  };

  const fake: FakeFrappe = {
    url: `http://127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    requests,
    latencyMs: options.latencyMs ?? 0,
    addSession: (sid, user) => void sessions.set(sid, user),
    removeSession: (sid) => void sessions.delete(sid),
    addToken: (authorization, user) => void tokens.set(authorization, user),
    removeToken: (authorization) => void tokens.delete(authorization),
    setFailure(credential, mode, endpoint = 'get_user_info') {
      if (mode === null) failures.delete(credential);
      else failures.set(credential, { mode, endpoint });
    },
    allow: (user, doctype, name) => setRule(user, doctype, name, true),
    deny: (user, doctype, name) => setRule(user, doctype, name, false),
    resetPermissions: () => rules.clear(),
    callsTo: (suffix) => requests.filter((r) => r.path.endsWith(suffix)),
    waitForCall(suffix, predicate = () => true, timeoutMs = 5000) {
      const matches = (r: RecordedRequest): boolean => r.path.endsWith(suffix) && predicate(r);
      const existing = requests.find(matches);
      if (existing !== undefined) return Promise.resolve(existing);
      let listener: ((r: RecordedRequest) => void) | undefined;
      const arrival = new Promise<RecordedRequest>((resolve) => {
        listener = (r) => {
          if (matches(r)) resolve(r);
        };
        arrivals.on('request', listener);
      });
      return withTimeout(arrival, timeoutMs, `a request to *${suffix}`).finally(() => {
        if (listener !== undefined) arrivals.off('request', listener);
      });
    },
    clearRequests: () => void requests.splice(0, requests.length),
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer);
        timers.clear();
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
  options.scope?.add(fake);
  return fake;
}
