import { OPTIONS, type OptionSpec } from './schema';

/** Levenshtein distance; the names compared are short, so the O(n*m) table is fine. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_v, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

const SPECS = Object.values(OPTIONS) as OptionSpec[];
const KNOWN = new Set<string>([...SPECS.map((s) => s.env), ...SPECS.filter((s) => s.secret).map((s) => `${s.env}_FILE`)]);

/** The known name closest to `name`, or undefined when none is close enough to be a plausible typo. */
export function closestOption(name: string): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const known of KNOWN) {
    // A prefix match (GATEWAY_REDIS for GATEWAY_REDIS_URL) is a likely truncation even when far in edits.
    const d = known.startsWith(name) ? Math.min(editDistance(name, known), 1.5) : editDistance(name, known);
    if (d < bestD) {
      bestD = d;
      best = known;
    }
  }
  const suffix = name.replace(/^GATEWAY_/, '');
  return bestD <= Math.max(2, Math.ceil(suffix.length / 3)) ? best : undefined;
}

/**
 * One warning per GATEWAY_* variable the gateway does not read: a typo would
 * otherwise silently fall back to the default. GATEWAY_INTERNAL_* is how the
 * primary talks to its workers, not configuration.
 */
export function unknownVariableWarnings(env: NodeJS.ProcessEnv): string[] {
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('GATEWAY_') || name.startsWith('GATEWAY_INTERNAL_') || KNOWN.has(name)) continue;
    const near = closestOption(name);
    out.push(`${name} is not a known option and is ignored${near ? `; did you mean ${near}?` : ''}`);
  }
  return out;
}
