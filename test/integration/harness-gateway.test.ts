import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runGatewayOnce, startGateway, type StartGatewayOptions } from '../harness/gateway';
import { withScope } from '../harness/scope';

// The real gateway may not be built yet: these tests drive a stub with the same env/ops contract.
const stub: Pick<StartGatewayOptions, 'mainPath' | 'nodeArgs'> = {
  mainPath: path.join(__dirname, '..', 'harness', 'stub', 'stub-gateway.ts'),
  nodeArgs: ['--import', 'tsx'],
};

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

async function allDeadWithin(pids: number[], ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (pids.some(alive)) {
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return true;
}

const saved: Record<string, string | undefined> = {};
before(() => {
  for (const key of ['GATEWAY_REDIS_URL', 'GATEWAY_LEAKED', 'GATEWAY_LOG_LEVEL']) saved[key] = process.env[key];
  process.env['GATEWAY_REDIS_URL'] = 'redis://127.0.0.1:6379';
  process.env['GATEWAY_LEAKED'] = 'yes';
  process.env['GATEWAY_LOG_LEVEL'] = 'trace';
});
after(() => {
  for (const [key, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
});

test('startGateway: waits for /readyz, passes only its own GATEWAY_* env, captures logs, reads ops endpoints', async (t) => {
  const scope = withScope(t);
  const gw = await startGateway({
    ...stub,
    scope,
    backendUrl: 'http://127.0.0.1:1',
    defaultSite: 'site1.local',
    publishToken: 'secret',
    workers: 2,
    extraEnv: { STUB_READY_AFTER_MS: '300' },
  });
  assert.equal(gw.url, `http://127.0.0.1:${gw.port}`);
  assert.equal(gw.opsUrl, `http://127.0.0.1:${gw.opsPort}`);
  const cluster = (await gw.cluster()) as { env: Record<string, string>; nodeTestContext: string | null };
  assert.deepEqual(cluster.env, {
    GATEWAY_PORT: String(gw.port),
    GATEWAY_OPS_PORT: String(gw.opsPort),
    GATEWAY_WORKERS: '2',
    GATEWAY_BACKEND_URL: 'http://127.0.0.1:1',
    GATEWAY_DEFAULT_SITE: 'site1.local',
    GATEWAY_PUBLISH_TOKEN: 'secret',
    GATEWAY_KEY_PREFIX: gw.keyPrefix,
    GATEWAY_LOG_LEVEL: 'warn',
  });
  assert.deepEqual(cluster.env, gw.gatewayEnv);
  assert.equal(cluster.nodeTestContext, null);

  assert.match(await gw.waitForLog(/"msg":"listening"/), /listening/);
  assert.equal(await gw.waitForLog((line) => line === 'stub stderr line'), 'stub stderr line');
  const mark = gw.logs.length;
  assert.deepEqual(await gw.publish([{ event: 'a' }, { event: 'b' }]), { status: 202, body: { accepted: 2 } });
  assert.equal((await gw.publish({ event: 'a' }, { token: null })).status, 401);
  assert.equal((await gw.publish({ event: 'a' }, { token: 'wrong' })).status, 401);
  await gw.waitForLog((_line, json) => json?.['msg'] === 'published' && json['count'] === 2, 5000, { fromIndex: mark });
  assert.equal(gw.jsonLogs().filter((l) => l['msg'] === 'published').length, 1);

  assert.equal(await gw.metricValue('stub_published_total', { route: 'api' }), 2);
  assert.equal(await gw.metricValue('stub_published_total'), 3);
  assert.equal(await gw.metricValue('stub_nothing'), undefined);
  assert.match(await gw.metrics(), /# TYPE stub_published_total counter/);

  const exit = await gw.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.deepEqual(await gw.exited, exit);
  await gw.close();
});

test('startGateway: hosts of one cluster share keyPrefix; each default prefix is unique', async (t) => {
  const scope = withScope(t);
  const [a, b, c] = await Promise.all([
    startGateway({ ...stub, scope, keyPrefix: 'shared-prefix' }),
    startGateway({ ...stub, scope, keyPrefix: 'shared-prefix' }),
    startGateway({ ...stub, scope, env: { GATEWAY_LOG_LEVEL: 'debug' } }),
  ]);
  assert.equal(a.gatewayEnv['GATEWAY_KEY_PREFIX'], 'shared-prefix');
  assert.equal(b.gatewayEnv['GATEWAY_KEY_PREFIX'], 'shared-prefix');
  assert.notEqual(c.keyPrefix, 'shared-prefix');
  assert.equal(c.gatewayEnv['GATEWAY_LOG_LEVEL'], 'debug');
  assert.equal(c.gatewayEnv['GATEWAY_WORKERS'], undefined);
  assert.equal(new Set([a.port, b.port, c.port, a.opsPort, b.opsPort, c.opsPort]).size, 6);
});

test('startGateway: rejects with the exit code and last log lines when the process dies before ready', async (t) => {
  const scope = withScope(t);
  await assert.rejects(startGateway({ ...stub, scope, extraEnv: { STUB_MODE: 'crash' } }), (err: Error) => {
    assert.match(err.message, /exited \(code 3/);
    assert.match(err.message, /fatal: cannot start/);
    return true;
  });
});

test('startGateway: kill() takes the whole process group down, stop() falls back to SIGKILL', async (t) => {
  const scope = withScope(t);
  const gw = await startGateway({ ...stub, scope, extraEnv: { STUB_WORKERS: '2' } });
  const { workers } = (await gw.cluster()) as { workers: number[] };
  assert.equal(workers.length, 2);
  assert.ok(workers.every(alive));
  assert.deepEqual(await gw.kill(), { code: null, signal: 'SIGKILL' });
  // One kill(2) reaches the whole group, but each process dies on its own schedule: the primary's exit can be
  // seen a moment before a worker's. No event announces a non-child's death, so its state is polled, bounded.
  assert.ok(await allDeadWithin(workers, 2000), 'forked workers must die with the primary');

  const stubborn = await startGateway({ ...stub, scope, extraEnv: { STUB_MODE: 'ignore-sigterm' } });
  const exit = await stubborn.stop(300);
  assert.equal(exit.signal, 'SIGKILL');
  assert.ok(stubborn.logs.some((l) => l.includes('draining')));
});

test('runGatewayOnce: returns code and output of a gateway that exits; kills one that does not', async () => {
  const result = await runGatewayOnce({ ...stub, env: { STUB_MODE: 'config-error', GATEWAY_PORT: 'nope' } });
  assert.equal(result.code, 78);
  assert.match(result.stderr, /GATEWAY_PORT: must be a port number/);
  assert.equal(result.stdout, '');
  await assert.rejects(runGatewayOnce({ ...stub, timeoutMs: 1500 }), /did not exit within 1500 ms/);
});

test('startGateway and runGatewayOnce explain a missing build', async () => {
  const mainPath = path.join(__dirname, 'no-such-dist', 'main.js');
  await assert.rejects(startGateway({ mainPath }), /run npm run build/);
  await assert.rejects(runGatewayOnce({ mainPath }), /run npm run build/);
});
