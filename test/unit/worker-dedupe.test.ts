/**
 * A worker's offset dedupe (src/realtime/fast-adapter.ts): a packet at or
 * below the last offset delivered on its channel (a new leader re-sending the
 * history tail on Redis Cluster) is not delivered, and is counted as a
 * duplicate, not as a dropped event (gateway_events_dropped_total alerts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { createMetrics } from '../../src/metrics/metrics';
import type { HistoryReader } from '../../src/recovery/history';
import { WorkerDelivery } from '../../src/realtime/fast-adapter';

test('a re-sent offset is counted under gateway_events_deduplicated_total{by="offset"}, not as dropped', async () => {
  const registry = new Registry();
  const metrics = createMetrics(registry, { defaults: false });
  const emitted: string[] = [];
  // Each delivered room-less packet walks the worker's namespaces once (none here).
  const delivery = new WorkerDelivery({
    metrics,
    log: pino({ level: 'silent' }),
    fastPath: false,
    history: { current: () => Promise.resolve(null) } as unknown as HistoryReader,
    gate: null,
    namespaces: () => {
      emitted.push('delivered');
      return [];
    },
    existingNamespace: () => undefined,
  });
  const packet = (n: string, offset: string) => Buffer.from(`!["ev","${n}","${offset}"]`);
  delivery.onAllSites(packet('a', '5-0'));
  delivery.onAllSites(packet('a-again', '5-0'));
  delivery.onAllSites(packet('older', '4-0'));
  delivery.onAllSites(packet('b', '6-0'));
  assert.equal(emitted.length, 2, 'only the two new offsets are delivered');

  const value = async (name: string, labels: Record<string, string>) => {
    const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
    const v = (m?.values ?? []).find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
    return v?.value ?? 0;
  };
  assert.equal(await value('gateway_events_deduplicated_total', { by: 'offset' }), 2);
  assert.equal(await value('gateway_events_dropped_total', { reason: 'duplicate_offset' }), 0);
});
