/**
 * Publishing realtime events through the gateway's ops API
 * (`POST /api/v1/publish`, the same message shape as Frappe's Redis
 * `events` channel), and the metrics of publish-to-receive latency.
 */
import http from 'k6/http';
import type { Params, RefinedResponse, ResponseType } from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { PublishTarget } from './config.ts';

/** A message as Frappe publishes it on the `events` channel. */
export interface RealtimeEvent {
  event: string;
  message: unknown;
  /** Room in the site namespace; null = every site namespace. */
  room: string | null;
  /** Site name, without the leading `/`. */
  namespace: string;
}

/** Publish time (in the payload) until a subscriber received it. */
export const fanoutLatency = new Trend('fanout_latency', true);
/** One sample per publish request: true when the API did not accept it. */
export const publishErrors = new Rate('fanout_publish_errors');
/** Messages the publish API accepted. */
export const published = new Counter('fanout_published');

function params(target: PublishTarget): Params {
  const headers: Record<string, string> = { 'Content-Type': 'application/json' };
  if (target.token !== undefined) headers['Authorization'] = `Bearer ${target.token}`;
  return { headers, tags: { name: 'publish' }, timeout: '10s' };
}

function accepted(res: RefinedResponse<ResponseType | undefined>): boolean {
  return res.status >= 200 && res.status < 300;
}

function record(ok: boolean): boolean {
  publishErrors.add(!ok);
  if (ok) published.add(1);
  return ok;
}

/** Blocking publish; returns the response so callers can explain failures. */
export function publishSync(target: PublishTarget, event: RealtimeEvent): RefinedResponse<ResponseType | undefined> {
  const res = http.post(target.url, JSON.stringify(event), params(target));
  record(accepted(res));
  return res;
}

/** Non-blocking publish; resolves to whether it was accepted, never rejects. */
export function publishAsync(target: PublishTarget, event: RealtimeEvent): Promise<boolean> {
  return http.asyncRequest('POST', target.url, JSON.stringify(event), params(target)).then(
    (res) => record(accepted(res)),
    () => record(false),
  );
}
