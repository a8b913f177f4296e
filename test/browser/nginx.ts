/**
 * Debian's nginx in front of the gateway, configured with the snippets the
 * README recommends (deploy/nginx/frappe-single-host.conf and
 * frappe-multi-host.conf). The snippets are used verbatim except for their
 * upstream addresses, which are templated to the gateways of the test (and
 * surplus example hosts dropped: "one line per gateway host").
 *
 * What the test adds around them is what a bench's own nginx config has
 * anyway: the main context (here: unprivileged, non-daemon, everything in a
 * temp prefix dir), the site's `server {}` and its `location /` to the Frappe
 * web server (gunicorn in a bench, the fake site server here).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findExecutable, repoRoot } from '../harness/paths';
import { freePort } from '../harness/ports';
import { spawnManaged } from '../harness/processes';
import type { Scope } from '../harness/scope';
import { pollUntil } from '../harness/wait';

export const NGINX_SNIPPETS = {
  single: path.join(repoRoot, 'deploy', 'nginx', 'frappe-single-host.conf'),
  multi: path.join(repoRoot, 'deploy', 'nginx', 'frappe-multi-host.conf'),
} as const;

export type NginxVariant = keyof typeof NGINX_SNIPPETS;

const READY_TIMEOUT_MS = 10_000;
const READY_POLL_MS = 25;
/** SIGQUIT would wait for held long-polls and open websockets; SIGTERM is nginx's fast shutdown. */
const STOP_GRACE_MS = 3_000;
const SERVER_MARKER = /^# ---- server \{\} context/m;

export interface NginxHandle {
  readonly port: number;
  readonly dir: string;
  readonly errorLog: string;
  /** One line per finished request: `<request_uri> <status> <upstream_addr>` (websockets are logged when they close). */
  readonly accessLog: string;
  /** The main config as written (for failure messages). */
  readonly configText: string;
  accessLogLines(): string[];
  close(): Promise<void>;
}

export interface StartNginxOptions {
  scope?: Scope;
  variant: NginxVariant;
  /** Gateway Socket.IO ports on 127.0.0.1 (single: exactly one). */
  gatewayPorts: readonly number[];
  /** The site's web server (what `location /` proxies to). */
  siteUrl: string;
  serverName: string;
}

export class NginxHarnessError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'NginxHarnessError';
    this.code = code;
  }
}

function requireNginx(): string {
  const found = findExecutable('/usr/sbin/nginx', `${process.env['PATH'] ?? ''}${path.delimiter}/usr/sbin`);
  if (found === undefined) {
    throw new NginxHarnessError(
      'HARNESS_ERR_NGINX_MISSING',
      'nginx not found: run scripts/ensure-browser-deps.sh (apt-get install -y nginx)',
    );
  }
  return found;
}

/** Splits a deploy/nginx snippet into its `http {}` part and its `server {}` part. */
export function splitSnippet(text: string): { http: string; server: string } {
  const at = text.search(SERVER_MARKER);
  if (at < 0) throw new NginxHarnessError('HARNESS_ERR_NGINX_SNIPPET', 'snippet has no "# ---- server {} context" marker line');
  return { http: text.slice(0, at), server: text.slice(at) };
}

/**
 * Replaces the upstream server addresses of a snippet's http part with
 * `127.0.0.1:<port>`, one per gateway; example lines beyond the number of
 * gateways are dropped. Everything else stays byte for byte.
 */
export function templateUpstreams(variant: NginxVariant, httpPart: string, ports: readonly number[]): string {
  const line = variant === 'single' ? /^(\s*server\s+)127\.0\.0\.1:9000(\b.*)$/gm : /^(\s*server\s+)10\.0\.0\.\d+:9000(\b.*)$/gm;
  let i = 0;
  const out = httpPart.replace(line, (_m, head: string, tail: string) => {
    const port = ports[i++];
    return port === undefined ? '' : `${head}127.0.0.1:${port}${tail}`;
  });
  if (i < ports.length) {
    throw new NginxHarnessError(
      'HARNESS_ERR_NGINX_SNIPPET',
      `${variant} snippet has ${i} upstream server line(s), ${ports.length} gateway(s) given`,
    );
  }
  // Dropped lines leave empty lines behind, which nginx ignores.
  return out;
}

function mainConfig(dir: string, port: number, serverName: string, siteUrl: string): string {
  const user = process.getuid?.() === 0 ? 'user root root;\n' : '';
  return `${user}worker_processes 1;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
    log_format rtgw_test '$request_uri $status $upstream_addr';
    access_log ${dir}/access.log rtgw_test;
    client_body_temp_path ${dir}/tmp/body;
    proxy_temp_path ${dir}/tmp/proxy;
    fastcgi_temp_path ${dir}/tmp/fastcgi;
    uwsgi_temp_path ${dir}/tmp/uwsgi;
    scgi_temp_path ${dir}/tmp/scgi;

    # deploy/nginx snippet, http {} part
    include ${dir}/socketio-http.conf;

    server {
        listen 127.0.0.1:${port};
        server_name ${serverName};

        # The bench's own part: everything else goes to the Frappe web server.
        location / {
            proxy_pass ${siteUrl};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Frappe-Site-Name $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }

        # deploy/nginx snippet, server {} part
        include ${dir}/socketio-server.conf;
    }
}
`;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function tailOf(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export async function startNginx(options: StartNginxOptions): Promise<NginxHandle> {
  const binary = requireNginx();
  if (options.variant === 'single' && options.gatewayPorts.length !== 1) {
    throw new NginxHarnessError('HARNESS_ERR_NGINX_SNIPPET', 'the single-host snippet takes exactly one gateway');
  }
  const snippet = splitSnippet(readFileSync(NGINX_SNIPPETS[options.variant], 'utf8'));
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rtgw-nginx-'));
  const removeDir = (): void => rmSync(dir, { recursive: true, force: true });
  options.scope?.add(removeDir);
  mkdirSync(path.join(dir, 'tmp'));
  const port = await freePort();
  const configText = mainConfig(dir, port, options.serverName, options.siteUrl);
  writeFileSync(path.join(dir, 'socketio-http.conf'), templateUpstreams(options.variant, snippet.http, options.gatewayPorts));
  writeFileSync(path.join(dir, 'socketio-server.conf'), snippet.server);
  writeFileSync(path.join(dir, 'nginx.conf'), configText);
  const errorLog = path.join(dir, 'error.log');
  const accessLog = path.join(dir, 'access.log');

  // -e: the error log before the config is read (else /var/log/nginx, not writable or not ours).
  const proc = await spawnManaged(
    binary,
    ['-p', dir, '-e', errorLog, '-c', path.join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid;`],
    {
      cwd: dir,
    },
  );
  let closing: Promise<void> | undefined;
  const handle: NginxHandle = {
    port,
    dir,
    errorLog,
    accessLog,
    configText,
    accessLogLines() {
      try {
        return readFileSync(accessLog, 'utf8')
          .split('\n')
          .filter((l) => l !== '');
      } catch {
        return [];
      }
    },
    close() {
      closing ??= proc.terminate({ signal: 'SIGTERM', graceMs: STOP_GRACE_MS }).then(() => undefined);
      return closing;
    },
  };
  options.scope?.add(handle);
  await pollUntil(async () => ((await canConnect(port)) ? true : undefined), {
    timeoutMs: READY_TIMEOUT_MS,
    intervalMs: READY_POLL_MS,
    description: () => `nginx to listen on 127.0.0.1:${port}; error log:\n${tailOf(errorLog)}`,
    failIf: () =>
      proc.exitInfo === undefined
        ? undefined
        : new NginxHarnessError(
            'HARNESS_ERR_NGINX_EXITED',
            `nginx exited (code ${String(proc.exitInfo.code)}); error log:\n${tailOf(errorLog)}`,
          ),
  });
  return handle;
}
