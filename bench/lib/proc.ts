/**
 * /proc sampling: CPU (utime + stime) and RSS of the processes under test.
 * The parse* functions are pure (unit-tested); the read* functions touch /proc.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  comm: string;
  state: string;
  ppid: number;
  /** Clock ticks. */
  utime: number;
  stime: number;
}

/** Parses /proc/<pid>/stat. comm may hold spaces and parentheses: it ends at the LAST ')'. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`unparseable /proc stat: ${text.slice(0, 80)}`);
  const pid = Number(text.slice(0, open).trim());
  const comm = text.slice(open + 1, close);
  // Fields after comm, numbered from 3 (state) as in proc(5).
  const rest = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  const field = (n: number): string => rest[n - 3] ?? '';
  return { pid, comm, state: field(3), ppid: Number(field(4)), utime: Number(field(14)), stime: Number(field(15)) };
}

export interface ProcStatus {
  /** Resident set size, bytes. */
  rss: number;
  /** Peak RSS, bytes. */
  hwm: number;
}

/** Parses VmRSS and VmHWM (kB in the file) from /proc/<pid>/status; 0 when absent (zombie). */
export function parseStatus(text: string): ProcStatus {
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+)\\s+kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : 0;
  };
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** Parses `key: value` lines (e.g. /proc/<pid>/io) into numbers. */
export function parseKeyValues(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const v = Number(line.slice(i + 1).trim());
    if (Number.isFinite(v)) out[line.slice(0, i).trim()] = v;
  }
  return out;
}

/** Parses Redis CLIENT LIST output: one record per line, `key=value` pairs separated by spaces. */
export function parseClientList(text: string): Record<string, string>[] {
  const out: Record<string, string>[] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '') continue;
    const rec: Record<string, string> = {};
    for (const pair of trimmed.split(' ')) {
      const eq = pair.indexOf('=');
      if (eq > 0) rec[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
    out.push(rec);
  }
  return out;
}

let clkTck: number | undefined;
/** Clock ticks per second (getconf CLK_TCK; 100 on every Linux we know). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** CPU seconds (user + system) consumed so far by pid; NaN when it is gone. */
export function readCpuSeconds(pid: number): number {
  try {
    const s = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return (s.utime + s.stime) / clockTicks();
  } catch {
    return NaN;
  }
}

export function readStatus(pid: number): ProcStatus {
  try {
    return parseStatus(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return { rss: NaN, hwm: NaN };
  }
}

export function readIo(pid: number): Record<string, number> {
  try {
    return parseKeyValues(readFileSync(`/proc/${pid}/io`, 'utf8'));
  } catch {
    return {};
  }
}

/** Direct children of pid (scans /proc); only those whose comm matches (default: node processes, not tsx's esbuild helper). */
export function childrenOf(pid: number, comm: RegExp = /^node/): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const s = parseStat(readFileSync(`/proc/${name}/stat`, 'utf8'));
      if (s.ppid === pid && comm.test(s.comm)) out.push(s.pid);
    } catch {
      // raced with exit
    }
  }
  return out;
}

/**
 * /proc/<pid>/schedstat of the process's main thread: seconds on a CPU and
 * seconds runnable but waiting for one (NaN when it is gone). What is left of
 * the wall clock was spent sleeping (waiting for I/O or a timer).
 */
export function readSchedSeconds(pid: number): { run: number; wait: number } {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/schedstat`, 'utf8').trim().split(/\s+/).map(Number);
    return { run: (run ?? NaN) / 1e9, wait: (wait ?? NaN) / 1e9 };
  } catch {
    return { run: NaN, wait: NaN };
  }
}

/** pid and its node children (cluster workers), excluding helper shells. */
export function processTree(pid: number): number[] {
  return [pid, ...childrenOf(pid)];
}

/** A CPU sample of several processes, to diff later. */
export type CpuSample = Map<number, number>;

export function sampleCpu(pids: readonly number[]): CpuSample {
  return new Map(pids.map((p) => [p, readCpuSeconds(p)]));
}

/** CPU seconds used between two samples, per pid (a pid missing at the end counts what it had used at the start: 0). */
export function cpuDelta(before: CpuSample, after: CpuSample): Map<number, number> {
  const out = new Map<number, number>();
  for (const [pid, a] of after) {
    const b = before.get(pid);
    out.set(pid, Number.isFinite(a) && b !== undefined && Number.isFinite(b) ? a - b : 0);
  }
  return out;
}

export function sum(values: Iterable<number>): number {
  let s = 0;
  for (const v of values) if (Number.isFinite(v)) s += v;
  return s;
}

/** Parses the aggregate `cpu` line of /proc/stat: busy and total jiffies. */
export function parseProcStatCpu(text: string): { busy: number; total: number } {
  const line = text.split('\n').find((l) => l.startsWith('cpu ')) ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

export function readMachineCpu(): { busy: number; total: number } {
  try {
    return parseProcStatCpu(readFileSync('/proc/stat', 'utf8'));
  } catch {
    return { busy: NaN, total: NaN };
  }
}
