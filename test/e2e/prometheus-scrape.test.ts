// A real Prometheus scrapes a running 2-host cluster (2 workers each) with
// clients and events, loads deploy/prometheus/alerts.yml, and evaluates every
// PromQL expression of the Grafana dashboards and the alert rules through its
// HTTP API, with the dashboards' template variables set to the labels the
// scrape config gives the targets (as Kubernetes service discovery would).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parse as parseYaml } from 'yaml';
import {
  expectConnectError,
  connectClient,
  freePorts,
  pollUntil,
  repoRoot,
  startGateway,
  startRedis,
  withScope,
  type GatewayHandle,
} from '../harness';
import { requirePrometheus, startPrometheus, type PrometheusServer, type PromVectorSample } from '../harness/prometheus-server';
import {
  connectTracked,
  defaultSpecs,
  FAST_LEASE_ENV,
  findLeader,
  logDiagnostic,
  newKeyPrefix,
  publishFrappe,
  SITE,
  startBackend,
  waitSpread,
  waitWorkersUp,
  type TrackedClient,
} from './cluster-support';

const JOB = 'realtime-gateway';
const K8S_NAMESPACE = 'rtgw-test';
const PODS = ['realtime-gateway-0', 'realtime-gateway-1'] as const;
const WORKERS = 2;
const CLIENTS_PER_HOST = 4;
/**
 * $__rate_interval and $__range: long enough to hold every scrape since
 * Prometheus started, so a rate() sees the counters before and after the
 * second wave of events whatever the machine's load.
 */
const WINDOW = '30s';
const TRAFFIC_EVENT = 'prom_traffic';
const WAVE = 5;
/** Panels that must have data once clients are connected and events flowed. */
const REQUIRED_PANEL = /event|traffic|deliver|leader|connection/i;
/** Alerts that must stay silent on a healthy cluster (the others depend on load, e.g. event-loop lag). */
const SILENT_ALERTS = [
  'RealtimeGatewayDown',
  'RealtimeGatewayAllDown',
  'RealtimeGatewayNotReady',
  'RealtimeGatewayNoLeader',
  'RealtimeGatewayMultipleLeaders',
];

interface Expression {
  /** file and panel title or alert name */
  where: string;
  title: string;
  expr: string;
  source: 'dashboard' | 'alert';
}

type Json = unknown;

/** Every `expr` string under `node`, with the title of the nearest enclosing object that has one. */
function collectExprs(node: Json, title: string, out: { title: string; expr: string }[]): void {
  if (Array.isArray(node)) {
    for (const item of node) collectExprs(item, title, out);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const obj = node as Record<string, Json>;
  const own = typeof obj['title'] === 'string' ? obj['title'] : typeof obj['alert'] === 'string' ? obj['alert'] : title;
  if (typeof obj['expr'] === 'string') out.push({ title: own, expr: obj['expr'] });
  for (const value of Object.values(obj)) collectExprs(value, own, out);
}

function dashboardFiles(): string[] {
  const grafana = path.join(repoRoot, 'deploy', 'grafana');
  const jsonIn = (dir: string): string[] =>
    existsSync(dir)
      ? readdirSync(dir)
          .filter((f) => f.endsWith('.json') && statSync(path.join(dir, f)).isFile())
          .map((f) => path.join(dir, f))
      : [];
  return [...jsonIn(grafana), ...jsonIn(path.join(grafana, 'dashboards'))];
}

const ALERTS_FILE = path.join(repoRoot, 'deploy', 'prometheus', 'alerts.yml');

function allExpressions(): Expression[] {
  const out: Expression[] = [];
  for (const file of dashboardFiles()) {
    const found: { title: string; expr: string }[] = [];
    collectExprs(JSON.parse(readFileSync(file, 'utf8')) as Json, '(untitled)', found);
    for (const f of found) out.push({ ...f, where: `${path.basename(file)}: ${f.title}`, source: 'dashboard' });
  }
  const found: { title: string; expr: string }[] = [];
  collectExprs(parseYaml(readFileSync(ALERTS_FILE, 'utf8')) as Json, '(unnamed rule)', found);
  for (const f of found) out.push({ ...f, where: `alerts.yml: ${f.title}`, source: 'alert' });
  return out;
}

/** Query variables of the dashboards: `label_values(<selector>, <label>)`. */
function labelValueVariables(): { where: string; selector: string; label: string }[] {
  const out: { where: string; selector: string; label: string }[] = [];
  for (const file of dashboardFiles()) {
    const model = JSON.parse(readFileSync(file, 'utf8')) as { templating?: { list?: { name?: string; definition?: string }[] } };
    for (const v of model.templating?.list ?? []) {
      const m = /^label_values\((.+),\s*(\w+)\)$/.exec(v.definition ?? '');
      if (m !== null)
        out.push({ where: `${path.basename(file)}: variable ${String(v.name)}`, selector: m[1] as string, label: m[2] as string });
    }
  }
  return out;
}

/** A multi-value selection as Grafana's Prometheus data source formats it for `=~`: regex-escaped, then escaped for a PromQL string. */
function regexAlternation(values: readonly string[]): string {
  const escaped = values.map((v) => v.replace(/[\\^$*+?.()|[\]{}]/g, '\\$&').replace(/\\/g, '\\\\'));
  return escaped.length === 1 ? (escaped[0] as string) : `(${escaped.join('|')})`;
}

/** Replaces `$var`, `${var}`, `${var:format}` and `[[var]]`; an unknown variable fails, so a new one cannot go unnoticed. */
function substitute(expr: string, vars: Readonly<Record<string, string>>): string {
  return expr.replace(
    /\$\{([A-Za-z_]\w*)(?::\w+)?\}|\[\[([A-Za-z_]\w*)\]\]|\$([A-Za-z_]\w*)/g,
    (match, a?: string, b?: string, c?: string) => {
      const name = a ?? b ?? c ?? '';
      const value = vars[name];
      if (value === undefined) throw new Error(`unknown Grafana variable ${match} in: ${expr}`);
      return value;
    },
  );
}

/** Metric names an expression selects: every selector here is written `name{...}`. */
function selectedMetrics(expr: string): string[] {
  return [...expr.matchAll(/([a-zA-Z_:][\w:]*)\s*\{/g)].map((m) => m[1] as string);
}

const sumOf = (samples: readonly PromVectorSample[]): number => samples.reduce((n, s) => n + Number(s.value[1]), 0);

/** The value of a one-number PromQL expression at `time`; undefined when it has no result. */
async function scalar(prom: PrometheusServer, expr: string, time?: number): Promise<number | undefined> {
  const samples = await prom.querySamples(expr, time);
  return samples.length === 0 ? undefined : sumOf(samples);
}

/** Sum over hosts of a metric as the hosts export it right now. */
async function exported(hosts: readonly GatewayHandle[], name: string): Promise<number> {
  let total = 0;
  for (const h of hosts) total += (await h.metricValue(name)) ?? 0;
  return total;
}

/** Once every target was scraped again, Prometheus holds exactly what the hosts exported before; returns those sums. */
async function assertScraped(prom: PrometheusServer, hosts: readonly GatewayHandle[], ...names: string[]): Promise<number[]> {
  const want: number[] = [];
  for (const name of names) want.push(await exported(hosts, name));
  await prom.waitNextScrape();
  for (const [i, name] of names.entries()) {
    assert.equal(await scalar(prom, `sum(${name}{job="${JOB}"})`), want[i], `Prometheus holds the ${name} the hosts export`);
  }
  return want;
}

async function publishWave(publisher: Parameters<typeof publishFrappe>[0], clients: readonly TrackedClient[], wave: number): Promise<void> {
  for (let i = 0; i < WAVE; i++) await publishFrappe(publisher, TRAFFIC_EVENT, { wave, i }, 'website');
  await Promise.all(clients.map((c) => c.recorder.waitForCount(TRAFFIC_EVENT, wave * WAVE, undefined, 10_000)));
}

test(
  'a real Prometheus scrapes a 2-host cluster: dashboards and alerts evaluate, traffic/leader/connections panels have data',
  { timeout: 90_000 },
  async (t) => {
    const startedAt = Date.now();
    // Before anything starts: a machine without Prometheus fails here, with the install command (.ci/run installs it).
    requirePrometheus();
    const scope = withScope(t);
    const expressions = allExpressions();
    assert.ok(
      expressions.some((e) => e.source === 'dashboard') && expressions.some((e) => e.source === 'alert'),
      'found dashboard and alert expressions',
    );

    const redis = await startRedis({ scope });
    const backend = await startBackend(scope);
    const keyPrefix = newKeyPrefix();
    const opsPorts = await freePorts(2);
    const instances = opsPorts.map((p) => `127.0.0.1:${p}`);
    // Prometheus and the hosts start together: targets are down until the hosts listen.
    const [prom, hosts] = await Promise.all([
      startPrometheus({
        scope,
        jobName: JOB,
        targets: instances.map((address, i) => ({ address, labels: { namespace: K8S_NAMESPACE, pod: PODS[i] as string } })),
        ruleFiles: [ALERTS_FILE],
        intervalSeconds: 1,
      }),
      Promise.all(
        opsPorts.map((opsPort) =>
          startGateway({
            scope,
            redisUrl: redis.url,
            backendUrl: backend.url,
            defaultSite: SITE,
            workers: WORKERS,
            keyPrefix,
            opsPort,
            env: FAST_LEASE_ENV,
          }),
        ),
      ),
    ]);
    await Promise.all(hosts.map((h) => waitWorkersUp(h, WORKERS)));
    await findLeader(hosts);
    await prom.waitTargetsUp(2);

    // Clients spread over both workers of each host; one refused connection and one malformed event feed the error panels.
    const clients: TrackedClient[] = [];
    for (const host of hosts) {
      const mine = await connectTracked(scope, host, defaultSpecs().slice(0, CLIENTS_PER_HOST));
      await waitSpread(host, mine, WORKERS);
      clients.push(...mine);
    }
    const refused = connectClient((hosts[0] as GatewayHandle).url, SITE, { scope });
    await expectConnectError(refused);
    const publisher = redis.client();
    await publisher.publish('events', '{"event": "broken"');

    // Three scrapes: one before the events, one after each wave, so every
    // series has samples on both sides of a change and rate() is above zero.
    assert.deepEqual(await assertScraped(prom, hosts, 'gateway_connect_errors_total'), [1], 'the refused connection was counted');
    // Published before the wave, and the events channel is consumed in order: delivered wave = drop counted.
    await publishWave(publisher, clients, 1);
    const [afterFirst = 0, dropped = 0] = await assertScraped(prom, hosts, 'gateway_events_received_total', 'gateway_events_dropped_total');
    assert.ok(dropped >= 1, 'the malformed event was counted as dropped');
    await publishWave(publisher, clients, 2);
    const [afterSecond = 0] = await assertScraped(prom, hosts, 'gateway_events_received_total');
    assert.ok(afterSecond >= afterFirst + WAVE, 'the second wave was counted');
    // Every expression is evaluated at this one instant: the answers do not depend on how long the loop below takes.
    const at = Date.now() / 1000;

    assert.equal(await scalar(prom, `sum(gateway_leader{job="${JOB}"})`, at), 1, 'exactly one leader across both hosts');
    assert.equal(
      await scalar(prom, `sum(gateway_connections{job="${JOB}"})`, at),
      clients.length,
      'gateway_connections sums to the connected clients',
    );
    const perHost = await prom.querySamples(`sum by (instance) (gateway_connections{job="${JOB}"})`, at);
    assert.deepEqual(
      perHost.map((s) => [s.metric['instance'], Number(s.value[1])]).sort(),
      instances.map((i) => [i, CLIENTS_PER_HOST]).sort(),
      'each host reports its own clients (both workers aggregated)',
    );

    const vars: Record<string, string> = {
      job: JOB,
      namespace: regexAlternation([K8S_NAMESPACE]),
      pod: regexAlternation(PODS),
      instance: regexAlternation(instances),
      datasource: 'prometheus',
      __rate_interval: WINDOW,
      __interval: '5s',
      __interval_ms: '5000',
      __range: WINDOW,
      __range_s: '30',
      __range_ms: '30000',
    };

    // The variables resolve to the values substituted above.
    const expectedValues: Record<string, string[]> = { job: [JOB], namespace: [K8S_NAMESPACE], pod: [...PODS], instance: instances };
    for (const v of labelValueVariables()) {
      const samples = await prom.querySamples(substitute(v.selector, vars), at);
      const values = [...new Set(samples.map((s) => s.metric[v.label]).filter((x): x is string => x !== undefined))].sort();
      assert.deepEqual(values, [...(expectedValues[v.label] ?? [])].sort(), `${v.where}: label_values(${v.selector}, ${v.label})`);
    }

    const failures: string[] = [];
    const emptyRequired: string[] = [];
    const emptyOther: string[] = [];
    const results = new Map<string, PromVectorSample[]>();
    for (const e of expressions) {
      const query = substitute(e.expr, vars);
      const res = await prom.query(query, at);
      if (res.status !== 'success') {
        failures.push(`${e.where}: ${res.errorType ?? ''}: ${res.error ?? ''}\n    ${query}`);
        continue;
      }
      results.set(`${e.where}\n${e.expr}`, res.samples);
      if (res.samples.length > 0) continue;
      // An alert expression with no result is an alert that does not fire.
      if (e.source === 'alert') continue;
      if (REQUIRED_PANEL.test(e.title)) emptyRequired.push(`${e.where}: ${query}`);
      else emptyOther.push(`${e.where}: ${query}`);
    }
    assert.deepEqual(failures, [], 'every dashboard and alert expression evaluates');
    assert.deepEqual(emptyRequired, [], 'traffic/events, leader and connections panels return data');
    logDiagnostic(t, 'expressions evaluated', expressions.length);
    for (const line of emptyOther) logDiagnostic(t, 'panel without data (not required)', line);
    const firing = expressions.filter((e) => e.source === 'alert' && (results.get(`${e.where}\n${e.expr}`)?.length ?? 0) > 0);
    logDiagnostic(
      t,
      'alert expressions with a result (would fire after their `for`)',
      firing.map((e) => e.title),
    );

    // The gateway's own `namespace` label (the site) collides with the target's Kubernetes namespace and becomes
    // exported_namespace; the per-site panel maps it back.
    const perSite = [...results].filter(([key]) => key.startsWith('realtime-gateway.json: Connections per site'));
    assert.equal(perSite.length, 1, 'the per-site connections panel exists');
    assert.deepEqual(
      perSite[0]?.[1].map((s) => [s.metric['site'], Number(s.value[1])]),
      [[SITE, clients.length]],
      'connections per site name the Socket.IO namespace, not the Kubernetes one',
    );

    // Counters moved: the traffic panels show a rate above zero, not just a series.
    const valueOf = (title: RegExp): number => {
      const hits = [...results].filter(([key]) => title.test(key.split('\n')[0] ?? ''));
      assert.ok(hits.length > 0, `a panel matching ${String(title)} exists`);
      return hits.reduce((n, [, samples]) => n + sumOf(samples), 0);
    };
    assert.ok(valueOf(/realtime-gateway\.json: Events received/) > 0, 'events received /s > 0');
    assert.ok(valueOf(/realtime-gateway\.json: Deliveries/) > 0, 'deliveries /s > 0');

    // A healthy cluster fires none of the availability and leadership alerts.
    for (const name of SILENT_ALERTS) {
      const hits = [...results].filter(([key]) => key.startsWith(`alerts.yml: ${name}\n`));
      assert.equal(hits.length, 1, `alert ${name} is defined once`);
      assert.deepEqual(hits[0]?.[1], [], `alert ${name} is silent on a healthy cluster`);
    }

    // Prometheus loaded every rule of alerts.yml and evaluates it without error.
    const alertCount = expressions.filter((e) => e.source === 'alert').length;
    const rules = await pollUntil(
      async () => {
        const all = await prom.rules();
        return all.length === alertCount && all.every((r) => r.health !== 'unknown') ? all : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 100, description: `${alertCount} rules loaded and evaluated once` },
    );
    assert.deepEqual(
      rules.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.lastError ?? ''}`),
      [],
      'every rule evaluates without error',
    );

    // A selector whose metric was never scraped can never have data (the static check in deploy-artifacts only knows the registry).
    const scraped = new Set(await prom.metricNames());
    const never = [...new Set(expressions.flatMap((e) => selectedMetrics(e.expr)))].filter((m) => !scraped.has(m)).sort();
    for (const m of never) logDiagnostic(t, 'selected but never scraped', m);

    logDiagnostic(t, 'duration ms', Date.now() - startedAt);
  },
);

test('a machine without prometheus fails with the install command instead of skipping', () => {
  assert.throws(
    () => requirePrometheus('/nonexistent/rtgw-no-such-prometheus'),
    (err: unknown) =>
      err instanceof Error &&
      (err as { code?: unknown }).code === 'HARNESS_ERR_PROMETHEUS_MISSING' &&
      /apt-get install -y prometheus/.test(err.message),
  );
});
