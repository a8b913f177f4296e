/**
 * Invalid configuration (README "Configuration"): the built
 * gateway prints one clear message listing every problem and exits non-zero
 * before opening any port. The ports it was given are held by the test
 * meanwhile: a gateway that tried to listen would fail differently
 * (EADDRINUSE, exit 1), which the last test shows.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { freePorts, runGatewayOnce, withScope, type RunOnceResult, type Scope } from '../harness';

const EXIT_CONFIG = 2;

/** Listens on `port` on every interface (as the gateway would) until the scope closes. */
async function hold(scope: Scope, port: number): Promise<void> {
  const server = net.createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => resolve());
  });
  scope.add(() => new Promise<void>((resolve) => server.close(() => resolve())));
}

/** Runs the gateway with `env` while its two ports are held; returns the result and the problem lines. */
async function run(t: TestContext, env: Record<string, string>): Promise<{ result: RunOnceResult; problems: string[] }> {
  const scope = withScope(t);
  const [port = 0, opsPort = 0] = await freePorts(2);
  await hold(scope, port);
  await hold(scope, opsPort);
  const result = await runGatewayOnce({ env: { GATEWAY_PORT: String(port), GATEWAY_OPS_PORT: String(opsPort), ...env } });
  const problems = result.stderr.split('\n').filter((l) => l.startsWith('  - '));
  return { result, problems };
}

function assertConfigExit(r: { result: RunOnceResult; problems: string[] }, expectedProblems: number): void {
  const { result, problems } = r;
  const out = `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`;
  assert.equal(result.code, EXIT_CONFIG, out);
  assert.equal(result.signal, null);
  assert.equal(result.stdout, '', `nothing but the problem list may be printed: ${out}`);
  assert.doesNotMatch(result.stderr, /EADDRINUSE|listening|failed to start/, out);
  const lines = result.stderr.trimEnd().split('\n');
  assert.match(lines[0] ?? '', new RegExp(`invalid configuration \\(${expectedProblems} problems?\\)`), out);
  assert.equal(problems.length, expectedProblems, out);
  assert.equal(lines.length, expectedProblems + 1, `one header and one line per problem: ${out}`);
}

describe('config errors: one clear message, non-zero exit, no port opened', () => {
  test('a bad port', async (t) => {
    const r = await run(t, { GATEWAY_PORT: '70000' });
    assertConfigExit(r, 1);
    assert.match(r.problems[0] ?? '', /GATEWAY_PORT/);
    assert.match(r.problems[0] ?? '', /70000/);
  });

  test('a bad URL (wrong scheme for Redis, not a URL for the backend)', async (t) => {
    const redis = await run(t, { GATEWAY_REDIS_URL: 'http://127.0.0.1:1' });
    assertConfigExit(redis, 1);
    assert.match(redis.problems[0] ?? '', /GATEWAY_REDIS_URL/);
    assert.match(redis.problems[0] ?? '', /redis:/);
    const backend = await run(t, { GATEWAY_BACKEND_URL: 'frappe.internal:8000' });
    assertConfigExit(backend, 1);
    assert.match(backend.problems[0] ?? '', /GATEWAY_BACKEND_URL/);
  });

  test('an unknown permission flavour names the accepted ones', async (t) => {
    const r = await run(t, { GATEWAY_PERMISSION_FLAVOUR: 'v14' });
    assertConfigExit(r, 1);
    assert.match(r.problems[0] ?? '', /GATEWAY_PERMISSION_FLAVOUR/);
    assert.match(r.problems[0] ?? '', /v15/);
    assert.match(r.problems[0] ?? '', /v16/);
    assert.match(r.problems[0] ?? '', /v14/);
  });

  test('several problems, bench ones included, are listed together', async (t) => {
    const bench = mkdtempSync(path.join(os.tmpdir(), 'rtgw-bad-bench-'));
    t.after(() => rmSync(bench, { recursive: true, force: true }));
    mkdirSync(path.join(bench, 'sites'));
    mkdirSync(path.join(bench, 'apps'));
    writeFileSync(path.join(bench, 'sites', 'common_site_config.json'), '{ "default_site": "site1.local", ');
    const r = await run(t, {
      GATEWAY_PORT: 'abc',
      GATEWAY_REDIS_URL: 'http://127.0.0.1:1',
      GATEWAY_PERMISSION_FLAVOUR: 'v99',
      GATEWAY_BENCH_PATH: bench,
    });
    assertConfigExit(r, 4);
    for (const what of [/GATEWAY_PORT/, /GATEWAY_REDIS_URL/, /GATEWAY_PERMISSION_FLAVOUR/, /common_site_config\.json/]) {
      assert.equal(r.problems.filter((p) => what.test(p)).length, 1, `${String(what)} in ${r.problems.join('\n')}`);
    }
  });

  test('control: a valid configuration does try to listen (and fails on the held ports)', async (t) => {
    const { result } = await run(t, { GATEWAY_LOG_LEVEL: 'info' });
    assert.notEqual(result.code, 0);
    assert.notEqual(result.code, EXIT_CONFIG);
    assert.match(result.stdout + result.stderr, /EADDRINUSE/);
  });
});
