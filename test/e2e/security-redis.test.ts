/**
 * Redis credentials and TLS from GATEWAY_REDIS_URL (SECURITY.md): an ACL user
 * and password in the URL authenticate every connection of a 2-worker host
 * (wrong ones keep it unready), and `rediss://` talks TLS to a Redis that
 * only listens on TLS, verifying the server certificate (a CA the process
 * trusts through NODE_EXTRA_CA_CERTS; an untrusted one keeps it unready).
 * Sentinel takes the same URL credentials (src/redis/connect.ts); it is not
 * spawned here.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  connectClient,
  EventRecorder,
  freePort,
  publishRedis,
  startGateway,
  startRedis,
  waitConnect,
  withScope,
  type GatewayHandle,
  type Scope,
} from '../harness';
import { SITE, sidOf, startBackend, USERS, userRoom } from './cluster-support';

/** A CA and a server certificate for 127.0.0.1, made with openssl in a temp directory. */
function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  const run = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test-ca', '-keyout', 'ca.key', '-out', 'ca.pem');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', 'server.key', '-out', 'server.csr');
  execFileSync('sh', ['-c', 'printf "subjectAltName=IP:127.0.0.1\\n" > san.ext'], { cwd: dir });
  run(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '1',
    '-extfile',
    'san.ext',
    '-out',
    'server.pem',
  );
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
}

async function delivers(gw: GatewayHandle, publish: (msg: unknown) => Promise<unknown>, user: string, scope: Scope): Promise<void> {
  const s = connectClient(gw.url, SITE, { scope, cookie: sidOf(user) });
  const rec = new EventRecorder(s);
  await waitConnect(s);
  await publish({ event: 'via_acl', message: 1, namespace: SITE, room: userRoom(user) });
  assert.equal(await rec.waitFor('via_acl'), 1);
}

test('Redis ACL user and password from the URL; rediss:// with certificate verification', async (t) => {
  const scope = withScope(t);
  const dir = mkdtempSync(join(tmpdir(), 'rtgw-tls-'));
  scope.add(() => rmSync(dir, { recursive: true, force: true }));
  const certs = makeCerts(dir);
  const tlsPort = await freePort();
  const redis = await startRedis({
    scope,
    args: [
      '--tls-port',
      String(tlsPort),
      '--tls-cert-file',
      certs.cert,
      '--tls-key-file',
      certs.key,
      '--tls-ca-cert-file',
      certs.ca,
      '--tls-auth-clients',
      'no',
    ],
  });
  const admin = redis.client();
  await admin.call('ACL', 'SETUSER', 'gateway', 'on', '>s3cret:pw', '~*', '&*', '+@all');
  // Everyone else must authenticate: the gateway cannot be using the default user.
  await admin.call('ACL', 'SETUSER', 'default', 'on', '>admin-only', '~*', '&*', '+@all');
  await admin.auth('admin-only');
  const backend = await startBackend(scope);
  const publish = (msg: unknown): Promise<unknown> => publishRedis(admin, 'events', msg);

  // Plain TCP, ACL credentials (percent-encoded in the URL).
  const plain = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 2,
    redisUrl: `redis://gateway:${encodeURIComponent('s3cret:pw')}@127.0.0.1:${redis.port}`,
  });
  await delivers(plain, publish, USERS[0], scope);
  const clients = (await admin.call('CLIENT', 'LIST')) as string;
  assert.ok(/user=gateway/.test(clients), 'the gateway connected as the ACL user');

  // Wrong password: never ready.
  const wrong = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 1,
    redisUrl: `redis://gateway:wrong@127.0.0.1:${redis.port}`,
    waitReady: false,
  });
  await assert.rejects(wrong.ready(3000));

  // TLS port only, certificate verified against a CA the process trusts.
  const tls = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 2,
    redisUrl: `rediss://gateway:${encodeURIComponent('s3cret:pw')}@127.0.0.1:${tlsPort}`,
    env: { NODE_EXTRA_CA_CERTS: certs.ca },
  });
  await delivers(tls, publish, USERS[1], scope);

  // The same URL without trusting the CA: the certificate is refused, never ready.
  const untrusted = await startGateway({
    scope,
    backendUrl: backend.url,
    defaultSite: SITE,
    workers: 1,
    redisUrl: `rediss://gateway:${encodeURIComponent('s3cret:pw')}@127.0.0.1:${tlsPort}`,
    waitReady: false,
  });
  await assert.rejects(untrusted.ready(3000));
});
