import type { HistogramJson } from './stats';

export interface ClientSpec {
  sid: string;
  /** doc_subscribe(doctype, name) after connecting. */
  docs?: [string, string][];
}

export type ChildCommand =
  | {
      cmd: 'connect';
      url: string;
      site: string;
      origin: string;
      clients: ClientSpec[];
      timeoutMs: number;
      ratePerSec: number;
      retries: number;
    }
  | { cmd: 'window'; trackSeq: number }
  | { cmd: 'report'; withSeq: boolean }
  | { cmd: 'close' };

export interface ConnectResult {
  type: 'connected';
  connected: number;
  errors: Record<string, number>;
  /** Transport failures retried (ECONNRESET etc.); not counted as errors unless the last attempt failed. */
  retries: number;
  /** When the last successful CONNECT arrived, ms after the first socket was opened. */
  durationMs: number;
  wallMs: number;
}

export interface ChildReport {
  type: 'report';
  deliveries: number;
  disconnects: number;
  open: number;
  warm: number;
  cpuMs: number;
  wallMs: number;
  hist: HistogramJson;
  rss: number;
  seqCounts?: number[];
  seqFirst?: number[];
  seqLatency?: number[];
}
