/**
 * The benchmark tool: `npm run bench -- <scenario> [--flags]`.
 * Scenarios: fanout, idle-memory, connect-storm, scaling, leader-throughput, capacity, failover, mqtt, soak, jitter, history-cost, rolling-restart, script-cost.
 * Common flags: --runs N (3), --duration S (5), --clients N, --loadgens N (2).
 * Results: a table on stdout, JSON in bench/results/.
 */
import os from 'node:os';
import { machineInfo, saveResult, type Flags } from './lib/common';
import { admissionHerd } from './scenarios/admission-herd';
import { capacity } from './scenarios/capacity';
import { connectStorm } from './scenarios/connect-storm';
import { failover } from './scenarios/failover';
import { fanout } from './scenarios/fanout';
import { historyCost } from './scenarios/history-cost';
import { idleMemory } from './scenarios/idle-memory';
import { jitter } from './scenarios/jitter';
import { junkMemory } from './scenarios/junk-memory';
import { leaderThroughput } from './scenarios/leader-throughput';
import { mqtt } from './scenarios/mqtt';
import { redisRestarts } from './scenarios/redis-restarts';
import { rollingRestart } from './scenarios/rolling-restart';
import { scaling } from './scenarios/scaling';
import { scriptCost } from './scenarios/script-cost';
import { soak } from './scenarios/soak';

const SCENARIOS: Record<string, { run: (f: Flags) => Promise<unknown>; clients: number; runs: number }> = {
  fanout: { run: fanout, clients: 2000, runs: 3 },
  'idle-memory': { run: idleMemory, clients: 10_000, runs: 3 },
  'connect-storm': { run: connectStorm, clients: 10_000, runs: 3 },
  'admission-herd': { run: admissionHerd, clients: 500, runs: 3 },
  scaling: { run: scaling, clients: 1000, runs: 3 },
  'leader-throughput': { run: leaderThroughput, clients: 1000, runs: 1 },
  capacity: { run: capacity, clients: 1000, runs: 3 },
  failover: { run: failover, clients: 200, runs: 5 },
  mqtt: { run: mqtt, clients: 1000, runs: 2 },
  soak: { run: soak, clients: 200, runs: 1 },
  'redis-restarts': { run: redisRestarts, clients: 100, runs: 1 },
  jitter: { run: jitter, clients: 200, runs: 1 },
  'junk-memory': { run: junkMemory, clients: 0, runs: 3 },
  'history-cost': { run: historyCost, clients: 1000, runs: 3 },
  'rolling-restart': { run: rollingRestart, clients: 1000, runs: 1 },
  'script-cost': { run: scriptCost, clients: 0, runs: 3 },
};

export function parseArgs(argv: readonly string[]): { scenario: string | undefined; flags: Record<string, string | true> } {
  let scenario: string | undefined;
  const flags: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      if (eq > 0) flags[a.slice(2, eq)] = a.slice(eq + 1);
      else if (i + 1 < argv.length && !(argv[i + 1] as string).startsWith('--')) flags[a.slice(2)] = argv[++i] as string;
      else flags[a.slice(2)] = true;
    } else if (scenario === undefined) scenario = a;
  }
  return { scenario, flags };
}

async function main(): Promise<void> {
  const { scenario, flags } = parseArgs(process.argv.slice(2));
  const spec = scenario ? SCENARIOS[scenario] : undefined;
  if (!scenario || !spec) {
    console.error(
      `usage: npm run bench -- <${Object.keys(SCENARIOS).join('|')}> [--runs N] [--duration S] [--clients N] [--loadgens N] [scenario flags]`,
    );
    process.exit(2);
  }
  const f: Flags = {
    ...flags,
    runs: Number(flags['runs'] ?? spec.runs),
    durationMs: Number(flags['duration'] ?? 5) * 1000,
    clients: Number(flags['clients'] ?? spec.clients),
    loadgens: Number(flags['loadgens'] ?? 2),
  };
  const machine = machineInfo();
  const started = new Date().toISOString();
  const result = await spec.run(f);
  machine['loadavgAtEnd'] = os.loadavg();
  delete machine['uptimeLoadAtEnd'];
  const file = saveResult(scenario, {
    scenario,
    started,
    finished: new Date().toISOString(),
    argv: process.argv.slice(2),
    flags: f,
    machine,
    result,
  });
  console.log(
    `\nload average start ${(machine['loadavgAtStart'] as number[]).map((x) => x.toFixed(2)).join(' ')}, end ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}; JSON: ${file}`,
  );
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
      process.exit(1);
    },
  );
}
