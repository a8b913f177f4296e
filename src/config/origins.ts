/**
 * GATEWAY_ALLOWED_ORIGINS entries: a bare hostname matches that host with any
 * scheme and port (Frappe's hostname comparison); a full origin
 * (scheme://host[:port]) matches exactly that scheme, host and port.
 */
export function normaliseAllowedOrigin(entry: string): { value?: string; error?: string } {
  const e = entry.trim();
  if (e.includes('://')) {
    let u: URL;
    try {
      u = new URL(e);
    } catch {
      return { error: `GATEWAY_ALLOWED_ORIGINS: "${entry}" is not a valid origin (scheme://host[:port])` };
    }
    if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash || u.username) {
      return { error: `GATEWAY_ALLOWED_ORIGINS: "${entry}" must be an origin only (scheme://host[:port]), without path or query` };
    }
    return { value: u.origin };
  }
  if (!/^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$/.test(e)) {
    return { error: `GATEWAY_ALLOWED_ORIGINS: "${entry}" must be a hostname or an origin such as http://host:port` };
  }
  return { value: e.toLowerCase().replace(/^\[|\]$/g, '') };
}

/** The request Origin as compared with full-origin entries; undefined when it is not a URL. */
export function requestOrigin(origin: string | undefined): string | undefined {
  if (!origin) return undefined;
  try {
    const o = new URL(origin.trim()).origin;
    return o === 'null' ? undefined : o;
  } catch {
    return undefined;
  }
}

/** Whether an allowed-origins list (normalised by `normaliseAllowedOrigin`) accepts this Origin. */
export function originAllowed(allowed: readonly string[], origin: string | undefined, originHost: string | undefined): boolean {
  if (originHost !== undefined && allowed.includes(originHost)) return true;
  const full = requestOrigin(origin);
  return full !== undefined && allowed.includes(full);
}
