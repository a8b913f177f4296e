/** The bench's reading of Redis `INFO commandstats` (bench/lib/common.ts): per-event calls and µs of each command over a run. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commandsPerEvent, parseCommandStats } from '../../bench/lib/common';

const info = (evalsha: [number, number], xadd: [number, number]): string =>
  [
    '# Commandstats',
    `cmdstat_evalsha:calls=${evalsha[0]},usec=${evalsha[1]},usec_per_call=1.00,rejected_calls=0,failed_calls=7`,
    `cmdstat_xadd:calls=${xadd[0]},usec=${xadd[1]},usec_per_call=2.00,rejected_calls=3,failed_calls=0`,
    'cmdstat_info:calls=4,usec=100,usec_per_call=25.00,rejected_calls=0,failed_calls=0',
    '',
  ].join('\r\n');

test('commandstats: calls and usec are read from their own fields, not from rejected_calls or failed_calls', () => {
  const m = parseCommandStats(info([10, 150], [100, 250]));
  assert.deepEqual(m.get('evalsha'), { calls: 10, usec: 150 });
  assert.deepEqual(m.get('xadd'), { calls: 100, usec: 250 });
  assert.equal(m.size, 3);
});

test('commandstats per event: the difference over the run, divided by the events; commands not called in between are left out', () => {
  const a = parseCommandStats(info([10, 150], [100, 250]));
  const b = parseCommandStats(info([20, 1150], [200, 550]) + 'cmdstat_spublish:calls=50,usec=75,usec_per_call=1.50\r\n');
  assert.deepEqual(commandsPerEvent(a, b, 100), {
    evalsha: { callsPerEvent: 0.1, usecPerEvent: 10 },
    xadd: { callsPerEvent: 1, usecPerEvent: 3 },
    spublish: { callsPerEvent: 0.5, usecPerEvent: 0.75 },
  });
});
