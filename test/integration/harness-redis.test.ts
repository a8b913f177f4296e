import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { httpRequest } from '../harness/http';
import { startFakeFrappe } from '../harness/fake-frappe';
import { startRedis, startRedisCluster, startRedisSentinel } from '../harness/redis';
import { withScope } from '../harness/scope';

/** Running, and not a zombie (this machine's init does not reap orphans). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('startRedis: own port, kill awaits exit, restart comes back on the same port and clients reconnect', async (t) => {
  const scope = withScope(t);
  const redis = await startRedis({ scope });
  assert.notEqual(redis.port, 6379);
  assert.equal(redis.url, `redis://127.0.0.1:${redis.port}`);
  const client = redis.client();
  assert.equal(await client.ping(), 'PONG');
  await client.set('k', 'v');
  const firstPid = redis.pid;

  await redis.kill();
  assert.equal(alive(firstPid), false);
  assert.equal(redis.running, false);

  await redis.restart();
  assert.equal(redis.running, true);
  assert.notEqual(redis.pid, firstPid);
  // No persistence (--save "" --appendonly no): a restart starts empty.
  assert.equal(await client.get('k'), null);
  assert.equal(Number(await client.config('GET', 'port').then((r) => (r as string[])[1])), redis.port);

  await redis.stop();
  assert.equal(redis.running, false);
  await redis.restart();
  const dir = redis.dir;
  const pid = redis.pid;
  await redis.close();
  await redis.close();
  assert.equal(alive(pid), false);
  assert.equal(existsSync(dir), false);
});

test('fake Frappe answers every endpoint and records the forwarded headers', async (t) => {
  const scope = withScope(t);
  const frappe = await startFakeFrappe({ scope, installedApps: ['frappe'] });
  frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User', installed_apps: ['frappe', 'erpnext'] });
  frappe.addToken('token k:s', { user: 'api@example.com', user_type: 'System User' });
  frappe.allow('ana@example.com', 'ToDo');
  frappe.allow('ana@example.com', 'Note', 'N-1');
  frappe.deny('ana@example.com', 'ToDo', 'SECRET');

  const get = async (path: string, headers: Record<string, string>): Promise<{ status: number; body: unknown }> => {
    const res = await httpRequest(`${frappe.url}${path}`, { headers });
    let body: unknown = res.body;
    try {
      body = JSON.parse(res.body);
    } catch {
      // not JSON
    }
    return { status: res.status, body };
  };
  const ana = { cookie: 'sid=sid-ana', 'x-frappe-site-name': 'erp.example.com' };

  assert.deepEqual(await get('/api/method/frappe.realtime.get_user_info', ana), {
    status: 200,
    body: { message: { user: 'ana@example.com', user_type: 'System User', installed_apps: ['frappe', 'erpnext'] } },
  });
  // The Authorization header wins over the cookie.
  assert.deepEqual(await get('/api/method/frappe.realtime.get_user_info', { ...ana, authorization: 'token k:s' }), {
    status: 200,
    body: { message: { user: 'api@example.com', user_type: 'System User', installed_apps: ['frappe'] } },
  });
  assert.deepEqual(await get('/api/method/frappe.realtime.get_user_info', { cookie: 'sid=expired' }), {
    status: 200,
    body: { message: { user: 'Guest', user_type: 'Guest', installed_apps: ['frappe'] } },
  });
  assert.equal((await get('/api/method/frappe.realtime.get_user_info', { authorization: 'token bad:bad' })).status, 401);

  const hp = '/api/method/frappe.realtime.has_permission';
  assert.deepEqual(await get(`${hp}?doctype=ToDo&name=T-1`, ana), { status: 200, body: { message: true } });
  assert.deepEqual(await get(`${hp}?doctype=ToDo&name=SECRET`, ana), { status: 200, body: { message: false } });
  assert.deepEqual(await get(`${hp}?doctype=ToDo&name=`, ana), { status: 200, body: { message: true } });
  assert.deepEqual(await get(`${hp}?doctype=Note&name=N-1`, ana), { status: 200, body: { message: true } });
  assert.deepEqual(await get(`${hp}?doctype=Note&name=`, ana), { status: 200, body: { message: false } });
  assert.deepEqual(await get(`${hp}?doctype=ToDo&name=T-1`, { cookie: 'sid=expired' }), { status: 200, body: { message: false } });

  const doc = await get('/api/method/frappe.realtime.can_subscribe_doc?doctype=ToDo&docname=T-1', ana);
  assert.equal(doc.status, 200);
  const denied = await get('/api/method/frappe.realtime.can_subscribe_doc?doctype=ToDo&docname=SECRET', ana);
  assert.equal(denied.status, 403);
  assert.equal((denied.body as { exc_type?: string }).exc_type, 'PermissionError');
  assert.equal((await get('/api/method/frappe.realtime.can_subscribe_doctype?doctype=ToDo', ana)).status, 200);
  assert.equal((await get('/api/method/frappe.realtime.can_subscribe_doctype?doctype=Note', ana)).status, 403);
  assert.equal((await get('/api/method/frappe.client.get_list', ana)).status, 404);

  frappe.setFailure('sid-ana', 'http500');
  assert.equal((await get('/api/method/frappe.realtime.get_user_info', ana)).status, 500);
  frappe.setFailure('sid-ana', 'notjson');
  const notJson = await httpRequest(`${frappe.url}/api/method/frappe.realtime.get_user_info`, { headers: ana });
  assert.equal(notJson.status, 200);
  assert.throws(() => JSON.parse(notJson.body) as unknown);
  frappe.setFailure('sid-ana', 'hang');
  await assert.rejects(
    httpRequest(`${frappe.url}/api/method/frappe.realtime.get_user_info`, { headers: ana, timeoutMs: 200 }),
    /no response/,
  );
  // Failures target get_user_info only unless told otherwise.
  assert.equal((await get(`${hp}?doctype=ToDo&name=T-1`, ana)).status, 200);
  frappe.setFailure('sid-ana', null);

  const calls = frappe.callsTo('get_user_info');
  assert.equal(calls.length, 7);
  assert.equal(calls[0]?.headers['x-frappe-site-name'], 'erp.example.com');
  assert.equal(calls[0]?.headers.cookie, 'sid=sid-ana');
  assert.equal(calls[1]?.headers.authorization, 'token k:s');
  assert.deepEqual(frappe.callsTo('has_permission')[0]?.query, { doctype: 'ToDo', name: 'T-1' });
  assert.equal((await frappe.waitForCall('can_subscribe_doc', (r) => r.query['docname'] === 'SECRET')).method, 'GET');

  frappe.clearRequests();
  assert.equal(frappe.requests.length, 0);
  frappe.latencyMs = 150;
  const started = Date.now();
  await get('/api/method/frappe.realtime.get_user_info', ana);
  assert.ok(Date.now() - started >= 140);
});

test('startRedisCluster: three masters with all slots, usable through ioredis Cluster', async (t) => {
  const scope = withScope(t);
  const cluster = await startRedisCluster({ scope, masters: 3 });
  assert.equal(cluster.nodes.length, 3);
  assert.equal(cluster.gatewayEnv['GATEWAY_REDIS_MODE'], 'cluster');
  assert.equal(cluster.gatewayEnv['GATEWAY_REDIS_CLUSTER_NODES'], cluster.nodes.map((n) => `127.0.0.1:${n.port}`).join(','));
  const client = cluster.client();
  // Keys chosen to land on different slots/masters.
  for (const key of ['a', 'b', 'c', 'd', 'e', 'f']) await client.set(key, key.toUpperCase());
  assert.deepEqual(await Promise.all(['a', 'b', 'c', 'd', 'e', 'f'].map((k) => client.get(k))), ['A', 'B', 'C', 'D', 'E', 'F']);
  const info = String(await client.cluster('INFO'));
  assert.match(info, /cluster_state:ok/);
  assert.match(info, /cluster_known_nodes:3/);
});

test('startRedisSentinel: the sentinel fails over to the replica when the master is killed', async (t) => {
  const scope = withScope(t);
  const sentinel = await startRedisSentinel({ scope });
  assert.equal(sentinel.masterName, 'mymaster');
  assert.equal(sentinel.gatewayEnv['GATEWAY_REDIS_SENTINELS'], `127.0.0.1:${sentinel.sentinel.port}`);
  assert.deepEqual(await sentinel.currentMaster(), { host: '127.0.0.1', port: sentinel.master.port });
  const client = sentinel.client();
  await client.set('before', '1');
  // Replication is asynchronous: make sure the replica has the write before the master dies.
  assert.equal(await client.wait(1, 5000), 1);
  await sentinel.master.kill();
  const promoted = await sentinel.waitForFailover(20_000);
  assert.deepEqual(promoted, { host: '127.0.0.1', port: sentinel.replica.port });
  assert.deepEqual(await sentinel.currentMaster(), promoted);
  assert.equal(await client.get('before'), '1');
});
