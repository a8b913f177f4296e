import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { PublishCommand, PublishResult } from './publisher-protocol';

/** A publisher process, reused across runs. */
export class Publisher {
  private constructor(private readonly proc: ChildProcess) {}

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  static async start(): Promise<Publisher> {
    const proc = fork(path.join(__dirname, 'publisher-child.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      proc.once('message', () => resolve());
      proc.once('exit', (code) => reject(new Error(`publisher exited (${String(code)})`)));
    });
    return new Publisher(proc);
  }

  run(cmd: PublishCommand): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      this.proc.once('message', (m: unknown) => {
        const r = m as PublishResult | { type: 'error'; message: string };
        if (r.type === 'error') reject(new Error(`publisher: ${r.message}`));
        else resolve(r);
      });
      this.proc.send(cmd);
    });
  }

  close(): void {
    this.proc.kill('SIGKILL');
  }
}
