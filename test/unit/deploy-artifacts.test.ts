// Offline consistency checks of the deployment artefacts (Dockerfile, Helm
// chart, Swarm stack, nginx examples, Prometheus rules, Grafana dashboard)
// against each other and against the gateway's own config schema and metric
// registry. Pure Node: no docker, helm, nginx or promtool needed; those tools
// run in deploy/verify.sh when they are installed.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { parseAllDocuments } from 'yaml';
import { OPTIONS } from '../../src/config/schema';
import { createMetrics } from '../../src/metrics/metrics';

const root = join(__dirname, '..', '..');
const chartDir = join(root, 'helm', 'realtime-gateway');
const read = (...p: string[]): string => readFileSync(join(root, ...p), 'utf8');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

/** Parses every document of a YAML file, failing on any error or warning (merge keys on, as Compose uses them). */
function parseYaml(file: string): unknown[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { merge: true, prettyErrors: true });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    const problems = [...d.errors, ...d.warnings].map((e) => e.message);
    assert.deepEqual(problems, [], `${relative(root, file)} parses as YAML`);
  }
  return list.map((d) => d.toJS());
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

const yamlFiles = [...walk(join(root, 'deploy')), ...walk(chartDir).filter((f) => !f.includes(`${join(chartDir, 'templates')}`))].filter(
  (f) => /\.ya?ml$/.test(f),
);
const values = parseYaml(join(chartDir, 'values.yaml'))[0] as Obj;
const alertsYaml = read('deploy', 'prometheus', 'alerts.yml');
const alerts = parseYaml(join(root, 'deploy', 'prometheus', 'alerts.yml'))[0] as { groups: { name: string; rules: Obj[] }[] };
const dashboardDir = join(root, 'deploy', 'grafana', 'dashboards');
const dashboards = readdirSync(dashboardDir)
  .filter((f) => f.endsWith('.json'))
  .map((f) => ({ file: f, model: JSON.parse(readFileSync(join(dashboardDir, f), 'utf8')) as Obj }));
const dashboard = (dashboards.find((d) => d.file === 'realtime-gateway.json') as { model: Obj }).model;
// Variables the chart sets that the gateway gains in a concurrent change
// (Sentinel credentials); accepted until src/config/schema.ts lists them.
const ANNOUNCED_ENV = new Set(['GATEWAY_REDIS_SENTINEL_USERNAME', 'GATEWAY_REDIS_SENTINEL_PASSWORD']);
const stack = parseYaml(join(root, 'deploy', 'swarm', 'stack.yml'))[0] as Obj;
const gatewayEnv = new Set<string>(Object.values(OPTIONS).map((o) => o.env));

/** Every metric the gateway exposes: its own registry plus prom-client's Node defaults. */
async function knownMetrics(): Promise<Set<string>> {
  const registry = new Registry();
  createMetrics(registry, { defaults: true });
  const names = new Set<string>(['up']); // synthesised by Prometheus for every target
  for (const m of await registry.getMetricsAsJSON()) {
    names.add(m.name);
    const type = String(m.type);
    if (type === 'histogram' || type === 'summary') for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
  }
  return names;
}

const PROMQL_KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'offset',
  'bool',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'atan2',
  'inf',
  'nan',
]);

/**
 * Metric names an expression selects: identifiers that are not functions,
 * keywords, label names (inside {} or grouping clauses), strings, durations or
 * Grafana variables. Good enough for the expressions written here.
 */
function promqlMetricNames(expr: string): Set<string> {
  const e = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\$\{?\w+\}?/g, ' ');
  const names = new Set<string>();
  for (const m of e.matchAll(/(?<![\w.:$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    const word = m[1] as string;
    if (!PROMQL_KEYWORDS.has(word.toLowerCase())) names.add(word);
  }
  return names;
}

function dashboardExpressions(): { panel: string; expr: string }[] {
  const out: { panel: string; expr: string }[] = [];
  for (const { file, model } of dashboards) {
    for (const p of model.panels as Obj[]) {
      for (const t of (p.targets as Obj[] | undefined) ?? []) out.push({ panel: `${file}: ${String(p.title)}`, expr: String(t.expr) });
    }
    for (const v of (model.templating as { list: Obj[] }).list) {
      if (typeof v.definition === 'string')
        out.push({ panel: `${file}: variable ${String(v.name)}`, expr: v.definition.replace(/^label_values\((.*),\s*\w+\)$/, '$1') });
    }
  }
  return out;
}

test('promqlMetricNames finds metrics, not functions, labels, keywords or variables', () => {
  const expr =
    'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"$job",x="y z"}[$__rate_interval]))) > 1 and on (job) count(b offset 5m == 1) or label_replace(c, "site", "$1", "namespace", "(.*)")';
  assert.deepEqual([...promqlMetricNames(expr)].sort(), ['a_bucket', 'b', 'c']);
});

test('every deploy/ and chart YAML file outside templates/ parses', () => {
  assert.ok(yamlFiles.length >= 8, `found ${yamlFiles.length} YAML files`);
  for (const f of yamlFiles) parseYaml(f);
});

test('the Grafana dashboards are well-formed classic dashboard models', () => {
  assert.equal(dashboard.uid, 'realtime-gateway');
  assert.deepEqual(
    dashboards.map((d) => d.model.uid).sort(),
    ['realtime-gateway', 'realtime-gateway-cluster', 'realtime-gateway-runtime'],
    'overview, cluster and runtime dashboards',
  );
  for (const { file, model } of dashboards) {
    assert.equal(typeof model.schemaVersion, 'number');
    const vars = (model.templating as { list: Obj[] }).list;
    assert.ok(
      vars.some((v) => v.type === 'datasource' && v.name === 'datasource' && v.query === 'prometheus'),
      `${file}: a Prometheus data source variable`,
    );
    for (const name of ['job', 'namespace', 'pod'])
      assert.ok(
        vars.some((v) => v.name === name),
        `${file}: a ${name} variable`,
      );
    const ids = new Set<number>();
    for (const p of model.panels as Obj[]) {
      const title = `${file}: ${String(p.title)}`;
      assert.ok(typeof p.id === 'number' && !ids.has(p.id), `${title}: unique numeric id`);
      ids.add(p.id as number);
      const g = p.gridPos as { x: number; y: number; w: number; h: number };
      assert.ok(g.x >= 0 && g.w > 0 && g.x + g.w <= 24 && g.h > 0, `${title}: gridPos fits the 24-column grid`);
      if (p.type === 'row') continue;
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `${title}: uses the data source variable`);
      const targets = p.targets as Obj[];
      assert.ok(targets.length > 0, `${title}: has queries`);
      assert.equal(new Set(targets.map((t) => t.refId)).size, targets.length, `${title}: unique refIds`);
      for (const t of targets) assert.ok(typeof t.expr === 'string' && t.expr.length > 0, `${title}: query has an expr`);
    }
  }
  const titles = (dashboard.panels as Obj[]).map((p) => String(p.title));
  for (const wanted of [
    /per site/,
    /Deliveries/,
    /dropped/,
    /broadcast latency/,
    /Leader epoch/,
    /CPU/,
    /Resident memory/,
    /Backend call latency/,
  ]) {
    assert.ok(
      titles.some((t) => wanted.test(t)),
      `a panel matching ${wanted}`,
    );
  }
});

test('alert rules and dashboard queries only use metrics the gateway exposes', async () => {
  const known = await knownMetrics();
  const used: { where: string; expr: string }[] = [
    ...alerts.groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${String(r.alert)}`, expr: String(r.expr) }))),
    ...dashboardExpressions().map((d) => ({ where: `panel ${d.panel}`, expr: d.expr })),
  ];
  for (const { where, expr } of used) {
    const names = promqlMetricNames(expr);
    assert.ok(names.size > 0, `${where} selects some metric`);
    for (const n of names) assert.ok(known.has(n), `${where}: unknown metric ${n}`);
  }
});

test('alert rules are complete and consistently labelled', () => {
  const names = new Set<string>();
  for (const g of alerts.groups) {
    for (const r of g.rules) {
      const name = String(r.alert);
      assert.match(name, /^RealtimeGateway[A-Z]\w+$/);
      assert.ok(!names.has(name), `${name} is unique`);
      names.add(name);
      assert.ok(['critical', 'warning', 'info'].includes(String((r.labels as Obj).severity)), `${name}: severity`);
      const ann = r.annotations as Obj;
      assert.ok(typeof ann.summary === 'string' && typeof ann.description === 'string', `${name}: summary and description`);
      if (r.for !== undefined) assert.match(String(r.for), /^\d+[smh]$/, `${name}: for`);
      assert.match(String(r.expr), /job="realtime-gateway"/, `${name}: selects the realtime-gateway job`);
    }
  }
  for (const wanted of [
    'Down',
    'NotReady',
    'NoLeader',
    'MultipleLeaders',
    'ConsumerLag',
    'EventsDropped',
    'AuthErrors',
    'BackendLatencyHigh',
  ]) {
    assert.ok(names.has(`RealtimeGateway${wanted}`), `RealtimeGateway${wanted} exists`);
  }
});

test('every alert has a firing promtool test and a runbook section it links to', () => {
  const tests = parseYaml(join(root, 'deploy', 'prometheus', 'alerts.test.yml'))[0] as {
    tests: { alert_rule_test?: { alertname: string; exp_alerts: unknown[] }[] }[];
  };
  const firing = new Set(
    tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)),
  );
  const runbook = read('deploy', 'runbooks.md');
  const sections = new Set([...runbook.matchAll(/^## (\w+)$/gm)].map((m) => m[1] as string));
  for (const g of alerts.groups) {
    for (const r of g.rules) {
      const name = String(r.alert);
      assert.ok(firing.has(name), `${name}: alerts.test.yml has a case where it fires`);
      assert.ok(sections.has(name), `${name}: deploy/runbooks.md has a section`);
      assert.equal((r.annotations as Obj).runbook_url, `deploy/runbooks.md#${name.toLowerCase()}`, `${name}: runbook_url`);
    }
  }
  for (const wanted of ['EventLoopLagHigh', 'ConnectionsDropped']) assert.ok(firing.has(`RealtimeGateway${wanted}`));
});

test('the chart ships the very same alert rules and dashboards as deploy/ (symlinks, one source)', () => {
  assert.equal(read('helm', 'realtime-gateway', 'files', 'alerts.yml'), alertsYaml);
  assert.equal(realpathSync(join(chartDir, 'files', 'alerts.yml')), join(root, 'deploy', 'prometheus', 'alerts.yml'));
  assert.equal(realpathSync(join(chartDir, 'files', 'dashboards')), dashboardDir);
});

/** `.Values.a.b` references of every chart template, with the file they are in. */
function valuesReferences(): { path: string; file: string }[] {
  const refs: { path: string; file: string }[] = [];
  for (const f of walk(join(chartDir, 'templates'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/\.Values((?:\.[A-Za-z_][\w]*)+)/g)) {
      refs.push({ path: (m[1] as string).slice(1), file: relative(chartDir, f) });
    }
  }
  return refs;
}

test('every .Values path the chart templates use is defined in values.yaml', () => {
  const refs = valuesReferences();
  assert.ok(refs.length > 50, `found ${refs.length} references`);
  for (const { path, file } of refs) {
    let node: unknown = values;
    for (const key of path.split('.')) {
      assert.ok(isObj(node) && Object.hasOwn(node, key), `${file}: .Values.${path} is not in values.yaml`);
      node = node[key];
    }
  }
});

test('every values.yaml setting is used by some template', () => {
  const used = new Set(valuesReferences().map((r) => r.path));
  const unused: string[] = [];
  const visit = (node: unknown, path: string[]): void => {
    const p = path.join('.');
    // A setting is used when it or an enclosing object is referenced (toYaml, with, $x := ...).
    if (path.length > 0 && path.some((_, i) => used.has(path.slice(0, i + 1).join('.')))) return;
    if (isObj(node) && Object.keys(node).length > 0) {
      for (const [k, v] of Object.entries(node)) visit(v, [...path, k]);
    } else unused.push(p);
  };
  visit(values, []);
  assert.deepEqual(unused, []);
});

test('the chart and the Swarm stack only set environment variables the gateway knows', () => {
  const deployment = readFileSync(join(chartDir, 'templates', 'deployment.yaml'), 'utf8');
  const chartEnv = [...deployment.matchAll(/- name: (GATEWAY_[A-Z_]+)/g)].map((m) => m[1] as string);
  assert.ok(chartEnv.length >= 15, `chart sets ${chartEnv.length} variables`);
  for (const v of chartEnv) assert.ok(gatewayEnv.has(v) || ANNOUNCED_ENV.has(v), `chart: ${v} is in src/config/schema.ts`);

  // *_FILE variables are read by deploy/docker/entrypoint.sh into the variable without the suffix.
  const entrypoint = read('deploy', 'docker', 'entrypoint.sh');
  const fileVars = (/for var in ([A-Z_ ]+); do/.exec(entrypoint)?.[1] ?? '').trim().split(/\s+/);
  for (const v of fileVars) assert.ok(gatewayEnv.has(v), `entrypoint: ${v} is in src/config/schema.ts`);
  const env = ((stack['x-gateway'] as Obj).environment ?? {}) as Obj;
  for (const v of Object.keys(env)) {
    const base = v.replace(/_FILE$/, '');
    assert.ok(gatewayEnv.has(base), `stack: ${v} is in src/config/schema.ts`);
    if (base !== v) assert.ok(fileVars.includes(base), `stack: ${v} is handled by the entrypoint`);
  }
});

test('the Swarm stack lets the shutdown sequence finish and every slot is behind nginx', () => {
  const services = stack.services as Record<string, Obj>;
  const slots = Object.keys(services).filter((s) => /^gateway-\d+$/.test(s));
  assert.ok(slots.length >= 2, 'at least two gateway slots');
  const nginxConf = read('deploy', 'swarm', 'nginx-gateway.conf');
  for (const s of slots) {
    const svc = services[s] as Obj;
    const env = svc.environment as Obj;
    const graceS = Number(env.GATEWAY_SHUTDOWN_GRACE_MS) / 1000;
    const stopS = Number(/^(\d+)s$/.exec(String(svc.stop_grace_period))?.[1]);
    assert.ok(stopS > graceS, `${s}: stop_grace_period ${stopS}s > GATEWAY_SHUTDOWN_GRACE_MS ${graceS}s`);
    assert.ok(Number(env.GATEWAY_DRAIN_MS) < Number(env.GATEWAY_SHUTDOWN_GRACE_MS), `${s}: drain < grace`);
    const deploy = svc.deploy as { update_config: Obj };
    assert.equal(deploy.update_config.order, 'start-first');
    assert.equal(deploy.update_config.parallelism, 1);
    assert.ok(new RegExp(`server ${s}:9000\\b`).test(nginxConf), `${s} is an upstream server of nginx`);
  }
  assert.equal([...nginxConf.matchAll(/server gateway-\d+:9000/g)].length, slots.length, 'nginx lists exactly the stack slots');
});

test('nginx examples keep sessions on one gateway and outlive the Socket.IO heartbeat', () => {
  const heartbeatS = (Number(OPTIONS.pingIntervalMs.default) + Number(OPTIONS.pingTimeoutMs.default)) / 1000;
  for (const f of ['nginx/frappe-single-host.conf', 'nginx/frappe-multi-host.conf', 'swarm/nginx-gateway.conf']) {
    const conf = read('deploy', ...f.split('/'));
    for (const d of ['proxy_read_timeout', 'proxy_send_timeout']) {
      const s = Number(new RegExp(`${d} (\\d+)s;`).exec(conf)?.[1]);
      assert.ok(s > heartbeatS, `${f}: ${d} ${s}s > ${heartbeatS}s`);
    }
    for (const h of [
      'proxy_http_version 1.1;',
      'proxy_set_header Upgrade $http_upgrade;',
      'proxy_set_header X-Frappe-Site-Name $host;',
      'proxy_set_header Origin $scheme://$http_host;',
      'proxy_set_header Host $host;',
      'proxy_buffering off;',
    ]) {
      assert.ok(conf.includes(h), `${f}: ${h}`);
    }
    assert.ok(/location \/socket\.io \{/.test(conf), `${f}: location /socket.io`);
  }
  for (const f of ['nginx/frappe-multi-host.conf', 'swarm/nginx-gateway.conf']) {
    const conf = read('deploy', ...f.split('/'));
    // assert.ok rather than assert.match: a failure should not print the whole file.
    assert.ok(/^\s*hash \$rtgw_affinity_key consistent;/m.test(conf), `${f}: hashes on the affinity key`);
    assert.ok(/Set-Cookie "rtgw_affinity=\$rtgw_affinity_key;/.test(conf), `${f}: stores the affinity key in a cookie`);
    assert.ok(!/^\s*hash \$arg_sid/m.test(conf), `${f}: does not hash on the sid alone`);
  }
});

test('the image matches the chart: ports, non-root user, signal handling, health check', () => {
  const dockerfile = read('Dockerfile');
  const gw = values.gateway as Obj;
  assert.match(dockerfile, new RegExp(`^EXPOSE ${String(gw.port)} ${String(gw.opsPort)}$`, 'm'));
  assert.equal(OPTIONS.port.default, String(gw.port));
  assert.equal(OPTIONS.opsPort.default, String(gw.opsPort));
  assert.match(dockerfile, /^FROM node:20-bookworm-slim|^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
  assert.match(dockerfile, /npm ci --omit=dev/);
  assert.match(dockerfile, /^USER 1000:1000$/m);
  assert.equal((values.podSecurityContext as Obj).runAsUser, 1000);
  assert.match(dockerfile, /^ENTRYPOINT \["\/usr\/bin\/tini", "--"/m);
  assert.match(dockerfile, /^ENV NODE_ENV=production/m);
  assert.match(dockerfile, /^HEALTHCHECK [\s\S]*\/livez/m);
  assert.match(dockerfile, /^CMD \["node", "dist\/main\.js"\]$/m);
  for (const l of ['title', 'description', 'version', 'revision', 'created', 'source'])
    assert.ok(dockerfile.includes(`org.opencontainers.image.${l}=`), `OCI label org.opencontainers.image.${l}`);
});

test('.dockerignore lets in exactly what the Dockerfile copies from the context', () => {
  const dockerfile = read('Dockerfile');
  const ignore = read('.dockerignore')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  assert.equal(ignore[0], '*', 'allow-list: everything excluded first');
  const allowed = ignore.filter((l) => l.startsWith('!')).map((l) => l.slice(1).replace(/\/$/, ''));
  const copied = [...dockerfile.matchAll(/^COPY (?!--from)(?:--\S+ )*(.+) \S+$/gm)].flatMap((m) => (m[1] as string).split(/\s+/));
  assert.ok(copied.length >= 4);
  for (const c of copied) assert.ok(allowed.includes(c.replace(/\/$/, '')), `${c} is allowed by .dockerignore`);
});

test('chart timing defaults: the gateway drains before its grace ends, the pod outlives the grace', () => {
  const gw = values.gateway as Obj;
  const lifecycle = values.lifecycle as Obj;
  assert.ok(Number(gw.drainMs) < Number(gw.shutdownGraceMs));
  const derived =
    Number(lifecycle.preStopSleepSeconds) + Math.ceil(Number(gw.shutdownGraceMs) / 1000) + Number(values.terminationGraceMarginSeconds);
  assert.ok(derived > Number(gw.shutdownGraceMs) / 1000 + Number(lifecycle.preStopSleepSeconds));
  const ing = values.ingress as Obj;
  const heartbeatS = (Number(OPTIONS.pingIntervalMs.default) + Number(OPTIONS.pingTimeoutMs.default)) / 1000;
  assert.ok(Number(ing.proxyReadTimeoutSeconds) > heartbeatS && Number(ing.proxySendTimeoutSeconds) > heartbeatS);
});
