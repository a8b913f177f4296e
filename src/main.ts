#!/usr/bin/env node
import cluster from 'node:cluster';
import { loadConfig, workerConfigFromEnv, type GatewayConfig } from './config';
import { EXIT_USAGE, parseArgs } from './cli/args';
import { missingV8Flags } from './cluster/supervisor';
import { configErrorText, effectiveConfigText, helpText, packageVersion } from './cli/commands';
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

/** A port someone else holds, in the operator's terms: which port and which variable sets it. */
function portInUse(err: unknown, config: GatewayConfig): string | undefined {
  const e = err as { code?: string; port?: number } | undefined;
  if (e?.code !== 'EADDRINUSE') return undefined;
  const fromMessage = /:(\d+)\s*$/.exec(errorMessage(err))?.[1];
  const port = e.port ?? (fromMessage === undefined ? undefined : Number(fromMessage));
  const variable =
    port === config.port ? 'GATEWAY_PORT' : port === config.opsPort ? 'GATEWAY_OPS_PORT' : 'GATEWAY_PORT or GATEWAY_OPS_PORT';
  return `port ${port ?? '?'} is already in use (${variable}): stop whatever holds it or choose another port`;
}

async function serve(config: GatewayConfig, notes: readonly string[], warnings: readonly string[]): Promise<void> {
  const role = config.redis ? 'primary' : 'standalone';
  const log = createRootLogger(config.logLevel, { role }, config.logFormat);
  installProcessHandlers(log);
  log.info({ version: packageVersion(), node: process.version }, `realtime-gateway ${packageVersion()} starting`);
  for (const note of notes) log.info(note);
  for (const warning of warnings) log.warn(warning);
  const missing = missingV8Flags(process.execArgv, process.env['NODE_OPTIONS']);
  if (missing.length > 0) {
    log.info({ flags: missing }, `${role} started without the gateway's V8 flags (the image sets them in NODE_OPTIONS; workers get them)`);
  }

  let running: Running;
  try {
    running = config.redis ? await runPrimary(config, log) : await runStandalone(config, log);
  } catch (err) {
    const inUse = portInUse(err, config);
    if (inUse) log.fatal({ code: 'EADDRINUSE' }, inUse);
    else log.fatal({ err: errorMessage(err) }, 'failed to start');
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      // An operator pressing Ctrl-C twice means it: no second grace period.
      log.warn({ signal }, 'second signal during shutdown: exiting now');
      process.exit(1);
    }
    stopping = true;
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
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(): Promise<void> {
  if (cluster.isWorker) {
    const config = workerConfigFromEnv(process.env);
    const log = createRootLogger(config.logLevel, { role: 'worker', worker: cluster.worker?.id }, config.logFormat);
    installProcessHandlers(log);
    await runWorker(config, log);
    return;
  }

  const cli = parseArgs(process.argv.slice(2));
  if ('error' in cli) {
    process.stderr.write(`realtime-gateway: ${cli.error}\nRun "realtime-gateway --help" for usage.\n`);
    process.exit(EXIT_USAGE);
  }
  if (cli.command === 'help') {
    process.stdout.write(helpText());
    return;
  }
  if (cli.command === 'version') {
    process.stdout.write(`${packageVersion()}\n`);
    return;
  }

  const result = loadConfig(process.env);
  if (!result.ok) {
    process.stderr.write(configErrorText(result.errors));
    process.exit(EXIT_USAGE);
  }
  if (cli.command === 'check-config') {
    process.stdout.write(effectiveConfigText(result));
    return;
  }
  await serve(result.config, result.notes, result.warnings);
}

main().catch((err: unknown) => {
  process.stderr.write(`realtime-gateway: ${errorMessage(err)}\n`);
  process.exit(1);
});
