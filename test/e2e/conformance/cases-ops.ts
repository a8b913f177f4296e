/**
 * The ops port (README "Operations"): the publish API, /readyz, /livez, /metrics.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import os from 'node:os';
import {
  connectClient,
  EventRecorder,
  pollUntil,
  publishRedis,
  startGateway,
  startRedis,
  sumMetric,
  waitConnect,
  type PublishResult,
} from '../../harness';
import { BACKEND_PATH_CASE } from './cases-auth';
import { SITE, type ConformanceCase } from './context';
import { EVENTS_CHANNEL, WORKERS, WORKERS_PER_HOST_OF_TWO } from './topology';

interface ApiError {
  error?: string;
  message?: string;
  field?: string;
  index?: number;
}

const errorOf = (r: PublishResult): ApiError => r.body as ApiError;

/** A non-loopback IPv4 address of this machine, if it has one. */
function externalAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return undefined;
}

/** POST from a given local address (to show the gateway what a remote publisher looks like). */
function postFrom(localAddress: string, host: string, port: number, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port,
        localAddress,
        method: 'POST',
        path: '/api/v1/publish',
        headers: { 'content-type': 'application/json', connection: 'close' },
        agent: false,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

/** GET from a given local address; resolves with the status code. */
function getFrom(localAddress: string, host: string, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, localAddress, method: 'GET', path, headers: { connection: 'close' }, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

export const OPS_CASES: ConformanceCase[] = [
  {
    name: 'publish API: 401 without the token or with a wrong one, and nothing is delivered',
    async run(ctx) {
      const { main } = ctx.topo;
      const c = await ctx.connect(ctx.newUser());
      const ev = { event: 'unauthorised_publish', message: {}, namespace: SITE, room: `user:${c.user}` };
      for (const token of [null, 'wrong-token', `${main.publishToken ?? ''}x`]) {
        const r = await main.gw.publish(ev, { token });
        assert.equal(r.status, 401, JSON.stringify(r.body));
        assert.equal(typeof errorOf(r).message, 'string');
      }
      const raw = await main.gw.opsRequest('/api/v1/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Basic ${main.publishToken ?? ''}` },
        body: JSON.stringify(ev),
      });
      assert.equal(raw.status, 401);
      await ctx.notReceived([c], 'unauthorised_publish');
    },
  },
  {
    name: 'publish API: 400 naming the bad field; a batch is all or nothing',
    async run(ctx) {
      const { main } = ctx.topo;
      const c = await ctx.connect(ctx.newUser());
      const room = `user:${c.user}`;
      const bad: [unknown, string | undefined][] = [
        [{ event: 5, message: {}, namespace: SITE, room }, 'event'],
        [{ message: {}, namespace: SITE, room }, 'event'],
        [{ event: 'x', message: {}, namespace: SITE, room: 7 }, 'room'],
        [{ event: 'x', message: {}, namespace: 'a/b', room }, 'namespace'],
        [{ event: 'x', message: {}, namespace: ['site1.local'], room }, 'namespace'],
        [{ event: 'x', message: {}, room }, 'namespace'],
        ['just a string', undefined],
        [42, undefined],
      ];
      for (const [body, field] of bad) {
        const r = await main.gw.publish(body);
        assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${JSON.stringify(r.body)}`);
        if (field !== undefined) assert.equal(errorOf(r).field, field, JSON.stringify(r.body));
      }
      const malformed = await main.gw.opsRequest('/api/v1/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${main.publishToken ?? ''}` },
        body: '{"event": "x", ',
      });
      assert.equal(malformed.status, 400);
      const batch = await main.gw.publish([
        { event: 'batch_partial', message: { i: 0 }, namespace: SITE, room },
        { event: 'batch_partial', message: { i: 1 }, namespace: SITE, room: { not: 'a string' } },
      ]);
      assert.equal(batch.status, 400);
      assert.equal(errorOf(batch).index, 1);
      assert.equal(errorOf(batch).field, 'room');
      assert.equal((await main.gw.publish([])).status, 400, 'an empty batch');
      await ctx.notReceived([c], 'batch_partial');
    },
  },
  {
    name: 'publish API: 413 over GATEWAY_MAX_MESSAGE_BYTES, counted as an oversized drop',
    async run(ctx) {
      const { main } = ctx.topo;
      const c = await ctx.connect(ctx.newUser());
      const max = 1024 * 1024; // the default
      const before = await main.metric('gateway_events_dropped_total', { reason: 'oversized' });
      const big = { event: 'too_big', message: { blob: 'x'.repeat(max) }, namespace: SITE, room: `user:${c.user}` };
      const r = await main.gw.publish(big);
      assert.equal(r.status, 413, JSON.stringify(r.body).slice(0, 300));
      const inBatch = await main.gw.publish([{ event: 'too_big', message: {}, namespace: SITE, room: `user:${c.user}` }, big]);
      assert.equal(inBatch.status, 413);
      assert.equal(errorOf(inBatch).index, 1);
      assert.equal(await main.metric('gateway_events_dropped_total', { reason: 'oversized' }), before + 2);
      // Just under the limit is fine.
      const fits = { event: 'fits', message: { blob: 'y'.repeat(max - 200) }, namespace: SITE, room: `user:${c.user}` };
      assert.equal((await main.gw.publish(fits)).status, 202);
      assert.equal(((await c.rec.waitFor('fits')) as { blob: string }).blob.length, max - 200);
      await ctx.notReceived([c], 'too_big');
    },
  },
  {
    name: 'publish API: a batch is accepted and delivered in order',
    async run(ctx) {
      const { main } = ctx.topo;
      const c = await ctx.connect(ctx.newUser());
      const batch = [0, 1, 2, 3, 4].map((i) => ({ event: 'batch_item', message: { i }, namespace: SITE, room: `user:${c.user}` }));
      const r = await main.gw.publish(batch);
      assert.equal(r.status, 202);
      assert.deepEqual(r.body, { accepted: 5 });
      const got = await c.rec.waitForCount('batch_item', 5);
      assert.deepEqual(
        got.map((x) => x.args[0]),
        [0, 1, 2, 3, 4].map((i) => ({ i })),
      );
    },
  },
  {
    name: 'publish API: without GATEWAY_PUBLISH_TOKEN only loopback clients may publish',
    async run(ctx) {
      const { alt } = ctx.topo;
      const c = await ctx.connect(ctx.newUser(), { variant: alt });
      const ev = { event: 'loopback_publish', message: { n: 1 }, namespace: SITE, room: `user:${c.user}` };
      const r = await alt.gw.publish(ev, { token: null });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      assert.deepEqual(await c.rec.waitFor('loopback_publish'), { n: 1 });
      const external = externalAddress();
      if (external === undefined) {
        ctx.diagnostic('no non-loopback IPv4 address on this machine: the remote-publisher refusal is covered by unit tests only');
        return;
      }
      const status = await postFrom(external, external, alt.gw.opsPort, JSON.stringify({ ...ev, message: { n: 2 } }));
      assert.equal(status, 403);
      await ctx.notReceived([c], 'loopback_publish', (p) => (p as { n: number }).n === 2);
    },
  },
  {
    name: '/livez and /readyz answer 200 with a JSON body while healthy',
    async run(ctx) {
      for (const v of [ctx.topo.main, ctx.topo.alt]) {
        const live = await v.gw.opsRequest('/livez');
        assert.equal(live.status, 200);
        const ready = await v.gw.readyz();
        assert.equal(ready.status, 200);
        assert.equal(typeof ready.body, 'object');
        assert.equal((ready.body as { status?: string }).status, 'ready');
      }
    },
  },
  {
    name: '/metrics exposes Node default metrics and the gateway counters',
    async run(ctx) {
      const { main } = ctx.topo;
      // Activity of this case alone, so the counters below have something to count.
      const c = await ctx.connect(ctx.newUser());
      const rejectedBefore = await main.metric('gateway_client_events_rejected_total');
      c.socket.emit('doctype_subscribe', 1.5);
      c.socket.emit('ping');
      await c.rec.waitForRecord('pong');
      assert.equal((await main.gw.publish({ event: 'metrics_probe', message: {}, namespace: SITE, room: `user:${c.user}` })).status, 202);
      await c.rec.waitFor('metrics_probe');
      await main.publishRaw('{"event": "metrics_probe", "room": "website"}');
      await main.waitMetric('gateway_client_events_rejected_total', {}, (v) => v > rejectedBefore, 'the rejected client event');
      await main.waitMetric('gateway_events_dropped_total', { reason: 'no_namespace' }, (v) => v > 0, 'the dropped event');

      const res = await main.gw.opsRequest('/metrics');
      assert.equal(res.status, 200);
      assert.match(String(res.headers['content-type']), /^text\/plain/);
      // Every host's exposition (one but in two-hosts): the leader that routed the events may be any host.
      const others = await Promise.all(main.hosts.slice(1).map((h) => h.metrics()));
      const text = [res.body, ...others].join('\n');
      for (const name of ['process_cpu_user_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']) {
        assert.ok((sumMetric(text, name) ?? 0) > 0, `${name} missing`);
      }
      for (const name of ['nodejs_eventloop_lag_seconds', 'nodejs_gc_duration_seconds_count', 'process_open_fds']) {
        assert.notEqual(sumMetric(text, name), undefined, `${name} missing`);
      }
      for (const name of [
        'gateway_connections_total',
        'gateway_events_received_total',
        'gateway_events_routed_total',
        'gateway_auth_requests_total',
        'gateway_client_events_total',
        'gateway_events_dropped_total',
        'gateway_client_events_rejected_total',
        'gateway_publish_requests_total',
      ]) {
        assert.ok((sumMetric(text, name) ?? 0) > 0, `${name} should have counted this case's activity`);
      }
      for (const name of [
        'gateway_permission_checks_total',
        'gateway_app_handler_errors_total',
        'gateway_backend_request_duration_seconds',
        'gateway_connect_errors_total',
      ]) {
        assert.match(text, new RegExp(`^# TYPE ${name} `, 'm'), `${name} is not exposed`);
      }
      assert.notEqual(sumMetric(text, 'gateway_connections'), undefined);
      if (ctx.kind !== 'standalone') {
        assert.equal(sumMetric(text, 'gateway_workers_up'), ctx.kind === 'cluster' ? WORKERS : WORKERS_PER_HOST_OF_TWO * main.hosts.length);
        assert.equal(sumMetric(text, 'gateway_leader'), 1);
        assert.ok((sumMetric(text, 'gateway_events_received_total', { source: 'redis' }) ?? 0) > 0);
      } else {
        assert.ok((sumMetric(text, 'gateway_events_received_total', { source: 'api' }) ?? 0) > 0);
      }
    },
  },
  {
    name: '/readyz is 503 with a JSON reason while Redis is down, 200 after it restarts, and delivery resumes (resubscribed, no duplicates)',
    only: ['cluster'],
    async run(ctx) {
      const { frappe } = ctx.topo;
      const redis = await startRedis({ scope: ctx.scope });
      const gw = await startGateway({ scope: ctx.scope, redisUrl: redis.url, workers: WORKERS, backendUrl: frappe.url, defaultSite: SITE });
      const u = ctx.newUser();
      const socket = connectClient(gw.url, SITE, { scope: ctx.scope, cookie: u.sid, reconnection: true });
      const rec = new EventRecorder(socket);
      await waitConnect(socket, 10_000);
      const pub = redis.client();
      const admin = redis.client();
      const channel = `${gw.keyPrefix}:sio#/${SITE}#user:${u.user}#`;
      const subscribed = async (): Promise<void> => {
        await pollUntil(
          async () => {
            const [, shard] = (await admin.call('PUBSUB', 'SHARDNUMSUB', channel)) as [string, number];
            const [, events] = (await admin.call('PUBSUB', 'NUMSUB', EVENTS_CHANNEL)) as [string, number];
            const info = (await gw.cluster()) as { leader?: unknown };
            return Number(shard) >= 1 && Number(events) >= 1 && info.leader ? true : undefined;
          },
          { timeoutMs: 15_000, intervalMs: 50, description: 'the user room and events channel subscriptions, and a leader' },
        );
      };
      await subscribed();
      await publishRedis(pub, EVENTS_CHANNEL, { event: 'before_outage', message: { n: 1 }, namespace: SITE, room: `user:${u.user}` });
      await rec.waitFor('before_outage');

      await redis.kill();
      const down = await pollUntil(
        async () => {
          const r = await gw.readyz();
          return r.status === 503 ? r : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 50, description: '/readyz to answer 503' },
      );
      const body = down.body as { status?: string; reason?: string; redis?: boolean };
      assert.equal(typeof body, 'object');
      assert.equal(body.status, 'not ready');
      assert.equal(body.redis, false);
      assert.match(body.reason ?? '', /redis/i);

      await redis.restart();
      await gw.ready(15_000);
      assert.equal((await gw.readyz()).status, 200);
      await subscribed();
      await publishRedis(pub, EVENTS_CHANNEL, { event: 'after_outage', message: { n: 2 }, namespace: SITE, room: `user:${u.user}` });
      assert.deepEqual(await rec.waitFor('after_outage'), { n: 2 });
      await publishRedis(pub, EVENTS_CHANNEL, { event: 'marker', message: {}, namespace: SITE, room: `user:${u.user}` });
      await rec.waitFor('marker');
      assert.equal(rec.count('before_outage'), 1, 'events from before the outage must not be delivered again');
      assert.equal(rec.count('after_outage'), 1);
    },
  },
  BACKEND_PATH_CASE,
  {
    name: 'cluster APIs: the publish token when one is configured, loopback only without one',
    async run(ctx) {
      const { main, alt } = ctx.topo;
      const paths = ['/api/v1/cluster', `/api/v1/cluster/rooms?site=${encodeURIComponent(SITE)}`];
      for (const p of paths) {
        const none = await main.gw.opsRequest(p);
        assert.equal(none.status, 401, `${p} without a token: ${none.body}`);
        assert.equal((JSON.parse(none.body) as ApiError).error, 'GW_ERR_UNAUTHORIZED');
        const wrong = await main.gw.opsRequest(p, { headers: { authorization: 'Bearer not-the-token' } });
        assert.equal(wrong.status, 401, `${p} with a wrong token`);
        const right = await main.gw.opsRequest(p, { headers: { authorization: `Bearer ${main.publishToken ?? ''}` } });
        assert.equal(right.status, 200, `${p} with the token: ${right.body}`);
        // No token configured: loopback clients are served.
        assert.equal((await alt.gw.opsRequest(p)).status, 200, `${p} from loopback without a configured token`);
      }
      const external = externalAddress();
      if (external === undefined) {
        ctx.diagnostic('no non-loopback IPv4 address on this machine: the remote refusal of the cluster APIs is not exercised');
        return;
      }
      for (const p of paths) assert.equal(await getFrom(external, external, alt.gw.opsPort, p), 403, `${p} from ${external}`);
    },
  },
];
