/**
 * Configuration loading (README "Configuration", docs/protocol.md
 * section 8): environment parsing, every problem reported at once, the bench
 * config files and the precedence of GATEWAY_* variables over them.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { loadConfig, type GatewayConfig } from '../../src/config';

function ok(env: NodeJS.ProcessEnv): { config: GatewayConfig; notes: readonly string[] } {
  const r = loadConfig(env);
  if (!r.ok) assert.fail(`expected a valid configuration, got: ${r.errors.join('; ')}`);
  return r;
}

function errors(env: NodeJS.ProcessEnv): readonly string[] {
  const r = loadConfig(env);
  if (r.ok) assert.fail('expected configuration errors');
  return r.errors;
}

interface BenchFiles {
  config?: unknown;
  common?: unknown;
  /** Raw text instead of JSON. */
  commonText?: string;
}

function bench(t: TestContext, files: BenchFiles): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-unit-bench-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(path.join(dir, 'sites'));
  mkdirSync(path.join(dir, 'apps'));
  if (files.config !== undefined) writeFileSync(path.join(dir, 'config.json'), JSON.stringify(files.config));
  if (files.common !== undefined) writeFileSync(path.join(dir, 'sites', 'common_site_config.json'), JSON.stringify(files.common));
  if (files.commonText !== undefined) writeFileSync(path.join(dir, 'sites', 'common_site_config.json'), files.commonText);
  return dir;
}

describe('loadConfig: environment', () => {
  test('defaults: standalone on 9000/9090, v16 permissions, the events channel, 1 MiB messages; the result is frozen', () => {
    const { config } = ok({});
    assert.equal(config.port, 9000);
    assert.equal(config.opsPort, 9090);
    assert.equal(config.redis, null);
    assert.equal(config.workers, 1);
    assert.equal(config.permissionFlavour, 'v16');
    assert.equal(config.eventsChannel, 'events');
    assert.equal(config.maxMessageBytes, 1024 * 1024);
    assert.equal(config.backendUrl, null);
    assert.equal(config.publishToken, null);
    assert.equal(config.benchPath, null);
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.allowedOrigins));
  });

  test('only GATEWAY_* variables are read; empty values count as unset; values are trimmed', () => {
    const { config } = ok({
      PORT: '1234',
      GATEWAY_PORT: ' 9100 ',
      GATEWAY_OPS_PORT: '',
      GATEWAY_BACKEND_URL: 'http://frappe.internal:8000/',
    });
    assert.equal(config.port, 9100);
    assert.equal(config.opsPort, 9090);
    assert.equal(config.backendUrl, 'http://frappe.internal:8000', 'trailing slash removed');
  });

  test('a Redis URL selects cluster mode; GATEWAY_WORKERS is honoured there and ignored (with a note) in standalone', () => {
    const cluster = ok({ GATEWAY_REDIS_URL: 'redis://user:pw@10.0.0.5:6380/2', GATEWAY_WORKERS: '3' }).config;
    assert.equal(cluster.redis?.url, 'redis://user:pw@10.0.0.5:6380/2');
    assert.equal(cluster.redis?.mode, 'standalone');
    assert.equal(cluster.workers, 3);
    assert.ok((ok({ GATEWAY_REDIS_URL: 'rediss://r.example:6379' }).config.workers ?? 0) >= 1);
    const standalone = ok({ GATEWAY_WORKERS: '4' });
    assert.equal(standalone.config.workers, 1);
    assert.ok(standalone.notes.some((n) => n.includes('GATEWAY_WORKERS')));
  });

  for (const [value, what] of [
    ['70000', 'out of range'],
    ['0', 'zero'],
    ['-1', 'negative'],
    ['90a0', 'not a number'],
    ['9000.5', 'not an integer'],
  ] as const) {
    test(`a bad port (${what}: "${value}") is one clear error naming the variable and the value`, () => {
      const errs = errors({ GATEWAY_PORT: value });
      assert.equal(errs.length, 1);
      assert.match(errs[0] ?? '', /GATEWAY_PORT/);
      assert.ok((errs[0] ?? '').includes(`"${value}"`), errs[0]);
    });
  }

  test('bad URLs: wrong scheme or not a URL at all', () => {
    for (const [env, value] of [
      ['GATEWAY_REDIS_URL', 'http://127.0.0.1:6379'],
      ['GATEWAY_REDIS_URL', 'not a url'],
      ['GATEWAY_BACKEND_URL', 'ftp://frappe'],
      ['GATEWAY_BACKEND_URL', 'frappe.internal:8000'],
    ] as const) {
      const errs = errors({ [env]: value });
      assert.equal(errs.length, 1, `${env}=${value}: ${errs.join('; ')}`);
      assert.ok((errs[0] ?? '').includes(env), errs[0]);
    }
  });

  test('an unknown permission flavour names the accepted ones', () => {
    const errs = errors({ GATEWAY_PERMISSION_FLAVOUR: 'v14' });
    assert.equal(errs.length, 1);
    assert.match(errs[0] ?? '', /GATEWAY_PERMISSION_FLAVOUR/);
    assert.match(errs[0] ?? '', /v15/);
    assert.match(errs[0] ?? '', /v16/);
    assert.match(errs[0] ?? '', /"v14"/);
  });

  test('several problems are all reported together', () => {
    const errs = errors({
      GATEWAY_PORT: '99999',
      GATEWAY_REDIS_URL: 'http://x',
      GATEWAY_PERMISSION_FLAVOUR: 'v99',
      GATEWAY_MAX_MESSAGE_BYTES: '10',
    });
    assert.equal(errs.length, 4, errs.join('\n'));
    for (const name of ['GATEWAY_PORT', 'GATEWAY_REDIS_URL', 'GATEWAY_PERMISSION_FLAVOUR', 'GATEWAY_MAX_MESSAGE_BYTES']) {
      assert.ok(
        errs.some((e) => e.includes(name)),
        `${name} missing from ${errs.join('; ')}`,
      );
    }
  });

  test('the Socket.IO and ops ports must differ', () => {
    const errs = errors({ GATEWAY_PORT: '9100', GATEWAY_OPS_PORT: '9100' });
    assert.equal(errs.length, 1);
    assert.match(errs[0] ?? '', /GATEWAY_PORT/);
    assert.match(errs[0] ?? '', /GATEWAY_OPS_PORT/);
  });
});

describe('loadConfig: Frappe bench (config.json, then sites/common_site_config.json, then env)', () => {
  test('reads socketio_port, redis_queue, default_site and webserver_host/port; the later file wins', (t) => {
    const dir = bench(t, {
      config: { socketio_port: 9001, default_site: 'from-config-json.local', redis_queue: 'redis://127.0.0.1:11000', webserver_port: 8000 },
      common: { default_site: 'site1.local', webserver_port: 8005, webserver_host: 'web.internal' },
    });
    const { config, notes } = ok({ GATEWAY_BENCH_PATH: dir });
    assert.equal(config.port, 9001);
    assert.equal(config.defaultSite, 'site1.local');
    assert.equal(config.redis?.url, 'redis://127.0.0.1:11000');
    assert.equal(config.backendUrl, 'http://web.internal:8005');
    assert.equal(config.benchPath, dir);
    assert.equal(config.appsPath, path.join(dir, 'apps'));
    assert.ok(
      notes.some((n) => n.includes(dir)),
      'the startup notes say what was read from the bench',
    );
  });

  test('GATEWAY_* variables take precedence over every bench key', (t) => {
    const dir = bench(t, {
      config: { socketio_port: 9001, redis_queue: 'redis://127.0.0.1:11000' },
      common: { default_site: 'site1.local', webserver_port: 8005 },
    });
    const { config } = ok({
      GATEWAY_BENCH_PATH: dir,
      GATEWAY_PORT: '9100',
      GATEWAY_REDIS_URL: 'redis://redis.internal:6379',
      GATEWAY_DEFAULT_SITE: 'erp.example.com',
      GATEWAY_BACKEND_URL: 'https://erp.example.com',
    });
    assert.equal(config.port, 9100);
    assert.equal(config.redis?.url, 'redis://redis.internal:6379');
    assert.equal(config.defaultSite, 'erp.example.com');
    assert.equal(config.backendUrl, 'https://erp.example.com');
  });

  test('v14 benches: redis_socketio is the events Redis when redis_queue is absent (redis_queue wins otherwise)', (t) => {
    assert.equal(
      ok({ GATEWAY_BENCH_PATH: bench(t, { common: { redis_socketio: 'redis://127.0.0.1:12000' } }) }).config.redis?.url,
      'redis://127.0.0.1:12000',
    );
    const both = bench(t, { common: { redis_socketio: 'redis://127.0.0.1:12000', redis_queue: 'redis://127.0.0.1:11000' } });
    assert.equal(ok({ GATEWAY_BENCH_PATH: both }).config.redis?.url, 'redis://127.0.0.1:11000');
  });

  test('a bench without config.json is fine; string numbers are accepted', (t) => {
    const { config } = ok({ GATEWAY_BENCH_PATH: bench(t, { common: { socketio_port: '9002' } }) });
    assert.equal(config.port, 9002);
    assert.equal(config.redis, null);
  });

  test('a bad bench value is an error that says it came from the bench, unless the environment overrides it', (t) => {
    const dir = bench(t, { common: { socketio_port: 'abc' } });
    const errs = errors({ GATEWAY_BENCH_PATH: dir });
    assert.equal(errs.length, 1);
    assert.match(errs[0] ?? '', /GATEWAY_PORT/);
    assert.match(errs[0] ?? '', /bench/);
    assert.equal(ok({ GATEWAY_BENCH_PATH: dir, GATEWAY_PORT: '9100' }).config.port, 9100);
  });

  test('an unreadable bench is reported: not a directory, invalid JSON, not an object', (t) => {
    const missing = path.join(os.tmpdir(), `rtgw-no-such-bench-${process.pid}`);
    assert.match(errors({ GATEWAY_BENCH_PATH: missing }).join('\n'), /GATEWAY_BENCH_PATH/);
    const badJson = bench(t, { commonText: '{ "socketio_port": 9000, ' });
    const e1 = errors({ GATEWAY_BENCH_PATH: badJson });
    assert.equal(e1.length, 1);
    assert.match(e1[0] ?? '', /common_site_config\.json/);
    const notObject = bench(t, { commonText: '[1, 2]' });
    assert.match(errors({ GATEWAY_BENCH_PATH: notObject }).join('\n'), /not a JSON object/);
  });

  test('bench problems are listed together with environment problems', (t) => {
    const dir = bench(t, { commonText: 'nope' });
    const errs = errors({ GATEWAY_BENCH_PATH: dir, GATEWAY_OPS_PORT: '0', GATEWAY_PERMISSION_FLAVOUR: 'v1' });
    assert.equal(errs.length, 3, errs.join('\n'));
  });
});
