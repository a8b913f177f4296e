/**
 * A real Mosquitto broker for the MQTT ingress tests: a free port on
 * 127.0.0.1, its own temp dir (config, log), its own process group, no
 * persistence. Never the machine's broker on 1883.
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { connect, type IClientOptions, type MqttClient } from 'mqtt';
import { findExecutable } from './paths';
import { freePort } from './ports';
import { spawnManaged, type ManagedProcess } from './processes';
import type { Scope } from './scope';
import { pollUntil } from './wait';

export const MQTT_HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 10_000;

export interface MosquittoServer {
  readonly port: number;
  /** `mqtt://127.0.0.1:<port>` */
  readonly url: string;
  readonly dir: string;
  readonly logFile: string;
  /** A new connected mqtt.js client, ended by close(). */
  client(options?: IClientOptions): Promise<MqttClient>;
  /** Publishes with the `mosquitto_pub` command line client (one message per call, or `-l` lines). */
  mosquittoPub(topic: string, message: string, options?: { qos?: 0 | 1 }): Promise<void>;
  log(): string;
  kill(): Promise<void>;
  /** Starts again on the same port (after kill, or kills first). */
  restart(): Promise<void>;
  close(): Promise<void>;
}

function requireBinary(name: string, preferred: string, pkg: string): string {
  const found = findExecutable(preferred, process.env['PATH']);
  if (found === undefined)
    throw new Error(`${name} not found (looked in ${preferred} and PATH). Install it with: apt-get install -y ${pkg}`);
  return found;
}

function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = tcpConnect({ host: MQTT_HOST, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export async function startMosquitto(options: { scope?: Scope; extraConfig?: string[] } = {}): Promise<MosquittoServer> {
  const bin = requireBinary('mosquitto', '/usr/sbin/mosquitto', 'mosquitto');
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-mosquitto-'));
  const logFile = path.join(dir, 'mosquitto.log');
  const confFile = path.join(dir, 'mosquitto.conf');
  // Started as root, mosquitto drops to its own user: the log must stay writable for it.
  chmodSync(dir, 0o755);
  writeFileSync(logFile, '', { mode: 0o666 });
  chmodSync(logFile, 0o666);
  writeFileSync(
    confFile,
    [
      `listener ${port} ${MQTT_HOST}`,
      'allow_anonymous true',
      'persistence false',
      `log_dest file ${logFile}`,
      'log_type error',
      'log_type warning',
      'log_type notice',
      'log_type information',
      'connection_messages true',
      // A failover test queues a stream for the gateway's session while no leader is connected.
      'max_queued_messages 100000',
      ...(options.extraConfig ?? []),
      '',
    ].join('\n'),
  );
  let proc: ManagedProcess | undefined;
  const clients = new Set<MqttClient>();
  let closing: Promise<void> | undefined;

  const launch = async (): Promise<void> => {
    const p = await spawnManaged(bin, ['-c', confFile], { cwd: dir });
    proc = p;
    await pollUntil(async () => ((await portAccepts(port)) ? true : undefined), {
      timeoutMs: READY_TIMEOUT_MS,
      intervalMs: 20,
      description: () => `mosquitto on port ${port} to accept connections; log:\n${server.log()}`,
      failIf: () => (p.exitInfo ? new Error(`mosquitto exited (code ${String(p.exitInfo.code)}); log:\n${server.log()}`) : undefined),
    });
  };

  const server: MosquittoServer = {
    port,
    url: `mqtt://${MQTT_HOST}:${port}`,
    dir,
    logFile,
    async client(clientOptions = {}) {
      const c = connect(server.url, { reconnectPeriod: 0, ...clientOptions });
      clients.add(c);
      c.on('error', () => undefined);
      await new Promise<void>((resolve, reject) => {
        c.once('connect', () => resolve());
        c.once('error', reject);
      });
      return c;
    },
    mosquittoPub(topic, message, pubOptions = {}) {
      const pub = requireBinary('mosquitto_pub', '/usr/bin/mosquitto_pub', 'mosquitto-clients');
      return new Promise((resolve, reject) => {
        const child = spawn(pub, ['-h', MQTT_HOST, '-p', String(port), '-q', String(pubOptions.qos ?? 1), '-t', topic, '-m', message], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        let err = '';
        child.stderr.on('data', (d: Buffer) => (err += d.toString()));
        child.once('error', reject);
        child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`mosquitto_pub exited ${String(code)}: ${err}`))));
      });
    },
    log() {
      try {
        return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-30).join('\n');
      } catch {
        return '(no log)';
      }
    },
    async kill() {
      await proc?.terminate({ graceMs: 0 });
      proc = undefined;
    },
    async restart() {
      await server.kill();
      await launch();
    },
    close() {
      closing ??= (async () => {
        for (const c of clients) c.end(true);
        clients.clear();
        await proc?.terminate({ graceMs: 2000 });
        rmSync(dir, { recursive: true, force: true });
      })();
      return closing;
    },
  };
  options.scope?.add(server);
  try {
    await launch();
  } catch (err) {
    await server.close();
    throw err;
  }
  return server;
}
