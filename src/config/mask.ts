import type { OptionSpec } from './schema';

export const MASK = '********';

/** A value as it may be printed: secrets hidden, a Redis URL keeps everything but its password. */
export function maskValue(spec: OptionSpec, value: string): string {
  if (!spec.secret) return value;
  if (spec.type.kind === 'url') {
    try {
      const u = new URL(value);
      if (u.password) u.password = MASK;
      return u.toString().replace(/\/$/, '');
    } catch {
      return MASK;
    }
  }
  return MASK;
}
