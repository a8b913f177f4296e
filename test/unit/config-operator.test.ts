/**
 * The operator-facing parts of configuration loading: warnings for unknown
 * GATEWAY_* variables (with the closest known name), secrets from *_FILE,
 * masking, bench path validation, full origins in GATEWAY_ALLOWED_ORIGINS,
 * sentinel credentials and the new options.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { loadConfig, OPTIONS, type LoadResult } from '../../src/config';
import { maskValue } from '../../src/config/mask';
import { closestOption, editDistance, unknownVariableWarnings } from '../../src/config/suggest';
import { authenticate } from '../../src/frappe/auth';
import type { FrappeBackend } from '../../src/frappe/backend';

type Ok = Extract<LoadResult, { ok: true }>;

function ok(env: NodeJS.ProcessEnv): Ok {
  const r = loadConfig(env);
  if (!r.ok) assert.fail(`expected a valid configuration, got: ${r.errors.join('; ')}`);
  return r;
}

function errors(env: NodeJS.ProcessEnv): readonly string[] {
  const r = loadConfig(env);
  if (r.ok) assert.fail('expected configuration errors');
  return r.errors;
}

function tmpdir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-unit-operate-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('unknown GATEWAY_* variables', () => {
  test('edit distance', () => {
    assert.equal(editDistance('', ''), 0);
    assert.equal(editDistance('abc', 'abc'), 0);
    assert.equal(editDistance('GATEWAY_PORTT', 'GATEWAY_PORT'), 1);
    assert.equal(editDistance('kitten', 'sitting'), 3);
    assert.equal(editDistance('', 'abc'), 3);
  });

  test('typos and truncations get the closest known name', () => {
    assert.equal(closestOption('GATEWAY_WORKER'), 'GATEWAY_WORKERS');
    assert.equal(closestOption('GATEWAY_PORTT'), 'GATEWAY_PORT');
    assert.equal(closestOption('GATEWAY_REDIS'), 'GATEWAY_REDIS_URL');
    assert.equal(closestOption('GATEWAY_LOGLEVEL'), 'GATEWAY_LOG_LEVEL');
    assert.equal(closestOption('GATEWAY_COMPLETELY_DIFFERENT_THING'), undefined);
  });

  test('one warning per unknown variable, naming it and the suggestion; known, internal and *_FILE of secrets are silent', () => {
    const env = {
      GATEWAY_WORKER: '2',
      GATEWAY_PORTT: '1234',
      GATEWAY_REDIS: 'redis://x',
      GATEWAY_PORT: '9000',
      GATEWAY_INTERNAL_CONFIG: '{}',
      GATEWAY_INTERNAL_SLOT: '0',
      GATEWAY_PUBLISH_TOKEN_FILE: '/run/secrets/token',
      GATEWAY_SOCKET_SECRET_FILE: '/run/secrets/s',
      GATEWAY_REDIS_URL_FILE: '/run/secrets/u',
      GATEWAY_REDIS_SENTINEL_PASSWORD_FILE: '/run/secrets/p',
      PATH: '/usr/bin',
    };
    const w = unknownVariableWarnings(env);
    assert.equal(w.length, 3, w.join('\n'));
    assert.match(w.find((l) => l.startsWith('GATEWAY_WORKER ')) ?? '', /did you mean GATEWAY_WORKERS\?/);
    assert.match(w.find((l) => l.startsWith('GATEWAY_PORTT ')) ?? '', /did you mean GATEWAY_PORT\?/);
    assert.match(w.find((l) => l.startsWith('GATEWAY_REDIS ')) ?? '', /did you mean GATEWAY_REDIS_URL\?/);
    // *_FILE is only known for secrets.
    assert.equal(unknownVariableWarnings({ GATEWAY_PORT_FILE: '/x' }).length, 1);
  });

  test('loadConfig reports them as warnings, not errors', () => {
    const r = ok({ GATEWAY_WORKER: '2' });
    assert.deepEqual(r.warnings, ['GATEWAY_WORKER is not a known option and is ignored; did you mean GATEWAY_WORKERS?']);
  });
});

describe('secrets from *_FILE', () => {
  const secrets = Object.values(OPTIONS).filter((o) => 'secret' in o && o.secret);

  test('every secret option can be read from a file', () => {
    assert.deepEqual(secrets.map((s) => s.env).sort(), [
      'GATEWAY_MQTT_PASSWORD',
      'GATEWAY_PUBLISH_TOKEN',
      'GATEWAY_REDIS_SENTINEL_PASSWORD',
      'GATEWAY_REDIS_URL',
      'GATEWAY_SOCKET_SECRET',
    ]);
  });

  test('the file content is the value, one trailing newline trimmed', (t) => {
    const dir = tmpdir(t);
    const file = (name: string, text: string): string => {
      const p = path.join(dir, name);
      writeFileSync(p, text);
      return p;
    };
    const r = ok({
      GATEWAY_PUBLISH_TOKEN_FILE: file('token', 'tok-123\n'),
      GATEWAY_SOCKET_SECRET_FILE: file('secret', 'sec ret\r\n'),
      GATEWAY_REDIS_URL_FILE: file('url', 'redis://:pw@10.0.0.5:6380/2\n'),
      GATEWAY_REDIS_MODE: 'sentinel',
      GATEWAY_REDIS_SENTINELS: 's1:26379',
      GATEWAY_REDIS_SENTINEL_USERNAME: 'sentinel-user',
      GATEWAY_REDIS_SENTINEL_PASSWORD_FILE: file('spw', 'sentinel-pw'),
    });
    assert.equal(r.config.publishToken, 'tok-123');
    assert.equal(r.config.socketSecret, 'sec ret');
    assert.equal(r.config.redis?.url, 'redis://:pw@10.0.0.5:6380/2');
    assert.equal(r.config.redis?.sentinelUsername, 'sentinel-user');
    assert.equal(r.config.redis?.sentinelPassword, 'sentinel-pw');
    const token = r.effective.find((e) => e.env === 'GATEWAY_PUBLISH_TOKEN');
    assert.deepEqual(token, { env: 'GATEWAY_PUBLISH_TOKEN', value: '********', source: 'file' });
  });

  test('both set, an unreadable file or an empty file is an error naming the variable', (t) => {
    const dir = tmpdir(t);
    const p = path.join(dir, 'token');
    writeFileSync(p, 'x\n');
    const both = errors({ GATEWAY_PUBLISH_TOKEN: 'x', GATEWAY_PUBLISH_TOKEN_FILE: p });
    assert.equal(both.length, 1);
    assert.match(both[0] ?? '', /GATEWAY_PUBLISH_TOKEN and GATEWAY_PUBLISH_TOKEN_FILE are both set/);
    const missing = errors({ GATEWAY_SOCKET_SECRET_FILE: path.join(dir, 'nope') });
    assert.match(missing[0] ?? '', /GATEWAY_SOCKET_SECRET_FILE: cannot read .*nope/);
    writeFileSync(path.join(dir, 'empty'), '\n');
    assert.match(errors({ GATEWAY_SOCKET_SECRET_FILE: path.join(dir, 'empty') })[0] ?? '', /is empty/);
  });
});

describe('masking', () => {
  test('secrets are masked; a Redis URL keeps all but its password', () => {
    assert.equal(maskValue(OPTIONS.publishToken, 'abc'), '********');
    assert.equal(maskValue(OPTIONS.redisUrl, 'redis://user:pw@h:6379/1'), 'redis://user:********@h:6379/1');
    assert.equal(maskValue(OPTIONS.redisUrl, 'redis://h:6379'), 'redis://h:6379');
    assert.equal(maskValue(OPTIONS.port, '9000'), '9000');
  });

  test('effective configuration masks secrets and names the source', () => {
    const r = ok({ GATEWAY_PUBLISH_TOKEN: 'super-secret', GATEWAY_REDIS_URL: 'redis://:pw@h:1', GATEWAY_PORT: '9100' });
    const text = JSON.stringify(r.effective);
    assert.doesNotMatch(text, /super-secret|:pw@/);
    assert.deepEqual(
      r.effective.find((e) => e.env === 'GATEWAY_PORT'),
      { env: 'GATEWAY_PORT', value: '9100', source: 'env' },
    );
    assert.equal(r.effective.find((e) => e.env === 'GATEWAY_OPS_PORT')?.source, 'default');
  });
});

describe('GATEWAY_BENCH_PATH validation', () => {
  const bench = (t: TestContext, dirs: string[]): string => {
    const dir = tmpdir(t);
    for (const d of dirs) mkdirSync(path.join(dir, d), { recursive: true });
    return dir;
  };

  test('an empty directory is an error saying what a bench contains', (t) => {
    const dir = bench(t, []);
    const e = errors({ GATEWAY_BENCH_PATH: dir });
    assert.equal(e.length, 1);
    assert.match(e[0] ?? '', /sites\/ and apps\//);
    assert.match(e[0] ?? '', /has no sites\/ and apps\//);
  });

  test('pointing at sites/ suggests its parent', (t) => {
    const dir = bench(t, ['sites', 'apps']);
    writeFileSync(path.join(dir, 'sites', 'common_site_config.json'), '{}');
    const e = errors({ GATEWAY_BENCH_PATH: path.join(dir, 'sites') });
    assert.equal(e.length, 1);
    assert.match(e[0] ?? '', /looks like its sites\/ directory/);
    assert.ok((e[0] ?? '').includes(`use its parent "${dir}"`), e[0]);
  });

  test('a bench with sites/ and apps/ is accepted; the note names variables and values, secrets masked', (t) => {
    const dir = bench(t, ['sites', 'apps']);
    writeFileSync(
      path.join(dir, 'sites', 'common_site_config.json'),
      JSON.stringify({ default_site: 'site1.local', redis_queue: 'redis://:benchpw@127.0.0.1:11000', socketio_port: 9123 }),
    );
    const r = ok({ GATEWAY_BENCH_PATH: dir, GATEWAY_PORT: '9200' });
    assert.equal(r.config.defaultSite, 'site1.local');
    const note = r.notes.find((n) => n.startsWith('read bench config')) ?? '';
    assert.match(note, /GATEWAY_DEFAULT_SITE=site1\.local/);
    assert.match(note, /GATEWAY_REDIS_URL=redis:\/\/:\*{8}@127\.0\.0\.1:11000/);
    assert.match(note, /GATEWAY_PORT=9123 \(overridden by the environment\)/);
    assert.doesNotMatch(note, /benchpw/);
  });
});

describe('GATEWAY_ALLOWED_ORIGINS with full origins', () => {
  const backend = {
    getUserInfo: async () => ({ info: { user: 'Guest', user_type: 'Guest', installed_apps: [] }, cached: false }),
  } as unknown as FrappeBackend;
  const connect = (allowed: readonly string[], origin: string) =>
    authenticate(
      { namespace: '/site1.local', headers: { host: '127.0.0.1:9000', origin, cookie: 'sid=abc' } },
      { defaultSite: 'site1.local', allowedOrigins: allowed },
      backend,
    );

  test('a full origin matches scheme, host and port exactly', async () => {
    const allowed = ok({ GATEWAY_ALLOWED_ORIGINS: 'http://Dashboard.local:5173, admin.example' }).config.allowedOrigins;
    assert.deepEqual(allowed, ['http://dashboard.local:5173', 'admin.example']);
    assert.equal((await connect(allowed, 'http://dashboard.local:5173')).ok, true);
    assert.equal((await connect(allowed, 'http://dashboard.local:5174')).ok, false);
    assert.equal((await connect(allowed, 'https://dashboard.local:5173')).ok, false);
    // A bare hostname keeps matching any scheme and port.
    assert.equal((await connect(allowed, 'https://admin.example:8443')).ok, true);
    assert.equal((await connect(allowed, 'http://other.example')).ok, false);
  });

  test('default ports are normalised; paths and junk are configuration errors', async () => {
    const allowed = ok({ GATEWAY_ALLOWED_ORIGINS: 'https://erp.example:443' }).config.allowedOrigins;
    assert.deepEqual(allowed, ['https://erp.example']);
    assert.equal((await connect(allowed, 'https://erp.example')).ok, true);
    const e = errors({ GATEWAY_ALLOWED_ORIGINS: 'http://x.example/app, not a host' });
    assert.equal(e.length, 2);
    assert.match(e[0] ?? '', /without path/);
    assert.match(e[1] ?? '', /must be a hostname or an origin/);
  });
});

describe('new options', () => {
  test('defaults: ops host follows GATEWAY_HOST, publish timeout 2 s, 100 sites, auto log format', () => {
    const c = ok({ GATEWAY_HOST: '10.1.2.3' }).config;
    assert.equal(c.opsHost, '10.1.2.3');
    assert.equal(c.publishTimeoutMs, 2000);
    assert.equal(c.metricsMaxSites, 100);
    assert.equal(c.logFormat, 'auto');
    assert.equal(ok({ GATEWAY_HOST: '10.1.2.3', GATEWAY_OPS_HOST: '127.0.0.1' }).config.opsHost, '127.0.0.1');
    assert.match(errors({ GATEWAY_LOG_FORMAT: 'xml' })[0] ?? '', /GATEWAY_LOG_FORMAT must be one of auto, pretty, json/);
  });
});
