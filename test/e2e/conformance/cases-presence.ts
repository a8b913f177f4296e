/**
 * docs/protocol.md sections 4 and 5: doc_open / doc_close and doc_viewers, which
 * must be right across every worker (Frappe's own server only sees its process).
 */
import assert from 'node:assert/strict';
import type { RecordedEvent } from '../../harness';
import { SITE, type CaseContext, type Client, type ConformanceCase } from './context';

interface Viewers {
  doctype: string;
  docname: string;
  users: string[];
}

const isDoc = (doctype: string, docname: string) => (p: unknown) =>
  (p as Viewers).doctype === doctype && (p as Viewers).docname === docname;

function viewerUpdates(c: Client, doctype: string, docname: string): string[][] {
  return c.rec.records('doc_viewers', isDoc(doctype, docname)).map((r: RecordedEvent) => (r.args[0] as Viewers).users);
}

/** Waits until `c` received a doc_viewers update for the document with exactly `users`. */
async function waitViewers(c: Client, doctype: string, docname: string, users: string[]): Promise<Viewers> {
  const want = JSON.stringify(users);
  return c.rec.waitFor<Viewers>('doc_viewers', (p) => isDoc(doctype, docname)(p) && JSON.stringify((p as Viewers).users) === want);
}

async function openDoc(ctx: CaseContext, c: Client, doctype: string, docname: string): Promise<void> {
  c.socket.emit('doc_open', doctype, docname);
  await c.variant.waitJoined(SITE, c.socket, `open_doc:${doctype}/${docname}`);
}

export const PRESENCE_CASES: ConformanceCase[] = [
  {
    name: 'doc_viewers: de-duplicated users in order of first opening; not sent when the only viewer caused the change; updated on doc_close and disconnect',
    async run(ctx) {
      const { frappe } = ctx.topo;
      const dt = ctx.uid('Doctype');
      const dn = 'DOC-1';
      const [ua, ub, uc] = [ctx.newUser(), ctx.newUser(), ctx.newUser()];
      for (const u of [ua, ub, uc]) frappe.allow(u.user, dt);
      // Connected in the order c, a1, b, a2, opened in the order b, a1, a2, c.
      const c = await ctx.connect(uc);
      const a1 = await ctx.connect(ua);
      const b = await ctx.connect(ub);
      // a's two tabs on different workers (cluster): de-duplication and order have to be cluster-wide.
      const a2 = await ctx.connectElsewhere(ua, [a1]);
      // b alone, and b caused it: nothing is sent.
      await openDoc(ctx, b, dt, dn);
      // a1 joins: [b, a] to both.
      await openDoc(ctx, a1, dt, dn);
      await waitViewers(b, dt, dn, [ub.user, ua.user]);
      await waitViewers(a1, dt, dn, [ub.user, ua.user]);
      // a's second tab: still [b, a] (de-duplicated), to all three.
      await openDoc(ctx, a2, dt, dn);
      for (const x of [b, a1, a2]) await waitViewers(x, dt, dn, [ub.user, ua.user]);
      // c: [b, a, c].
      await openDoc(ctx, c, dt, dn);
      for (const x of [b, a1, a2, c]) await waitViewers(x, dt, dn, [ub.user, ua.user, uc.user]);
      await ctx.barrier([a1, a2, b, c]);
      assert.deepEqual(
        viewerUpdates(b, dt, dn),
        [
          [ub.user, ua.user],
          [ub.user, ua.user],
          [ub.user, ua.user, uc.user],
        ],
        'b: no update for its own lone open, then one per change',
      );
      assert.deepEqual(viewerUpdates(a2, dt, dn), [
        [ub.user, ua.user],
        [ub.user, ua.user, uc.user],
      ]);
      for (const x of [a1, a2, b, c]) {
        for (const users of viewerUpdates(x, dt, dn))
          assert.equal(new Set(users).size, users.length, `duplicate users in ${JSON.stringify(users)}`);
      }

      // doc_close by c: [b, a].
      c.socket.emit('doc_close', dt, dn);
      for (const x of [b, a1, a2]) await waitViewers(x, dt, dn, [ub.user, ua.user]);
      await ctx.topo.main.waitLeft(SITE, c.socket, `open_doc:${dt}/${dn}`);
      // Closing one of a's tabs changes nothing in the list, but is still an update.
      a1.socket.emit('doc_close', dt, dn);
      await ctx.topo.main.waitLeft(SITE, a1.socket, `open_doc:${dt}/${dn}`);
      // Disconnecting counts as doc_close: a's last tab goes, b stays alone; a caused it, so b is told.
      const bBefore = viewerUpdates(b, dt, dn).length;
      a2.socket.disconnect();
      await waitViewers(b, dt, dn, [ub.user]);
      assert.ok(viewerUpdates(b, dt, dn).length > bBefore);
      await ctx.barrier([b, c, a1]);
      // c closed the document: it no longer hears about it.
      assert.deepEqual(viewerUpdates(c, dt, dn).at(-1), [ub.user, ua.user, uc.user]);
    },
  },
  {
    name: 'doc_viewers: a lone viewer with several tabs gets nothing; doc_open on a denied document joins nothing and sends nothing',
    async run(ctx) {
      const { frappe, main } = ctx.topo;
      const dt = ctx.uid('Doctype');
      const [ua, ub] = [ctx.newUser(), ctx.newUser()];
      frappe.allow(ua.user, dt);
      frappe.allow(ub.user, dt, 'OPEN');
      const a1 = await ctx.connect(ua);
      const a2 = await ctx.connect(ua);
      const b = await ctx.connect(ub);
      await openDoc(ctx, a1, dt, 'SECRET');
      await openDoc(ctx, a2, dt, 'SECRET');
      // b may not read SECRET: its doc_open is refused.
      const deniedBefore = await main.metric('gateway_permission_checks_total', { result: 'denied' });
      b.socket.emit('doc_open', dt, 'SECRET');
      await main.waitMetric('gateway_permission_checks_total', { result: 'denied' }, (v) => v >= deniedBefore + 1, 'the denied doc_open');
      await ctx.barrier([a1, a2, b]);
      for (const x of [a1, a2, b]) assert.deepEqual(viewerUpdates(x, dt, 'SECRET'), [], `${x.user} must receive no doc_viewers`);
      assert.ok(!(await main.roomMembers(SITE, `open_doc:${dt}/SECRET`)).flat().some((m) => m.id === b.socket.id));
      // The denied viewer is not counted: a permitted open of another document still works for b.
      await openDoc(ctx, b, dt, 'OPEN');
    },
  },
];
