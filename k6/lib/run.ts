/**
 * Small helpers every scenario script uses: summary output, time left in
 * the scenario, jitter.
 */
import exec from 'k6/execution';
import { summaryOutputs } from './summary.ts';
import type { SummaryData } from './summary.ts';

/** `handleSummary` body: text on stdout and `<SUMMARY_DIR>/<scenario>-summary.{txt,json}`. */
export function writeSummary(scenario: string, data: SummaryData, dir: string, config: Record<string, unknown>): Record<string, string> {
  return summaryOutputs(data, { scenario, dir, config });
}

/** Epoch ms at which the current scenario started. */
export function scenarioStartedAt(): number {
  return exec.scenario.startTime;
}

/** Uniform random integer in [min, max]. */
export function randomBetween(min: number, max: number): number {
  if (max <= min) return min;
  return min + Math.floor(Math.random() * (max - min + 1));
}

/** Unique enough id for one test run (messages of older runs are ignored). */
export function newRunId(): string {
  return `${Date.now().toString(36)}-${Math.floor(Math.random() * 1e9).toString(36)}`;
}
