import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parsePrometheusText, sumMetric } from '../harness/prometheus';

const TEXT = `# HELP rtgw_events_dropped_total Dropped events
# TYPE rtgw_events_dropped_total counter
rtgw_events_dropped_total{reason="malformed",worker="1"} 3
rtgw_events_dropped_total{reason="malformed",worker="2"} 4
rtgw_events_dropped_total{reason="no_namespace",worker="1"} 1
rtgw_weird{msg="a \\"quoted\\", b\\\\c\\nd"} 2 1700000000000
rtgw_connections 12
rtgw_lag_seconds_bucket{le="+Inf"} 5
rtgw_gauge NaN
`;

test('parsePrometheusText reads names, escaped labels, values and ignores timestamps', () => {
  const samples = parsePrometheusText(TEXT);
  assert.equal(samples.length, 7);
  assert.deepEqual(samples[3], { name: 'rtgw_weird', labels: { msg: 'a "quoted", b\\c\nd' }, value: 2 });
  assert.deepEqual(samples[4], { name: 'rtgw_connections', labels: {}, value: 12 });
  assert.equal(samples[5]?.labels['le'], '+Inf');
  assert.ok(Number.isNaN(samples[6]?.value));
});

test('sumMetric sums series whose labels include the given ones', () => {
  assert.equal(sumMetric(TEXT, 'rtgw_events_dropped_total'), 8);
  assert.equal(sumMetric(TEXT, 'rtgw_events_dropped_total', { reason: 'malformed' }), 7);
  assert.equal(sumMetric(TEXT, 'rtgw_events_dropped_total', { reason: 'oversized' }), undefined);
  assert.equal(sumMetric(TEXT, 'rtgw_missing'), undefined);
  assert.equal(sumMetric(TEXT, 'rtgw_connections'), 12);
});
