import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Scope, ScopeClosedError, withScope } from '../harness/scope';

test('Scope runs every closer in reverse order even when some fail, and reports the failures', async () => {
  const scope = new Scope();
  const order: string[] = [];
  scope.add(() => void order.push('a'));
  scope.add(() => {
    order.push('b');
    throw new Error('b failed');
  });
  scope.add({ close: async () => void order.push('c') });
  scope.add(async () => {
    order.push('d');
    throw new Error('d failed');
  });
  await assert.rejects(scope.close(), (err: unknown) => err instanceof AggregateError && err.errors.length === 2);
  assert.deepEqual(order, ['d', 'c', 'b', 'a']);
});

test('Scope.close is memoised and add() after close closes the resource and throws', async () => {
  const scope = new Scope();
  let closes = 0;
  scope.add(() => void closes++);
  await Promise.all([scope.close(), scope.close()]);
  await scope.close();
  assert.equal(closes, 1);
  let late = 0;
  assert.throws(() => scope.add(() => void late++), ScopeClosedError);
  assert.equal(late, 1);
});

test('withScope closes in the test after hook', async (t) => {
  let closed = false;
  await t.test('inner', (inner) => {
    withScope(inner).add(() => {
      closed = true;
    });
  });
  assert.equal(closed, true);
});
