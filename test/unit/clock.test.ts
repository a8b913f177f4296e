import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { every, onClockRun } from '../../src/shared/clock';

/** Resolves once `fn` has been called `n` times by the task it wraps. */
function counted(n: number): { fn: () => void; done: Promise<void>; calls: () => number } {
  let calls = 0;
  let resolve!: () => void;
  const done = new Promise<void>((r) => (resolve = r));
  return {
    fn: () => {
      calls++;
      if (calls === n) resolve();
    },
    done,
    calls: () => calls,
  };
}

describe('shared clock: periodic work of a process in shared wake-ups', () => {
  it('runs tasks whose periods divide each other in the same timer callbacks', async () => {
    let run = 0;
    const runsOf = { p20: [] as number[], p40: [] as number[], p80: [] as number[] };
    onClockRun(() => {
      run++;
    });
    const base = counted(12);
    const t20 = every(20, () => {
      base.fn();
      runsOf.p20.push(run);
    });
    const t40 = every(40, () => runsOf.p40.push(run));
    const t80 = every(80, () => runsOf.p80.push(run));
    try {
      await base.done;
    } finally {
      t20.stop();
      t40.stop();
      t80.stop();
      onClockRun(null);
    }
    // One wake-up per 20 ms point, none of their own for the 40 and 80 ms tasks.
    assert.equal(new Set(runsOf.p20).size, runsOf.p20.length, 'the 20 ms task ran once per run');
    assert.ok(runsOf.p40.length >= 4, `40 ms task ran ${runsOf.p40.length} times`);
    assert.ok(runsOf.p80.length >= 2, `80 ms task ran ${runsOf.p80.length} times`);
    for (const r of [...runsOf.p40, ...runsOf.p80])
      assert.ok(runsOf.p20.includes(r), `run ${r} of a slower task is a run of the 20 ms task`);
    // Separate timers would wake the process once per run of each task. The
    // shared clock wakes once per 20 ms point, plus the odd early fire of
    // its timer (libuv's cached loop time), which runs nothing and re-arms.
    const separate = runsOf.p20.length + runsOf.p40.length + runsOf.p80.length;
    assert.ok(run < separate, `${run} clock runs; separate timers would take ${separate}`);
  });

  it('stops a task', async () => {
    const stopped = counted(1);
    const s = every(10, stopped.fn);
    await stopped.done;
    s.stop();
    // Three runs of another 10 ms task: the stopped one would have run with each.
    const other = counted(3);
    const o = every(10, other.fn);
    await other.done;
    o.stop();
    assert.equal(stopped.calls(), 1, 'a stopped task does not run again');
  });

  it('refuses a period under 1 ms', () => {
    assert.throws(() => every(0, () => undefined), RangeError);
  });
});
