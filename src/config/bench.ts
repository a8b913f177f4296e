import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The subset of a Frappe bench's configuration the realtime server reads. */
export interface BenchConfig {
  readonly socketio_port?: unknown;
  readonly redis_queue?: unknown;
  readonly redis_socketio?: unknown;
  readonly default_site?: unknown;
  readonly developer_mode?: unknown;
  readonly webserver_port?: unknown;
  readonly webserver_host?: unknown;
}

export interface BenchRead {
  readonly values: BenchConfig;
  readonly problems: string[];
}

/**
 * Reads `<bench>/config.json` then `<bench>/sites/common_site_config.json`,
 * later files winning, as Frappe's own Node server does. A missing file is
 * fine (benches often lack config.json); an unreadable or non-object file is a
 * problem to report.
 */
export function readBenchConfig(benchPath: string): BenchRead {
  const problems: string[] = [];
  let values: Record<string, unknown> = {};
  for (const file of [join(benchPath, 'config.json'), join(benchPath, 'sites', 'common_site_config.json')]) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      problems.push(`GATEWAY_BENCH_PATH: cannot read ${file}: ${(err as Error).message}`);
      continue;
    }
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
        problems.push(`GATEWAY_BENCH_PATH: ${file} is not a JSON object`);
        continue;
      }
      values = { ...values, ...(parsed as Record<string, unknown>) };
    } catch (err) {
      problems.push(`GATEWAY_BENCH_PATH: ${file} is not valid JSON: ${(err as Error).message}`);
    }
  }
  return { values, problems };
}
