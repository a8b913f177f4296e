/**
 * Child processes of the harness (redis-server, the gateway). Each one runs
 * in its own process group so that a kill also reaches whatever it forked
 * (gateway workers, redis' RDB children). Three layers make sure nothing
 * outlives the test process:
 *  1. close()/terminate() of the owner (normal teardown);
 *  2. `process.on('exit')` and SIGINT/SIGTERM/SIGHUP hooks that SIGKILL every
 *     tracked group synchronously;
 *  3. a tiny `sh` watchdog holding a pipe from this process: when this process
 *     dies in any way (even SIGKILL), the pipe closes and the watchdog kills
 *     the groups it was told about.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { settlesWithin } from './wait';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const trackedGroups = new Set<number>();
let hooksInstalled = false;
let watchdog: { stdin: Writable } | undefined;

const WATCHDOG_SCRIPT = [
  'groups=""',
  'while IFS= read -r line; do',
  '  case "$line" in',
  '    +*) groups="$groups ${line#+}" ;;',
  '    -*) n="${line#-}"; kept=""; for g in $groups; do [ "$g" = "$n" ] || kept="$kept $g"; done; groups="$kept" ;;',
  '  esac',
  'done',
  'for g in $groups; do kill -9 "-$g" 2>/dev/null; done',
].join('\n');

function killGroupSync(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

function killAllTrackedSync(): void {
  for (const pgid of trackedGroups) killGroupSync(pgid, 'SIGKILL');
  trackedGroups.clear();
}

function onFatalSignal(signal: NodeJS.Signals): void {
  killAllTrackedSync();
  // Without our listener Node would have died from this signal; keep that
  // behaviour unless someone else (e.g. the test runner) handles it.
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', killAllTrackedSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, onFatalSignal);
  }
  try {
    const child = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT], { stdio: ['pipe', 'ignore', 'ignore'], detached: true });
    child.on('error', () => {
      watchdog = undefined;
    });
    const stdin = child.stdin;
    if (stdin !== null) {
      stdin.on('error', () => {
        watchdog = undefined;
      });
      // Neither the watchdog nor its pipe may keep the test process alive.
      (stdin as Writable & { unref?: () => void }).unref?.();
      child.unref();
      watchdog = { stdin };
    }
  } catch {
    watchdog = undefined;
  }
}

function track(pgid: number): void {
  installHooks();
  trackedGroups.add(pgid);
  watchdog?.stdin.write(`+${pgid}\n`);
}

function untrack(pgid: number): void {
  if (trackedGroups.delete(pgid)) watchdog?.stdin.write(`-${pgid}\n`);
}

export interface ManagedProcess {
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Resolves (never rejects) when the group leader exits. */
  readonly exited: Promise<ExitInfo>;
  /** Set once the leader has exited. */
  readonly exitInfo: ExitInfo | undefined;
  /** Sends a signal to the leader only (what Kubernetes or Docker do). False if it is gone. */
  signal(signal: NodeJS.Signals): boolean;
  /** Sends a signal to the whole process group (leader and everything it forked). */
  signalGroup(signal: NodeJS.Signals): void;
  /**
   * Sends `signal` to the leader, waits `graceMs` for it to exit, then SIGKILLs
   * the group; finally SIGKILLs anything left in the group and stops tracking it.
   */
  terminate(options?: { signal?: NodeJS.Signals; graceMs?: number }): Promise<ExitInfo>;
}

export interface SpawnManagedOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** 'pipe' to capture output, 'ignore' otherwise. */
  stdout?: 'pipe' | 'ignore';
  stderr?: 'pipe' | 'ignore';
}

/** Spawns `command` in its own process group, tracked for emergency cleanup. Resolves once it has started. */
export async function spawnManaged(command: string, args: readonly string[], options: SpawnManagedOptions = {}): Promise<ManagedProcess> {
  const spawnOptions: SpawnOptions = {
    cwd: options.cwd,
    env: options.env,
    stdio: ['ignore', options.stdout ?? 'ignore', options.stderr ?? 'ignore'],
    detached: true,
  };
  const proc = spawn(command, args, spawnOptions);
  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    proc.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  try {
    // events.once rejects when 'error' fires first (e.g. ENOENT).
    await once(proc, 'spawn');
  } catch (err) {
    throw new Error(`failed to spawn ${command}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (proc.pid === undefined) throw new Error(`failed to spawn ${command}: no pid`);
  const pid = proc.pid;
  track(pid);
  proc.on('error', () => {
    // Signalling a dead process can emit 'error'; exit handling covers it.
  });

  let terminating: Promise<ExitInfo> | undefined;
  const managed: ManagedProcess = {
    proc,
    pid,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    signal(signal) {
      if (exitInfo !== undefined) return false;
      try {
        return process.kill(pid, signal);
      } catch {
        return false;
      }
    },
    signalGroup(signal) {
      killGroupSync(pid, signal);
    },
    terminate(terminateOptions = {}) {
      terminating ??= (async () => {
        const graceMs = terminateOptions.graceMs ?? 5000;
        if (exitInfo === undefined) {
          if (graceMs > 0) {
            managed.signal(terminateOptions.signal ?? 'SIGTERM');
            if (!(await settlesWithin(exited, graceMs))) killGroupSync(pid, 'SIGKILL');
          } else {
            killGroupSync(pid, 'SIGKILL');
          }
        }
        const info = await exited;
        killGroupSync(pid, 'SIGKILL');
        untrack(pid);
        return info;
      })();
      return terminating;
    },
  };
  return managed;
}
