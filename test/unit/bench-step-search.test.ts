// The capacity scenario's pure helpers: the rate-step search (bench/lib/step-search.ts), driven
// by simulated targets with a known capacity, and the CPU ceiling. No timing is asserted here.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { cpuCeiling } from '../../bench/lib/cpu-ceiling';
import { StepSearch, runStepSearch, type StepOutcome, type StepSearchOptions } from '../../bench/lib/step-search';

const base: StepSearchOptions = { start: 1000, factor: 2, resolution: 0.1, granularity: 100, max: 64_000, min: 100 };

/** A target that passes up to `capacity` and fails above; a generator that gives up above `generatorLimit`. */
function simulated(capacity: number, generatorLimit = Infinity): (rate: number) => Promise<StepOutcome> {
  return (rate) => Promise.resolve(rate > generatorLimit ? 'limited' : rate <= capacity ? 'pass' : 'fail');
}

describe('step search', () => {
  test('coarse doubling then bisection ends within the resolution below the true capacity', async () => {
    const r = await runStepSearch(base, simulated(11_300));
    assert.deepEqual(
      r.steps.slice(0, 5).map((s) => s.rate),
      [1000, 2000, 4000, 8000, 16000],
    );
    assert.equal(r.boundedBy, 'fail');
    assert.ok(r.highestPass !== null && r.lowestNonPass !== null);
    assert.ok(r.highestPass <= 11_300 && r.lowestNonPass > 11_300, JSON.stringify(r));
    assert.ok(r.lowestNonPass - r.highestPass <= 0.1 * r.highestPass, JSON.stringify(r));
    // Every step's outcome is consistent with the simulated capacity and no rate is offered twice.
    for (const s of r.steps) assert.equal(s.outcome, s.rate <= 11_300 ? 'pass' : 'fail');
    assert.equal(new Set(r.steps.map((s) => s.rate)).size, r.steps.length);
  });

  test('a generator limit bounds the search and is reported as such', async () => {
    const r = await runStepSearch(base, simulated(50_000, 6_000));
    assert.equal(r.boundedBy, 'limited');
    assert.ok(r.highestPass !== null && r.highestPass <= 6_000 && r.highestPass >= 5_400, JSON.stringify(r));
  });

  test('the lowest non-pass above the result decides what bounded it', async () => {
    // Fails above 5,000, generator limited above 7,000: the fine phase ends between 4,000 and 8,000 on a fail.
    const r = await runStepSearch(base, simulated(5_000, 7_000));
    assert.equal(r.steps.find((s) => s.rate === 8000)?.outcome, 'limited');
    assert.equal(r.boundedBy, 'fail');
    assert.ok(r.highestPass !== null && r.highestPass <= 5_000 && (r.lowestNonPass ?? 0) > 5_000);
  });

  test('descends when the first step fails, and reports none when even the minimum fails', async () => {
    const low = await runStepSearch(base, simulated(300));
    assert.deepEqual(low.steps.slice(0, 3), [
      { rate: 1000, outcome: 'fail' },
      { rate: 500, outcome: 'fail' },
      { rate: 300, outcome: 'pass' },
    ]);
    assert.equal(low.highestPass, 300);
    const none = await runStepSearch(base, simulated(0));
    assert.equal(none.highestPass, null);
    assert.equal(none.steps.at(-1)?.rate, 100);
  });

  test('a pass at the maximum ends the search as a lower bound', async () => {
    const r = await runStepSearch({ ...base, max: 5000 }, simulated(1e9));
    assert.deepEqual(
      r.steps.map((s) => s.rate),
      [1000, 2000, 4000, 5000],
    );
    assert.equal(r.highestPass, 5000);
    assert.equal(r.boundedBy, 'max');
  });

  test('refuses an unexpected step and bad options', () => {
    const s = new StepSearch(base);
    assert.throws(() => s.record(2000, 'pass'), /unexpected step/);
    s.record(1000, 'pass');
    assert.equal(s.next(), 2000);
    assert.throws(() => new StepSearch({ ...base, factor: 1 }), /factor/);
    assert.throws(() => new StepSearch({ ...base, start: 50 }), /min <= start/);
  });
});

describe('CPU ceiling', () => {
  test('the cores or the busiest single process, whichever fills first', () => {
    // 10,000 deliveries; target 0.5 s over two processes (0.4 + 0.1), redis 0.1 s, generators 0.4 s.
    const r = {
      deliveries: 10_000,
      cpuByProcess: { 'primary(1)': 0.4, 'worker(2)': 0.1, 'redis(3)': 0.1 },
      gatewayCpuSec: 0.5,
      redisCpuSec: 0.1,
      generatorCpuSec: 0.4,
    };
    const c = cpuCeiling(r, 2);
    // 2 cores / 100 us per delivery = 20,000/s; the primary alone would be full at 1 / 40 us = 25,000/s.
    assert.equal(Math.round(c.sameHost), 20_000);
    // Without the generators the path costs 60 us (33,333/s on 2 cores), but the primary caps it at 25,000/s.
    assert.equal(Math.round(c.generatorsElsewhere), 25_000);
  });
});
