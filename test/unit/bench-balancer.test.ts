import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test } from 'node:test';
import { Balancer, pickBackend } from '../../bench/lib/balancer';
import { freePort, withScope } from '../harness';

test('pickBackend: round robin from the cursor over eligible backends, skipping excluded ones', () => {
  assert.equal(pickBackend([true, true, true], 0), 0);
  assert.equal(pickBackend([true, true, true], 1), 1);
  assert.equal(pickBackend([true, true, true], 3), 0, 'the cursor wraps');
  assert.equal(pickBackend([true, false, true], 1), 2, 'not ready: skipped');
  assert.equal(pickBackend([true, true], 0, new Set([0])), 1, 'refused on this connection: skipped');
  assert.equal(pickBackend([false, false], 0), -1);
  assert.equal(pickBackend([true], 0, new Set([0])), -1);
  assert.equal(pickBackend([], 0), -1);
});

/** A TCP backend that answers every connection with its name, and a readiness endpoint we can flip. */
async function backend(name: string, scope: ReturnType<typeof withScope>) {
  let ready = true;
  const tcp = net.createServer((s) => s.end(name));
  const health = http.createServer((_req, res) => {
    res.statusCode = ready ? 200 : 503;
    res.end();
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => health.listen(0, '127.0.0.1', r));
  scope.add(async () => {
    if (tcp.listening) await new Promise((r) => tcp.close(r));
    await new Promise((r) => health.close(r));
  });
  const port = (tcp.address() as net.AddressInfo).port;
  return {
    spec: { host: '127.0.0.1', port, readyUrl: `http://127.0.0.1:${(health.address() as net.AddressInfo).port}/readyz` },
    setReady: (v: boolean) => (ready = v),
    stop: () => new Promise((r) => tcp.close(r)),
  };
}

function ask(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    s.on('data', (d) => (got += String(d)));
    s.on('close', () => resolve(got));
    s.on('error', reject);
  });
}

test('balancer: round robin, readiness 503 and refused connections skip a backend', async (t) => {
  const scope = withScope(t);
  const a = await backend('a', scope);
  const b = await backend('b', scope);
  const lb = await Balancer.start({ backends: [a.spec, b.spec], readyPollMs: 60_000 });
  scope.add(() => lb.close());

  assert.deepEqual([await ask(lb.port), await ask(lb.port), await ask(lb.port), await ask(lb.port)], ['a', 'b', 'a', 'b']);

  b.setReady(false);
  await lb.pollOnce();
  assert.deepEqual([await ask(lb.port), await ask(lb.port), await ask(lb.port)], ['a', 'a', 'a'], 'not ready: no new connections');
  assert.equal(lb.stats().backends[1]?.ready, false);

  b.setReady(true);
  await lb.pollOnce();
  await a.stop();
  // a refuses: the connection goes to b, and a is out without waiting for a probe.
  assert.deepEqual([await ask(lb.port), await ask(lb.port), await ask(lb.port)], ['b', 'b', 'b']);
  const st = lb.stats();
  assert.equal(st.backends[0]?.refused, 1, 'one refusal marked it down');
  assert.equal(st.backends[0]?.ready, false);
  assert.equal(st.noBackend, 0);
});

test('balancer: a backend is not used before its first good probe; none eligible closes the connection', async (t) => {
  const scope = withScope(t);
  const a = await backend('a', scope);
  a.setReady(false);
  const lb = await Balancer.start({ backends: [a.spec], readyPollMs: 60_000 });
  scope.add(() => lb.close());
  assert.equal(await ask(lb.port), '', 'closed at once');
  assert.equal(lb.stats().noBackend, 1);
  // A backend whose readiness endpoint is not there at all is not ready either.
  const gone = await freePort();
  const lb2 = await Balancer.start({ backends: [{ ...a.spec, readyUrl: `http://127.0.0.1:${gone}/readyz` }], readyPollMs: 60_000 });
  scope.add(() => lb2.close());
  assert.equal(lb2.stats().backends[0]?.ready, false);
});

test('balancer: bytes flow both ways and closing one side closes the other', async (t) => {
  const scope = withScope(t);
  const echo = net.createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  scope.add(() => new Promise((r) => echo.close(r)));
  const lb = await Balancer.start({ backends: [{ host: '127.0.0.1', port: (echo.address() as net.AddressInfo).port }] });
  scope.add(() => lb.close());
  const s = net.connect(lb.port, '127.0.0.1');
  const payload = Buffer.alloc(256 * 1024, 7);
  const got: Buffer[] = [];
  let n = 0;
  const done = new Promise<void>((resolve) =>
    s.on('data', (d: Buffer) => {
      got.push(d);
      n += d.length;
      if (n >= payload.length) resolve();
    }),
  );
  s.write(payload);
  await done;
  assert.ok(Buffer.concat(got).equals(payload), 'echoed intact through the proxy');
  assert.equal(lb.stats().backends[0]?.active, 1);
  const closed = new Promise((r) => s.on('close', r));
  s.end();
  await closed;
  await new Promise<void>((resolve) => {
    const check = (): void => (lb.stats().backends[0]?.active === 0 ? resolve() : void setImmediate(check));
    check();
  });
});
