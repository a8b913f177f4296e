import { existsSync } from 'node:fs';
import path from 'node:path';

/** The repository root: this file lives in <root>/test/harness. */
export const repoRoot: string = path.resolve(__dirname, '..', '..');

/** The built gateway entry point that e2e tests and the benchmark spawn. */
export const gatewayMainPath: string = path.join(repoRoot, 'dist', 'main.js');

/** Real-shaped Frappe publishes (docs/protocol.md section 2), kept in the repository. */
export const frappeFixturesPath: string = path.join(repoRoot, 'test', 'fixtures', 'frappe-events.txt');

/**
 * Finds an executable: the preferred absolute path first, then PATH.
 * Returns undefined when nothing is found so callers can explain how to install it.
 */
export function findExecutable(preferred: string, pathValue: string | undefined): string | undefined {
  if (existsSync(preferred)) return preferred;
  const name = path.basename(preferred);
  for (const dir of (pathValue ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}
