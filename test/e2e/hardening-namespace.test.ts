/**
 * Deaf clients: a client that gives up its handshake while another client of
 * the same site is still being authenticated must not take the site's
 * namespace down with it; the second client must then be reachable by
 * room-less events and listed by the rooms API.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connectClient,
  EventRecorder,
  publishRedis,
  startGateway,
  startRedis,
  waitConnect,
  withScope,
  type GatewayHandle,
} from '../harness';
import { newKeyPrefix, SITE, sidOf, startBackend, USERS, userRoom } from './cluster-support';

const AUTH_LATENCY_MS = 1500;

for (const mode of ['standalone', 'cluster'] as const) {
  test(`${mode}: a handshake abandoned while another is authenticated leaves the site namespace open for the other`, async (t) => {
    const scope = withScope(t);
    const backend = await startBackend(scope);
    let gw: GatewayHandle;
    let publish: (event: string, message: unknown) => Promise<unknown>;
    if (mode === 'cluster') {
      const redis = await startRedis({ scope });
      gw = await startGateway({
        scope,
        redisUrl: redis.url,
        backendUrl: backend.url,
        defaultSite: SITE,
        workers: 1,
        keyPrefix: newKeyPrefix(),
      });
      publish = (event, message) => publishRedis(redis.client(), 'events', { event, message, namespace: SITE, room: null });
    } else {
      gw = await startGateway({ scope, backendUrl: backend.url, defaultSite: SITE });
      publish = (event, message) => gw.publish({ event, message, namespace: SITE, room: null });
    }
    backend.latencyMs = AUTH_LATENCY_MS;
    const quitter = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[0]) });
    await backend.waitForCall('get_user_info', (r) => r.headers['cookie'] === `sid=${sidOf(USERS[0])}`);
    const stayer = connectClient(gw.url, SITE, { scope, cookie: sidOf(USERS[1]) });
    const rec = new EventRecorder(stayer);
    await backend.waitForCall('get_user_info', (r) => r.headers['cookie'] === `sid=${sidOf(USERS[1])}`);
    quitter.disconnect();
    await waitConnect(stayer, AUTH_LATENCY_MS * 4);
    backend.latencyMs = 0;

    await publish('roomless_after', { n: 1 });
    assert.deepEqual(await rec.waitFor('roomless_after'), { n: 1 });
    const res = await gw.opsRequest(`/api/v1/cluster/rooms?site=${SITE}&room=${encodeURIComponent(userRoom(USERS[1]))}`);
    assert.equal(res.status, 200);
    assert.match(res.body, new RegExp(stayer.id ?? 'no-id'), `the rooms API lists the socket: ${res.body}`);
  });
}
