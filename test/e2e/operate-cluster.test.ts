/**
 * Operability of a cluster host (README "Operations"), on one built gateway
 * with 2 workers, in order: metrics that exist before anything happened and
 * follow Redis without /readyz, per-process lag, transports and disconnect
 * reasons, the token on the cluster APIs, refused connections in the log,
 * host counters that survive SIGKILLed workers, then Redis going away: the
 * publish API answers in time (504 while Redis hangs, 503 once it is down),
 * the log does not flood, and Ctrl-C is quick.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import {
  connectClient,
  expectConnectError,
  parsePrometheusText,
  pollUntil,
  Scope,
  startFakeFrappe,
  startGateway,
  startRedis,
  sumMetric,
  waitConnect,
  type GatewayHandle,
  type RedisServer,
} from '../harness';

const SITE = 'site1.local';
const TOKEN = 'operate-token';
const WORKERS = 2;
/** Redis connections of one host: the primary's cmd, events, health and each worker's pub, sub (room and room-less broadcasts), fast. */
const CONNECTIONS = 3 + 3 * WORKERS;

describe('operating a cluster host', () => {
  const scope = new Scope();
  let redis: RedisServer;
  let gw: GatewayHandle;
  after(() => scope.close());

  const metricsText = async (): Promise<string> => gw.metrics();
  const waitMetric = (name: string, labels: Record<string, string>, ok: (v: number | undefined) => boolean, what: string) =>
    pollUntil(
      async () => {
        const v = sumMetric(await metricsText(), name, labels);
        return ok(v) ? { v } : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 50, description: what },
    );

  before(async () => {
    const frappe = await startFakeFrappe({ scope });
    frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User' });
    redis = await startRedis({ scope });
    gw = await startGateway({
      scope,
      redisUrl: redis.url,
      backendUrl: frappe.url,
      defaultSite: SITE,
      workers: WORKERS,
      publishToken: TOKEN,
      logLevel: 'info',
      // Status (and so the cluster API's worker list) every second.
      // One site keeps its own gateway_connections label, the rest are "other".
      extraEnv: { GATEWAY_PRESENCE_TTL_MS: '3000', GATEWAY_DRAIN_MS: '300', GATEWAY_METRICS_MAX_SITES: '1' },
      // /readyz must not be what makes gateway_redis_up true.
      waitReady: false,
    });
  });

  test('gateway_redis_up turns 1 by itself (no /readyz call), every known label series exists at 0', async () => {
    await waitMetric('gateway_redis_up', {}, (v) => v === 1, 'gateway_redis_up to be 1 without any /readyz call');
    await gw.ready();
    const text = await metricsText();
    const zeroes: [string, Record<string, string>][] = [
      ['gateway_connect_errors_total', { reason: 'origin' }],
      ['gateway_connect_errors_total', { reason: 'backend' }],
      ['gateway_connect_errors_total', { reason: 'namespace' }],
      ['gateway_permission_checks_total', { result: 'denied' }],
      ['gateway_permission_checks_total', { result: 'allowed' }],
      ['gateway_auth_requests_total', { result: 'error' }],
      ['gateway_events_dropped_total', { reason: 'malformed_json' }],
      ['gateway_events_dropped_total', { reason: 'no_namespace' }],
      ['gateway_publish_requests_total', { status: '503' }],
      ['gateway_disconnects_total', { reason: 'ping timeout' }],
      ['gateway_connections_by_transport', { transport: 'websocket' }],
      ['gateway_redis_command_errors_total', { connection: 'pub' }],
      ['gateway_adapter_request_timeouts_total', { request: 'fetchSockets' }],
      ['gateway_metrics_workers_missing', {}],
    ];
    for (const [name, labels] of zeroes) assert.equal(sumMetric(text, name, labels), 0, `${name}${JSON.stringify(labels)}`);
  });

  test('lag per process and as the worst process; fd limit and start time not summed', async () => {
    const samples = parsePrometheusText(await metricsText());
    const lag = samples.filter((s) => s.name === 'gateway_eventloop_lag_seconds');
    assert.deepEqual(lag.map((s) => s.labels['process']).sort(), ['primary', 'worker-1', 'worker-2']);
    const host = samples.find((s) => s.name === 'nodejs_eventloop_lag_seconds');
    assert.ok(host, 'nodejs_eventloop_lag_seconds');
    assert.equal(host.value, Math.max(...lag.map((s) => s.value)), 'host lag is the worst process');
    const limits = readFileSync(`/proc/${gw.pid}/limits`, 'utf8');
    const maxFds = Number(/Max open files\s+(\d+)/.exec(limits)?.[1]);
    assert.equal(samples.find((s) => s.name === 'process_max_fds')?.value, maxFds, 'process_max_fds is per process, not a sum');
    const start = samples.find((s) => s.name === 'process_start_time_seconds')?.value ?? 0;
    assert.ok(start > 0 && start <= Date.now() / 1000, `process_start_time_seconds ${start}`);
  });

  test('workers are forked with MALLOC_ARENA_MAX=2 unless the environment sets it', async () => {
    const environ = (pid: number): Map<string, string> =>
      new Map(
        readFileSync(`/proc/${pid}/environ`, 'utf8')
          .split('\0')
          .filter(Boolean)
          .map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string]),
      );
    const expected = environ(gw.pid).get('MALLOC_ARENA_MAX') ?? '2';
    const info = (await gw.cluster()) as { workers: { pid: number }[] };
    assert.equal(info.workers.length, WORKERS);
    for (const w of info.workers) assert.equal(environ(w.pid).get('MALLOC_ARENA_MAX'), expected, `worker ${w.pid}`);
  });

  test('connections by transport follow the upgrade; the site label is capped; disconnects are counted by reason', async () => {
    const ws = connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', transports: ['websocket'] });
    const polling = connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', transports: ['polling'] });
    const upgrading = connectClient(gw.url, SITE, { scope, cookie: 'sid-ana' });
    await Promise.all([waitConnect(ws), waitConnect(polling), waitConnect(upgrading)]);
    await waitMetric('gateway_connections_by_transport', { transport: 'websocket' }, (v) => v === 2, 'two websocket connections');
    assert.equal(sumMetric(await metricsText(), 'gateway_connections_by_transport', { transport: 'polling' }), 1);
    assert.equal(sumMetric(await metricsText(), 'gateway_connections', { namespace: SITE }), 3);
    // Two more sites, one client each: beyond GATEWAY_METRICS_MAX_SITES=1 they are summed as "other".
    const others = ['site2.local', 'site3.local'].map((site) =>
      connectClient(gw.url, site, { scope, cookie: 'sid-ana', transports: ['websocket'], headers: { 'X-Frappe-Site-Name': site } }),
    );
    await Promise.all(others.map((c) => waitConnect(c)));
    const capped = parsePrometheusText(await metricsText()).filter((x) => x.name === 'gateway_connections');
    assert.deepEqual(
      capped.map((x) => [x.labels['namespace'], x.value]),
      [
        [SITE, 3],
        ['other', 2],
      ],
    );
    for (const s of [ws, polling, upgrading, ...others]) s.disconnect();
    await waitMetric('gateway_disconnects_total', { reason: 'client namespace disconnect' }, (v) => v === 5, 'five client disconnects');
    await waitMetric('gateway_connections_by_transport', {}, (v) => v === 0, 'no open connection');
  });

  test('the cluster APIs want the publish token', async () => {
    for (const path of ['/api/v1/cluster', `/api/v1/cluster/rooms?site=${SITE}`]) {
      assert.equal((await gw.opsRequest(path)).status, 401, path);
      assert.equal((await gw.opsRequest(path, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200, path);
    }
  });

  test('a refused connection is logged at info with reason, site and address, once per reason per interval and process', async () => {
    const from = gw.logs.length;
    for (let i = 0; i < 3; i++) {
      const bad = connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', origin: 'http://evil.example' });
      assert.equal(await expectConnectError(bad), 'Invalid origin');
    }
    const line = await gw.waitForLog((_l, j) => j?.['msg'] === 'connection refused: Invalid origin', 5000, { fromIndex: from });
    const j = JSON.parse(line) as Record<string, unknown>;
    assert.equal(j['level'], 30);
    assert.equal(j['reason'], 'origin');
    assert.equal(j['site'], SITE);
    assert.equal(typeof j['remote'], 'string');
    await waitMetric('gateway_connect_errors_total', { reason: 'origin' }, (v) => v === 3, 'three origin refusals');
    const refusals = gw.logs.slice(from).filter((l) => l.includes('connection refused: Invalid origin'));
    // Rate-limited in each worker: at most one line per worker that refused one.
    assert.ok(refusals.length >= 1 && refusals.length <= WORKERS, refusals.join('\n'));
  });

  test('a worker that misses the scrape is reported (metric and log) and its counters are carried over', async () => {
    const from = gw.logs.length;
    const c = connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', transports: ['websocket'] });
    await waitConnect(c);
    c.disconnect();
    const before = sumMetric(await metricsText(), 'gateway_connections_total') ?? 0;
    const info = (await gw.cluster()) as { workers: { pid: number }[] };
    const stopped = info.workers[0]?.pid ?? 0;
    process.kill(stopped, 'SIGSTOP');
    try {
      const text = await metricsText();
      assert.equal(sumMetric(text, 'gateway_metrics_workers_missing'), 1);
      assert.ok((sumMetric(text, 'gateway_connections_total') ?? 0) >= before, 'the stopped worker took its counts along');
      assert.equal(parsePrometheusText(text).filter((x) => x.name === 'gateway_eventloop_lag_seconds').length, WORKERS);
      await gw.waitForLog(/did not answer the metrics scrape in time/, 5000, { fromIndex: from });
    } finally {
      process.kill(stopped, 'SIGCONT');
    }
    await waitMetric('gateway_metrics_workers_missing', {}, (v) => v === 0, 'every worker answering again');
  });

  test('host counters stay monotonic when every worker is SIGKILLed', async () => {
    const clients = Array.from({ length: 4 }, () => connectClient(gw.url, SITE, { scope, cookie: 'sid-ana', transports: ['websocket'] }));
    await Promise.all(clients.map((c) => waitConnect(c)));
    for (const c of clients) c.disconnect();
    const before = parsePrometheusText(await metricsText());
    const accepted = sumMetric(before, 'gateway_connections_total') ?? 0;
    const disconnects = sumMetric(before, 'gateway_disconnects_total') ?? 0;
    assert.ok(accepted >= 4, `connections counted so far: ${accepted}`);
    const info = (await gw.cluster()) as { workers: { pid: number }[] };
    const pids = info.workers.map((w) => w.pid);
    assert.equal(pids.length, WORKERS);
    for (const pid of pids) process.kill(pid, 'SIGKILL');
    await pollUntil(
      async () => {
        const now = (await gw.cluster()) as { workers: { pid: number; nodeId: string | null }[] };
        const fresh = now.workers.filter((w) => !pids.includes(w.pid) && w.nodeId !== null);
        return fresh.length === WORKERS ? true : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, description: 'both workers respawned' },
    );
    const afterKill = parsePrometheusText(await metricsText());
    assert.equal(sumMetric(afterKill, 'gateway_worker_restarts_total'), WORKERS);
    assert.ok((sumMetric(afterKill, 'gateway_connections_total') ?? 0) >= accepted, 'gateway_connections_total went backwards');
    assert.ok((sumMetric(afterKill, 'gateway_disconnects_total') ?? 0) >= disconnects, 'gateway_disconnects_total went backwards');
    await gw.ready();
  });

  test('Redis down: gateway_redis_up 0 without /readyz, publish 504 (hung) within its timeout and 503 (down), one log line per connection, quick Ctrl-C', async () => {
    // A hung Redis (connection up, no answers): the publish deadline answers,
    // 504 and not 503: the event was sent and Redis runs it once resumed.
    redis.pause();
    try {
      const h0 = Date.now();
      const hung = await gw.publish({ event: 'hung', message: {}, namespace: SITE, room: 'all' });
      const hungMs = Date.now() - h0;
      assert.equal(hung.status, 504, JSON.stringify(hung.body));
      assert.match(JSON.stringify(hung.body), /GW_ERR_PUBLISH_UNCONFIRMED.*did not confirm within 2000 ms/);
      assert.ok(hungMs >= 1900 && hungMs < 3500, `hung publish answered after ${hungMs} ms (timeout 2000 ms)`);
    } finally {
      redis.resume();
    }
    const from = gw.logs.length;
    const port = redis.port;
    await redis.kill();
    // A listener that drops every connection: each ioredis retry is an accepted socket we can count.
    let attempts = 0;
    const sink = net.createServer((s) => {
      attempts++;
      s.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      sink.once('error', reject);
      sink.listen(port, '127.0.0.1', () => resolve());
    });
    scope.add(() => new Promise<void>((resolve) => sink.close(() => resolve())));

    await waitMetric('gateway_redis_up', {}, (v) => v === 0, 'gateway_redis_up to be 0 without any /readyz call');

    const t0 = Date.now();
    const res = await gw.publish({ event: 'lost', message: {}, namespace: SITE, room: 'all' });
    const took = Date.now() - t0;
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.ok(took < 3500, `publish answered after ${took} ms (timeout 2000 ms)`);
    // Nothing was written (the connection is down): 503, safe to retry.
    assert.match(JSON.stringify(res.body), /GW_ERR_REDIS_UNAVAILABLE.*nothing was sent/);

    // Several reconnect rounds of every connection, then count what was logged about Redis.
    await pollUntil(() => (attempts >= CONNECTIONS * 3 ? true : undefined), {
      timeoutMs: 20_000,
      intervalMs: 50,
      description: () => `3 reconnect attempts per connection (${attempts} so far)`,
    });
    const redisLines = gw.logs
      .slice(from)
      .filter((l) => /redis/i.test(l) && Number(JSON.parse(l).level) >= 30 && !/publish failed|connection refused: /.test(l));
    // "lost" for a connection that was up, "not reachable" for one still connecting when Redis went (load-dependent): one of them per connection.
    const lost = redisLines.filter((l) => /redis connection lost|redis not reachable/.test(l));
    const perConnection = new Set(
      lost.map((l) => {
        const o = JSON.parse(l) as { pid: number; connection: string };
        return `${o.pid}/${o.connection}`;
      }),
    );
    assert.equal(lost.length, CONNECTIONS, `one state-change line per connection:\n${redisLines.join('\n')}`);
    assert.equal(perConnection.size, CONNECTIONS, `each connection logged once:\n${lost.join('\n')}`);
    assert.ok(
      redisLines.length <= CONNECTIONS + 2,
      `${redisLines.length} Redis log lines for ${attempts} attempts:\n${redisLines.join('\n')}`,
    );
    const first = JSON.parse(lost[0] ?? '{}') as Record<string, unknown>;
    assert.equal(first['address'], `127.0.0.1:${port}`);
    assert.equal(typeof first['connection'], 'string');
    const ready = await gw.readyz();
    assert.equal(ready.status, 503);
    assert.match(JSON.stringify(ready.body), /redis unreachable: redis connection is down/);

    const s0 = Date.now();
    gw.signal('SIGINT');
    const exit = await gw.exited;
    const stopMs = Date.now() - s0;
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}\n${gw.logs.slice(-40).join('\n')}`);
    assert.ok(stopMs < 8000, `shutdown with Redis down took ${stopMs} ms (grace period 30000 ms)`);
  });
});
