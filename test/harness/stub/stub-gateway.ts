/**
 * A stand-in for dist/main.js used only by the harness's own tests
 * (test/integration/harness-gateway.test.ts), so the gateway harness can be
 * verified without the real gateway. Reads GATEWAY_PORT / GATEWAY_OPS_PORT /
 * GATEWAY_PUBLISH_TOKEN like the gateway; STUB_* variables select behaviours.
 */
import { fork } from 'node:child_process';
import http from 'node:http';

const env = process.env;

function log(level: number, msg: string, extra: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ level, time: Date.now(), pid: process.pid, msg, ...extra })}\n`);
}

if (env['STUB_ROLE'] === 'worker') {
  // A forked worker that only idles: lets tests check that kill() reaches the whole process group.
  setInterval(() => undefined, 60_000);
} else {
  main();
}

function main(): void {
  const mode = env['STUB_MODE'] ?? 'ok';
  if (mode === 'config-error') {
    process.stderr.write('invalid configuration:\n  GATEWAY_PORT: must be a port number\n');
    process.exit(78);
  }
  if (mode === 'crash') {
    log(50, 'fatal: cannot start', { reason: 'stub crash' });
    setTimeout(() => process.exit(3), 50);
    return;
  }
  const readyAt = Date.now() + Number(env['STUB_READY_AFTER_MS'] ?? '0');
  const token = env['GATEWAY_PUBLISH_TOKEN'];
  let published = 0;
  const workers = Array.from({ length: Number(env['STUB_WORKERS'] ?? '0') }, () =>
    fork(__filename, [], { env: { ...env, STUB_ROLE: 'worker' }, execArgv: process.execArgv }),
  );

  const ops = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const json = (status: number, body: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      if (req.url === '/readyz') return json(Date.now() >= readyAt ? 200 : 503, { ready: Date.now() >= readyAt });
      if (req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
        return res.end(
          `# TYPE stub_published_total counter\nstub_published_total{route="api"} ${published}\nstub_published_total{route="redis"} 1\nstub_workers ${workers.length}\n`,
        );
      }
      if (req.url === '/api/v1/cluster') {
        const gatewayEnv = Object.fromEntries(Object.entries(env).filter(([k]) => k.startsWith('GATEWAY_')));
        return json(200, { env: gatewayEnv, nodeTestContext: env['NODE_TEST_CONTEXT'] ?? null, workers: workers.map((w) => w.pid) });
      }
      if (req.url === '/api/v1/publish' && req.method === 'POST') {
        if (token !== undefined && req.headers.authorization !== `Bearer ${token}`) return json(401, { error: 'unauthorized' });
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
        const count = Array.isArray(body) ? body.length : 1;
        published += count;
        log(30, 'published', { count });
        return json(202, { accepted: count });
      }
      json(404, { error: 'not found' });
    });
  });
  const pub = http.createServer((_req, res) => res.end('stub'));
  ops.listen(Number(env['GATEWAY_OPS_PORT']), '127.0.0.1');
  pub.listen(Number(env['GATEWAY_PORT']), '127.0.0.1', () => {
    log(30, 'listening', { port: Number(env['GATEWAY_PORT']), level_env: env['GATEWAY_LOG_LEVEL'] });
    process.stderr.write('stub stderr line\n');
  });

  process.on('SIGTERM', () => {
    log(30, 'draining');
    if (mode === 'ignore-sigterm') return;
    for (const worker of workers) worker.kill('SIGTERM');
    ops.close();
    pub.close();
    setTimeout(() => process.exit(0), 20);
  });
}
