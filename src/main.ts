import cluster from 'node:cluster';
import { loadConfig, workerConfigFromEnv, type GatewayConfig } from './config';
import { runPrimary } from './roles/primary';
import { runStandalone } from './roles/standalone';
import type { Running } from './shared/lifecycle';
import { errorMessage } from './shared/errors';
import { createRootLogger, type Logger } from './shared/logger';
import { runWorker } from './roles/worker';

/** Process-wide safety nets: an app handler's forgotten promise must not take the gateway down. */
function installProcessHandlers(log: Logger): void {
  process.on('unhandledRejection', (reason) => {
    log.error({ err: errorMessage(reason) }, 'unhandled promise rejection');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err: errorMessage(err), stack: err.stack }, 'uncaught exception, exiting');
    process.exit(1);
  });
}

async function main(): Promise<void> {
  if (cluster.isWorker) {
    const config = workerConfigFromEnv(process.env);
    const log = createRootLogger(config.logLevel, { role: 'worker', worker: cluster.worker?.id });
    installProcessHandlers(log);
    await runWorker(config, log);
    return;
  }

  const result = loadConfig(process.env);
  if (!result.ok) {
    process.stderr.write(
      `realtime-gateway: invalid configuration (${result.errors.length} problem${result.errors.length === 1 ? '' : 's'}):\n${result.errors.map((e) => `  - ${e}`).join('\n')}\n`,
    );
    process.exit(2);
  }
  const config: GatewayConfig = result.config;
  const role = config.redis ? 'primary' : 'standalone';
  const log = createRootLogger(config.logLevel, { role });
  installProcessHandlers(log);
  for (const note of result.notes) log.info(note);

  let running: Running;
  try {
    running = config.redis ? await runPrimary(config, log) : await runStandalone(config, log);
  } catch (err) {
    log.fatal({ err: errorMessage(err) }, 'failed to start');
    process.exit(1);
  }
  const stop = (signal: string) => {
    running
      .shutdown(signal)
      .then(() => {
        log.info('shutdown complete');
        process.exit(0);
      })
      .catch((err: unknown) => {
        log.error({ err: errorMessage(err) }, 'shutdown failed');
        process.exit(1);
      });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`realtime-gateway: ${errorMessage(err)}\n`);
  process.exit(1);
});
