import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';

/**
 * The handshake's and permission checks' GET to Frappe over node:http
 * instead of `fetch`. fetch builds a Request, a Response, Headers, WHATWG
 * streams and an AbortSignal per call, and undici creates an Error (with its
 * stack) whenever it does not keep a connection: ~10% of a worker's CPU in a
 * connect storm of unique sessions, by profile (BENCHMARKS.md, "Connect storm
 * on 2 workers"). These calls read a small JSON body and nothing else;
 * `FrappeBackend.request` (app handlers' frappe_request) stays on fetch.
 */

/** An answer of the backend, its body read whole. */
export interface Answer {
  readonly status: number;
  readonly body: Buffer;
}

/** Why a call got no answer: no answer in time (or a body that stalls), no connection or a broken one, or a body too large. */
export class CallFailure extends Error {
  constructor(
    readonly kind: 'timeout' | 'unreachable' | 'body',
    message: string,
  ) {
    super(message);
    this.name = 'CallFailure';
  }
}

/** A body larger than this is not an answer to these questions: the call fails instead of buffering it. */
export const MAX_ANSWER_BYTES = 1024 * 1024;

// Kept-alive connections are reused when the backend allows it; Node's agent
// does not reuse one the backend announced it closes within a second.
const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };

/**
 * GET `url` with `headers`; resolves with the status and body, rejects with
 * a `CallFailure`. Redirects are not followed. One retry when a reused
 * kept-alive connection turns out closed before any answer (the backend
 * closed it as we sent): the request is an idempotent GET.
 */
export function get(url: URL, headers: Record<string, string>, timeoutMs: number): Promise<Answer> {
  const deadline = Date.now() + timeoutMs;
  return attempt(url, headers, deadline, true);
}

function attempt(url: URL, headers: Record<string, string>, deadline: number, mayRetry: boolean): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const https = url.protocol === 'https:';
    if (!https && url.protocol !== 'http:') {
      reject(new CallFailure('unreachable', `unsupported protocol ${url.protocol}`));
      return;
    }
    let settled = false;
    let answered = false;
    const finish = (err: CallFailure | undefined, answer?: Answer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(answer as Answer);
    };
    const req: ClientRequest = (https ? httpsRequest : httpRequest)(url, {
      method: 'GET',
      headers,
      agent: https ? agents.https : agents.http,
    });
    const timer = setTimeout(
      () => {
        finish(new CallFailure('timeout', 'no answer in time'));
        req.destroy();
      },
      Math.max(0, deadline - Date.now()),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      if (!answered && mayRetry && req.reusedSocket && err.code === 'ECONNRESET') {
        settled = true;
        clearTimeout(timer);
        attempt(url, headers, deadline, false).then(resolve, reject);
        return;
      }
      finish(new CallFailure('unreachable', err.code ?? err.message));
    });
    req.on('response', (res: IncomingMessage) => {
      answered = true;
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) {
          finish(new CallFailure('body', `answer larger than ${MAX_ANSWER_BYTES} bytes`));
          req.destroy();
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () =>
        finish(undefined, { status: res.statusCode ?? 0, body: chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks) }),
      );
      res.on('aborted', () => finish(new CallFailure('unreachable', 'connection closed during the answer')));
      res.on('error', (err: NodeJS.ErrnoException) => finish(new CallFailure('unreachable', err.code ?? err.message)));
    });
    req.end();
  });
}

/** The body as JSON; throws (SyntaxError) when it is not. */
export function json(answer: Answer): unknown {
  return JSON.parse(answer.body.toString('utf8')) as unknown;
}
