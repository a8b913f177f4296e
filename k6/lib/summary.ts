/**
 * End-of-test summary: a plain-text report (own implementation, no remote
 * jslib import) and the k6 summary JSON, written by `handleSummary`.
 * Pure, so the unit tests can render a synthetic summary.
 */

export type MetricType = 'counter' | 'gauge' | 'rate' | 'trend';

export interface SummaryMetric {
  type: MetricType;
  contains: 'default' | 'time' | 'data';
  values: Record<string, number>;
  thresholds?: Record<string, { ok: boolean }>;
}

export interface SummaryCheck {
  name: string;
  path: string;
  passes: number;
  fails: number;
}

export interface SummaryGroup {
  name: string;
  path: string;
  groups: SummaryGroup[];
  checks: SummaryCheck[];
}

/** The object k6 passes to `handleSummary` (the parts used here). */
export interface SummaryData {
  metrics: Record<string, SummaryMetric>;
  root_group: SummaryGroup;
  state?: { testRunDurationMs?: number };
  options?: { summaryTrendStats?: string[] };
}

export interface ThresholdResult {
  metric: string;
  expression: string;
  ok: boolean;
  /** Observed value of the aggregation the expression tests, when known. */
  observed: string;
}

/** Metrics this project defines; listed before k6's built-ins. */
const OWN_PREFIXES = ['sio_', 'fanout_', 'frappe_'];

export function formatMs(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms === 0) return '0s';
  if (Math.abs(ms) < 1) return `${(ms * 1000).toFixed(2)}µs`;
  if (Math.abs(ms) < 1000) return `${ms.toFixed(2)}ms`;
  if (Math.abs(ms) < 60000) return `${(ms / 1000).toFixed(2)}s`;
  const minutes = Math.floor(ms / 60000);
  const seconds = Math.round((ms - minutes * 60000) / 1000);
  return `${minutes}m${seconds}s`;
}

function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`;
  if (bytes < 1e9) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${(bytes / 1e9).toFixed(2)} GB`;
}

function formatNumber(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(4).replace(/0+$/, '').replace(/\.$/, '');
}

function formatValue(metric: SummaryMetric, stat: string, value: number): string {
  if (metric.type === 'rate' && stat === 'rate') return `${(value * 100).toFixed(2)}%`;
  if (stat === 'rate') return `${formatNumber(value)}/s`;
  if (metric.contains === 'time' && stat !== 'count') return formatMs(value);
  if (metric.contains === 'data' && stat !== 'rate') return formatBytes(value);
  return formatNumber(value);
}

/** The aggregation a threshold expression tests: `p(95)<500` -> `p(95)`. */
export function thresholdStat(expression: string): string {
  const match = /^\s*([a-z]+(?:\([\d.]+\))?)/.exec(expression);
  return match?.[1] ?? expression;
}

export function thresholdResults(data: SummaryData): ThresholdResult[] {
  const results: ThresholdResult[] = [];
  for (const name of Object.keys(data.metrics).sort()) {
    const metric = data.metrics[name];
    if (metric === undefined || metric.thresholds === undefined) continue;
    for (const expression of Object.keys(metric.thresholds)) {
      const stat = thresholdStat(expression);
      const value = metric.values[stat];
      results.push({
        metric: name,
        expression,
        ok: metric.thresholds[expression]?.ok ?? false,
        observed: value === undefined ? 'n/a' : `${stat}=${formatValue(metric, stat, value)}`,
      });
    }
  }
  return results;
}

function collectChecks(group: SummaryGroup, out: SummaryCheck[]): SummaryCheck[] {
  for (const check of group.checks) out.push(check);
  for (const child of group.groups) collectChecks(child, out);
  return out;
}

function describeMetric(metric: SummaryMetric, trendStats: readonly string[]): string {
  const v = metric.values;
  switch (metric.type) {
    case 'trend':
      return trendStats
        .filter((s) => v[s] !== undefined)
        .map((s) => `${s}=${formatValue(metric, s, v[s] ?? 0)}`)
        .join(' ');
    case 'rate': {
      const passes = v['passes'] ?? 0;
      const fails = v['fails'] ?? 0;
      return `${formatValue(metric, 'rate', v['rate'] ?? 0)} (${passes} of ${passes + fails})`;
    }
    case 'counter':
      return `${formatValue(metric, 'count', v['count'] ?? 0)} ${formatValue(metric, 'rate', v['rate'] ?? 0)}`;
    default:
      return `${formatValue(metric, 'value', v['value'] ?? 0)} min=${formatValue(metric, 'min', v['min'] ?? 0)} max=${formatValue(metric, 'max', v['max'] ?? 0)}`;
  }
}

function dotted(label: string, width: number): string {
  return label.length >= width ? `${label} ` : `${label} ${'.'.repeat(width - label.length - 1)}`;
}

export interface TextSummaryOptions {
  /** Scenario file name, e.g. `connect-storm`. */
  scenario: string;
  /** Resolved configuration, printed so a report says what was run. */
  config?: Record<string, unknown>;
}

export function textSummary(data: SummaryData, options: TextSummaryOptions): string {
  const lines: string[] = [];
  const thresholds = thresholdResults(data);
  const failed = thresholds.filter((t) => !t.ok);
  const verdict =
    failed.length === 0
      ? `PASS (${thresholds.length} of ${thresholds.length} thresholds passed)`
      : `FAIL (${failed.length} of ${thresholds.length} thresholds crossed)`;
  lines.push(`realtime-gateway k6 scenario: ${options.scenario}`);
  lines.push(`result:   ${verdict}`);
  const duration = data.state?.testRunDurationMs;
  if (duration !== undefined) lines.push(`duration: ${formatMs(duration)}`);
  if (options.config !== undefined) {
    const keys = Object.keys(options.config).sort();
    lines.push(`config:   ${keys.map((k) => `${k}=${JSON.stringify(options.config?.[k])}`).join(' ')}`);
  }

  lines.push('', 'THRESHOLDS');
  if (thresholds.length === 0) lines.push('  (none)');
  const widest = thresholds.reduce((w, t) => Math.max(w, t.metric.length), 0);
  for (const t of thresholds) {
    lines.push(`  ${t.ok ? '✓' : '✗'} ${t.metric.padEnd(widest)}  ${t.expression.padEnd(14)}  ${t.observed}`);
  }

  lines.push('', 'CHECKS');
  const checks = collectChecks(data.root_group, []);
  if (checks.length === 0) lines.push('  (none)');
  for (const c of checks) {
    const total = c.passes + c.fails;
    const pct = total === 0 ? 0 : (c.passes / total) * 100;
    lines.push(`  ${c.fails === 0 ? '✓' : '✗'} ${c.name}: ${pct.toFixed(2)}% (${c.passes} passed, ${c.fails} failed)`);
  }

  const trendStats = data.options?.summaryTrendStats ?? ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)'];
  const names = Object.keys(data.metrics).sort((a, b) => {
    const ownA = OWN_PREFIXES.some((p) => a.startsWith(p)) ? 0 : 1;
    const ownB = OWN_PREFIXES.some((p) => b.startsWith(p)) ? 0 : 1;
    return ownA - ownB || (a < b ? -1 : a > b ? 1 : 0);
  });
  const width = Math.max(32, ...names.map((n) => n.length + 4));
  lines.push('', 'METRICS');
  for (const name of names) {
    const metric = data.metrics[name];
    if (metric === undefined) continue;
    lines.push(`  ${dotted(name, width)}: ${describeMetric(metric, trendStats)}`);
  }
  lines.push('');
  return lines.join('\n');
}

export interface SummaryFileOptions extends TextSummaryOptions {
  /** Directory the files go to (relative to where k6 runs). */
  dir: string;
}

/**
 * What `handleSummary` returns: the text report on stdout and in
 * `<dir>/<scenario>-summary.txt`, the k6 summary JSON (plus a `gateway`
 * verdict block) in `<dir>/<scenario>-summary.json`.
 */
export function summaryOutputs(data: SummaryData, options: SummaryFileOptions): Record<string, string> {
  const text = textSummary(data, options);
  const failed = thresholdResults(data).filter((t) => !t.ok);
  const json = {
    ...data,
    gateway: {
      scenario: options.scenario,
      passed: failed.length === 0,
      failedThresholds: failed.map((t) => `${t.metric}: ${t.expression} (${t.observed})`),
      config: options.config ?? {},
    },
  };
  const dir = options.dir.replace(/\/+$/, '') || '.';
  return {
    stdout: text,
    [`${dir}/${options.scenario}-summary.txt`]: text,
    [`${dir}/${options.scenario}-summary.json`]: JSON.stringify(json, null, 2),
  };
}
