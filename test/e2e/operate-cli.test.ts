/**
 * The built binary as a new user meets it (README "Command line"): --help,
 * --version, check-config and usage errors with their exit codes, secrets
 * from files, a bench path that is not a bench, startup warnings for unknown
 * variables, the version and the bench values in the startup log, a taken
 * port, and a second signal that cuts a drain short.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import {
  connectClient,
  freePorts,
  gatewayMainPath,
  repoRoot,
  runGatewayOnce,
  startFakeFrappe,
  startGateway,
  waitConnect,
  withScope,
} from '../harness';

const VERSION = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The binary with arguments and only the given GATEWAY_* variables. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('GATEWAY_') && k !== 'NODE_TEST_CONTEXT' && v !== undefined) base[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [gatewayMainPath, ...args], { env: { ...base, ...env }, timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Whether a TCP connection to host:port is accepted, or the error code. */
function tcpOutcome(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host, port }, () => {
      s.destroy();
      resolve('connected');
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

function tmpdir(t: TestContext): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-e2e-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

describe('command line', () => {
  test('--version prints package.json version, --help the commands, exit 0', async () => {
    const v = await cli(['--version']);
    assert.equal(v.code, 0);
    assert.equal(v.stdout, `${VERSION}\n`);
    const h = await cli(['--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /Usage:/);
    assert.match(h.stdout, /check-config/);
    assert.match(h.stdout, /GATEWAY_REDIS_URL/);
    assert.equal(h.stderr, '');
  });

  test('an unknown command is a usage error (exit 2) pointing at --help', async () => {
    const r = await cli(['strat']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown command or option "strat"/);
    assert.match(r.stderr, /--help/);
    assert.equal(r.stdout, '');
  });

  test('check-config: valid prints the effective configuration with secrets masked (exit 0); invalid exits 2', async (t) => {
    const dir = tmpdir(t);
    const tokenFile = path.join(dir, 'token');
    writeFileSync(tokenFile, 'file-token-value\n');
    const ok = await cli(['check-config'], {
      GATEWAY_PUBLISH_TOKEN_FILE: tokenFile,
      GATEWAY_REDIS_URL: 'redis://user:redis-password@127.0.0.1:6390/0',
      GATEWAY_WORKERS: '3',
      GATEWAY_PORTT: '1',
    });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /configuration is valid: cluster mode \(redis standalone, 3 workers\)/);
    assert.match(ok.stdout, /GATEWAY_PUBLISH_TOKEN=\*{8}\s+\(file\)/);
    assert.match(ok.stdout, /GATEWAY_REDIS_URL=redis:\/\/user:\*{8}@127\.0\.0\.1:6390\/0\s+\(env\)/);
    assert.match(ok.stdout, /GATEWAY_PORTT is not a known option and is ignored; did you mean GATEWAY_PORT\?/);
    assert.doesNotMatch(ok.stdout, /file-token-value|redis-password/);
    const bad = await cli(['check-config'], { GATEWAY_PORT: 'abc', GATEWAY_PUBLISH_TOKEN: 'x', GATEWAY_PUBLISH_TOKEN_FILE: tokenFile });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid configuration \(2 problems\)/);
    assert.match(bad.stderr, /GATEWAY_PUBLISH_TOKEN and GATEWAY_PUBLISH_TOKEN_FILE are both set/);
    assert.equal(bad.stdout, '');
  });

  test('GATEWAY_BENCH_PATH at sites/ or an empty directory: exit 2 saying what a bench is', async (t) => {
    const bench = tmpdir(t);
    mkdirSync(path.join(bench, 'sites'));
    mkdirSync(path.join(bench, 'apps'));
    writeFileSync(path.join(bench, 'sites', 'common_site_config.json'), '{}');
    const sites = await runGatewayOnce({ env: { GATEWAY_BENCH_PATH: path.join(bench, 'sites') } });
    assert.equal(sites.code, 2, sites.stdout + sites.stderr);
    assert.ok(sites.stderr.includes(`use its parent "${bench}"`), sites.stderr);
    const empty = tmpdir(t);
    const r = await runGatewayOnce({ env: { GATEWAY_BENCH_PATH: empty } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /containing sites\/ and apps\//);
  });
});

describe('startup', () => {
  test('the startup log has the version, warns about unknown variables, names the bench values (secrets masked)', async (t) => {
    const scope = withScope(t);
    const bench = tmpdir(t);
    mkdirSync(path.join(bench, 'sites'));
    mkdirSync(path.join(bench, 'apps'));
    writeFileSync(path.join(bench, 'sites', 'common_site_config.json'), JSON.stringify({ default_site: 'site1.local' }));
    const gw = await startGateway({
      scope,
      benchPath: bench,
      logLevel: 'info',
      extraEnv: { GATEWAY_WORKER: '2', GATEWAY_OPS_HOST: '127.0.0.1' },
    });
    const start = JSON.parse(await gw.waitForLog(/ starting"/)) as Record<string, unknown>;
    assert.equal(start['version'], VERSION);
    const warn = JSON.parse(await gw.waitForLog(/GATEWAY_WORKER is not a known option/)) as Record<string, unknown>;
    assert.equal(warn['level'], 40);
    assert.match(String(warn['msg']), /did you mean GATEWAY_WORKERS\?/);
    assert.match(await gw.waitForLog(/read bench config/), /GATEWAY_DEFAULT_SITE=site1\.local/);
    // GATEWAY_OPS_HOST: the ops port on loopback only, the public port on every interface.
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((a) => a?.family === 'IPv4' && !a.internal)?.address;
    if (external === undefined) {
      t.diagnostic('no non-loopback IPv4 address: GATEWAY_OPS_HOST binding not exercised');
      return;
    }
    assert.equal(await tcpOutcome(external, gw.port), 'connected');
    assert.equal(await tcpOutcome(external, gw.opsPort), 'ECONNREFUSED');
    assert.equal(await tcpOutcome('127.0.0.1', gw.opsPort), 'connected');
  });

  test('a taken ops port: one clear line naming port and variable, exit 1, no worker forked', async (t) => {
    const scope = withScope(t);
    const [port = 0, opsPort = 0, deadRedis = 0] = await freePorts(3);
    const holder = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => holder.listen({ port: opsPort, host: '0.0.0.0', exclusive: true }, () => resolve()));
    scope.add(() => new Promise<void>((resolve) => holder.close(() => resolve())));
    const r = await runGatewayOnce({
      env: {
        GATEWAY_PORT: String(port),
        GATEWAY_OPS_PORT: String(opsPort),
        GATEWAY_REDIS_URL: `redis://127.0.0.1:${deadRedis}`,
        GATEWAY_WORKERS: '2',
        GATEWAY_LOG_LEVEL: 'info',
      },
    });
    const out = r.stdout + r.stderr;
    assert.equal(r.code, 1, out);
    const fatal = out.split('\n').filter((l) => l.includes('"level":60'));
    assert.equal(fatal.length, 1, out);
    assert.match(fatal[0] ?? '', new RegExp(`port ${opsPort} is already in use \\(GATEWAY_OPS_PORT\\)`));
    assert.doesNotMatch(out, /worker ready|EPIPE|"level":50/, out);
  });

  test('standalone, pretty logs: the taken public port in one human-readable line', async (t) => {
    const scope = withScope(t);
    const [port = 0] = await freePorts(1);
    const holder = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => holder.listen({ port, host: '0.0.0.0', exclusive: true }, () => resolve()));
    scope.add(() => new Promise<void>((resolve) => holder.close(() => resolve())));
    const r = await runGatewayOnce({ env: { GATEWAY_PORT: String(port), GATEWAY_LOG_FORMAT: 'pretty', GATEWAY_LOG_LEVEL: 'info' } });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const lines = r.stdout.split('\n').filter((l) => l.trim() !== '');
    assert.ok(lines.length > 0 && lines.every((l) => !l.startsWith('{')), `pretty lines expected:\n${r.stdout}`);
    const inUse = lines.filter((l) => l.includes(`port ${port} is already in use (GATEWAY_PORT)`));
    assert.equal(inUse.length, 1, r.stdout);
    assert.match(inUse[0] ?? '', /FATAL/);
    assert.doesNotMatch(r.stdout, /ERROR|failed to start/, 'nothing but the one line about the port');
  });

  test('a second SIGTERM during the drain exits at once', async (t) => {
    const scope = withScope(t);
    const frappe = await startFakeFrappe({ scope });
    frappe.addSession('sid-ana', { user: 'ana@example.com', user_type: 'System User' });
    const gw = await startGateway({
      scope,
      backendUrl: frappe.url,
      defaultSite: 'site1.local',
      logLevel: 'info',
      extraEnv: { GATEWAY_DRAIN_MS: '20000', GATEWAY_SHUTDOWN_GRACE_MS: '30000' },
    });
    const clients = Array.from({ length: 3 }, () =>
      connectClient(gw.url, 'site1.local', { scope, cookie: 'sid-ana', transports: ['websocket'] }),
    );
    await Promise.all(clients.map((c) => waitConnect(c)));
    gw.signal('SIGTERM');
    await gw.waitForLog(/draining connections/);
    const t0 = Date.now();
    gw.signal('SIGTERM');
    const exit = await gw.exited;
    assert.equal(exit.code, 1, JSON.stringify(exit));
    assert.ok(Date.now() - t0 < 2000, `exit took ${Date.now() - t0} ms`);
    await gw.waitForLog(/second signal during shutdown: exiting now/);
  });
});
