/**
 * GATEWAY_DRAIN_RATE: how long a SIGTERM drain spreads its disconnects over
 * (src/realtime/drain.ts drainPeriodMs, drainPace).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DRAIN_GRACE_MARGIN_MS, drainPace, drainPeriodMs } from '../../src/realtime/drain';

test('rate 0: the drain always lasts GATEWAY_DRAIN_MS, whatever the connection count', () => {
  const pace = drainPace({ drainMs: 10_000, drainRate: 0, shutdownGraceMs: 30_000 });
  assert.equal(drainPeriodMs(0, pace), 10_000);
  assert.equal(drainPeriodMs(1_000_000, pace), 10_000);
});

test('a rate: up to rate x drain connections keep GATEWAY_DRAIN_MS; beyond, the drain lasts connections / rate seconds', () => {
  const pace = drainPace({ drainMs: 10_000, drainRate: 200, shutdownGraceMs: 30_000 });
  assert.equal(drainPeriodMs(2000, pace), 10_000, 'exactly at the threshold');
  assert.equal(drainPeriodMs(2001, pace), 10_005, 'one connection past it');
  assert.equal(drainPeriodMs(4000, pace), 20_000);
});

test('a rate: the drain never outlasts the shutdown grace minus its margin', () => {
  const pace = drainPace({ drainMs: 10_000, drainRate: 200, shutdownGraceMs: 30_000 });
  assert.equal(pace.maxMs, 30_000 - DRAIN_GRACE_MARGIN_MS);
  assert.equal(drainPeriodMs(1_000_000, pace), 30_000 - DRAIN_GRACE_MARGIN_MS);
});

test("the primary's drain period wins over the configured one, and a grace too short for the margin keeps it", () => {
  const cfg = { drainMs: 10_000, drainRate: 100, shutdownGraceMs: 12_000 };
  assert.equal(drainPace(cfg, 500).drainMs, 500);
  assert.equal(drainPeriodMs(100_000, drainPace(cfg)), 10_000, 'grace - margin < drain: the drain itself is the bound');
});
