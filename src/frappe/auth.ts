import type { IncomingHttpHeaders } from 'node:http';
import { isBackendOutage, type Credential, type FrappeBackend, type UserInfo } from './backend';
import { GatewayError, errorMessage } from '../shared/errors';
import { originAllowed } from '../config/origins';

/** CONNECT_ERROR messages of docs/protocol.md section 6, verbatim. */
export const AUTH_ERRORS = {
  invalidNamespace: 'Invalid namespace',
  invalidOrigin: 'Invalid origin',
  noAuth: 'No authentication method used. Use cookie or authorization header.',
  unauthorized: (reason: string) => `Unauthorized: ${reason}`,
} as const;

/** DNS case folding: ASCII letters only (docs/protocol.md section 6.1). */
export const foldCase = (name: string): string => name.replace(/[A-Z]+/g, (m) => m.toLowerCase());

/**
 * Frappe's get_hostname: the host part of a URL or Host header, port removed,
 * case-folded for comparison. Bracketed IPv6 literals keep their address.
 */
export function hostnameOf(value: string | undefined): string | undefined {
  if (!value) return undefined;
  let v = value.trim();
  const scheme = v.indexOf('://');
  if (scheme !== -1) v = v.slice(scheme + 3).split('/')[0] ?? '';
  if (v.startsWith('[')) {
    const end = v.indexOf(']');
    return end === -1 ? v : v.slice(1, end);
  }
  const colon = v.indexOf(':');
  return foldCase(colon === -1 ? v : v.slice(0, colon));
}

const first = (h: string | string[] | undefined): string | undefined => (Array.isArray(h) ? h[0] : h);

/** Site resolution, in Frappe's order (docs/protocol.md section 6.1). */
export function resolveSite(headers: IncomingHttpHeaders, defaultSite: string | null): string | undefined {
  const explicit = first(headers['x-frappe-site-name']);
  if (explicit) return hostnameOf(explicit);
  const host = hostnameOf(first(headers.host));
  if (defaultSite && (host === 'localhost' || host === '127.0.0.1')) return defaultSite;
  const origin = first(headers.origin);
  if (origin) return hostnameOf(origin);
  return host;
}

export function parseSidCookie(cookieHeader: string | undefined): string | undefined {
  if (!cookieHeader) return undefined;
  for (const part of cookieHeader.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    if (part.slice(0, eq).trim() === 'sid') {
      let v = part.slice(eq + 1).trim();
      if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
      try {
        v = decodeURIComponent(v);
      } catch {
        // keep the raw value: Frappe's cookie parser does the same on bad escapes
      }
      return v === '' ? undefined : v;
    }
  }
  return undefined;
}

export interface Handshake {
  readonly namespace: string;
  readonly headers: IncomingHttpHeaders;
}

export interface AuthOptions {
  readonly defaultSite: string | null;
  readonly allowedOrigins: readonly string[];
}

export type AuthOutcome =
  | {
      readonly ok: true;
      readonly site: string;
      readonly credential: Credential;
      readonly origin: string | undefined;
      readonly info: UserInfo;
      readonly cached: boolean;
    }
  | { readonly ok: false; readonly reason: 'namespace' | 'origin' | 'no_auth'; readonly message: string }
  | {
      readonly ok: false;
      readonly reason: 'backend';
      readonly message: string;
      /** The backend was unavailable (timeout, unreachable, 5xx, circuit open, queue full), not refusing. */
      readonly retryable: boolean;
    };

/** The connect checks of docs/protocol.md section 6, in order; pure except for the backend call. */
export async function authenticate(hs: Handshake, opts: AuthOptions, backend: FrappeBackend): Promise<AuthOutcome> {
  const resolved = resolveSite(hs.headers, opts.defaultSite);
  // Host names are case-insensitive (nginx's $host arrives lowercased) while
  // the desk connects to the site folder's spelling: compare folded, then keep
  // the namespace's spelling, which is what the backend and room delivery use.
  const site = hs.namespace.slice(1);
  if (!resolved || site === '' || foldCase(site) !== foldCase(resolved)) {
    return { ok: false, reason: 'namespace', message: AUTH_ERRORS.invalidNamespace };
  }
  const origin = first(hs.headers.origin);
  const originHost = hostnameOf(origin);
  const host = hostnameOf(first(hs.headers.host));
  if (originHost === undefined || (originHost !== host && !originAllowed(opts.allowedOrigins, origin, originHost))) {
    return { ok: false, reason: 'origin', message: AUTH_ERRORS.invalidOrigin };
  }
  const authorization = first(hs.headers.authorization);
  const sid = parseSidCookie(first(hs.headers.cookie));
  let credential: Credential;
  if (authorization) credential = { kind: 'authorization', value: authorization };
  else if (sid) credential = { kind: 'sid', value: sid };
  else return { ok: false, reason: 'no_auth', message: AUTH_ERRORS.noAuth };
  try {
    const { info, cached } = await backend.getUserInfo({ site, credential, origin });
    return { ok: true, site, credential, origin, info, cached };
  } catch (err) {
    const reason = err instanceof GatewayError ? err.message : errorMessage(err);
    return { ok: false, reason: 'backend', message: AUTH_ERRORS.unauthorized(reason), retryable: isBackendOutage(err) };
  }
}
