export interface PublishTarget {
  ns: string;
  /** null: every site (Frappe's room-less events). */
  room: string | null;
}

export interface PublishCommand {
  mode: 'redis' | 'http';
  redisUrl?: string;
  channel: string;
  /** POST /api/v1/publish URL (standalone). */
  httpUrl?: string;
  /** Events per second. */
  rate: number;
  durationMs: number;
  /** Events cycle through these targets. */
  targets: PublishTarget[];
  seqStart: number;
  padBytes: number;
  /** Give every event its own idempotency key (a UUID of the run plus the sequence number). */
  keys?: boolean;
}

export interface PublishResult {
  type: 'published';
  sent: number;
  acked: number;
  errors: number;
  wallMs: number;
  sendMs: number;
  cpuMs: number;
  achievedRate: number;
  maxBacklog: number;
  /** The publisher could not offer the requested rate (or its publishes failed): the run is invalid. */
  behind: boolean;
}
