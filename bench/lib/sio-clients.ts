/** Orchestrator side of the socket.io-client generator process. */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { PublishTarget } from './publisher-protocol';
import type { SioChildCommand, SioChildReport } from './sio-clients-protocol';
import { OneShotPublisher, sleep, type Target } from './topology';

export class SioClients {
  private constructor(private readonly proc: ChildProcess) {}

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  static async start(): Promise<SioClients> {
    const proc = fork(path.join(__dirname, 'sio-clients-child.ts'), [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((resolve, reject) => {
      proc.once('message', () => resolve());
      proc.once('exit', (code) => reject(new Error(`socket.io-client generator exited (${String(code)})`)));
    });
    return new SioClients(proc);
  }

  send(cmd: SioChildCommand): Promise<SioChildReport> {
    return new Promise((resolve, reject) => {
      const onExit = (code: number | null): void => reject(new Error(`socket.io-client generator exited (${String(code)})`));
      this.proc.once('exit', onExit);
      this.proc.once('message', (m: unknown) => {
        this.proc.off('exit', onExit);
        const r = m as SioChildReport | { type: 'error'; message: string };
        if (r.type === 'error') reject(new Error(`socket.io-client generator: ${r.message}`));
        else resolve(r);
      });
      this.proc.send(cmd);
    });
  }

  /** Publishes `warm` to every room until every client saw one: rooms are joined before a measured run. */
  async warmUp(target: Target, rooms: readonly PublishTarget[], expect: number, timeoutMs = 60_000): Promise<void> {
    const pub = new OneShotPublisher(target);
    try {
      await this.send({ type: 'reset-warm' });
      const deadline = Date.now() + timeoutMs;
      let warm = 0;
      while (Date.now() < deadline) {
        await pub.publish('warm', rooms);
        for (let i = 0; i < 10; i++) {
          await sleep(150);
          warm = (await this.send({ type: 'report', full: false })).warm;
          if (warm >= expect) return;
        }
      }
      throw new Error(`warm-up: only ${warm}/${expect} clients received a marker`);
    } finally {
      pub.close();
    }
  }

  close(): void {
    this.proc.kill('SIGKILL');
  }
}
