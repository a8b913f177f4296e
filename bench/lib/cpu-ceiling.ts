/** Pure helper of the capacity scenario (unit-tested). */
import type { RunResult } from './common';

/**
 * A CPU-bound ceiling derived from a step's measured CPU (not a measured rate):
 * the delivery rate at which the machine's cores, or one of the target's
 * processes (each at most one core: the stock process, the leader, a worker),
 * would be full, with the generators on the same cores or elsewhere.
 */
export function cpuCeiling(
  r: Pick<RunResult, 'deliveries' | 'cpuByProcess' | 'redisCpuSec' | 'gatewayCpuSec' | 'generatorCpuSec'>,
  nproc: number,
): { sameHost: number; generatorsElsewhere: number } {
  const per = (cpuSec: number): number => cpuSec / Math.max(1, r.deliveries);
  const busiest = Math.max(...Object.values(r.cpuByProcess).map(per));
  const processCap = busiest > 0 ? 1 / busiest : Infinity;
  const path = per(r.gatewayCpuSec) + per(r.redisCpuSec);
  return {
    sameHost: Math.min(processCap, nproc / (path + per(r.generatorCpuSec))),
    generatorsElsewhere: Math.min(processCap, nproc / path),
  };
}
