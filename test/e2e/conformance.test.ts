/**
 * Protocol conformance (docs/protocol.md sections 1-7): one table of behaviour
 * cases, run against every topology (standalone with the HTTP publish API;
 * one cluster host with 2 workers and a spawned Redis, events through
 * `PUBLISH events`; and both again with GATEWAY_FAST_PATH=off, every packet
 * on socket.io's normal emit path). Each topology's gateways are started once and shared by
 * its cases; every case uses its own users, doctypes and rooms.
 */
import { after, before, describe, test } from 'node:test';
import { Scope, withScope } from '../harness';
import { APP_CASES } from './conformance/cases-apps';
import { AUTH_CASES } from './conformance/cases-auth';
import { DELIVERY_CASES } from './conformance/cases-delivery';
import { OPS_CASES } from './conformance/cases-ops';
import { PRESENCE_CASES } from './conformance/cases-presence';
import { ROOM_CASES } from './conformance/cases-rooms';
import { makeContext, type ConformanceCase } from './conformance/context';
import { RUNS, startTopology, type Topology } from './conformance/topology';

const CASES: readonly ConformanceCase[] = [...AUTH_CASES, ...ROOM_CASES, ...DELIVERY_CASES, ...PRESENCE_CASES, ...APP_CASES, ...OPS_CASES];

for (const { label, kind, options } of RUNS) {
  describe(`conformance: ${label}`, () => {
    const scope = new Scope();
    let topo: Topology | undefined;
    after(() => scope.close());
    before(async () => {
      topo = await startTopology(kind, scope, options);
    });
    for (const c of CASES) {
      if (c.only && !c.only.includes(kind)) continue;
      test(c.name, async (t) => {
        if (!topo) throw new Error(`the ${kind} topology did not start`);
        await c.run(makeContext(topo, withScope(t), (m) => t.diagnostic(m)));
      });
    }
  });
}
