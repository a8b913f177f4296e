import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OPTIONS, type LoadResult, type OptionSpec } from '../config';

/** The version of the installed package (dist/cli and src/cli are both two levels below it). */
export function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    return 'unknown';
  }
}

export function helpText(): string {
  const specs = Object.values(OPTIONS) as OptionSpec[];
  const width = Math.max(...specs.map((s) => s.env.length));
  const vars = specs.map((s) => `  ${s.env.padEnd(width)}  ${s.default === undefined || s.default === '' ? '(unset)' : s.default}`);
  return [
    `realtime-gateway ${packageVersion()}: a horizontally scalable Socket.IO gateway for Frappe's realtime events`,
    '',
    'Usage:',
    '  realtime-gateway                 run the gateway (same as "serve")',
    '  realtime-gateway serve           run the gateway',
    '  realtime-gateway check-config    validate the configuration and print it (secrets masked);',
    '                                   exit 0 when valid, 2 when not',
    '  realtime-gateway --version       print the version',
    '  realtime-gateway --help          print this help',
    '',
    'Configured through environment variables only (defaults shown; every secret can also be',
    'given as <VARIABLE>_FILE naming a file that holds it). See the README for what each means.',
    '',
    ...vars,
    '',
  ].join('\n');
}

export function configErrorText(errors: readonly string[]): string {
  return `realtime-gateway: invalid configuration (${errors.length} problem${errors.length === 1 ? '' : 's'}):\n${errors.map((e) => `  - ${e}`).join('\n')}\n`;
}

/** check-config's report of a valid configuration: every effective value, where it came from, secrets masked. */
export function effectiveConfigText(result: Extract<LoadResult, { ok: true }>): string {
  const { config } = result;
  const mode = config.redis
    ? `cluster mode (redis ${config.redis.mode}, ${config.workers} workers)`
    : 'standalone mode (no GATEWAY_REDIS_URL)';
  const width = Math.max(...result.effective.map((e) => e.env.length + e.value.length + 1));
  const lines = [
    `realtime-gateway ${packageVersion()}: configuration is valid: ${mode}`,
    '',
    ...result.effective.map((e) => `  ${`${e.env}=${e.value}`.padEnd(width)}  (${e.source})`),
  ];
  if (result.notes.length > 0) lines.push('', 'Notes:', ...result.notes.map((n) => `  - ${n}`));
  if (result.warnings.length > 0) lines.push('', 'Warnings:', ...result.warnings.map((w) => `  - ${w}`));
  return `${lines.join('\n')}\n`;
}
