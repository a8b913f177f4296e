/** Errors that cross a module boundary carry a stable code (GW_ERR_*). */
export type ErrorCode =
  | 'GW_ERR_BACKEND_UNREACHABLE'
  | 'GW_ERR_BACKEND_STATUS'
  | 'GW_ERR_BACKEND_BODY'
  | 'GW_ERR_BACKEND_TIMEOUT'
  | 'GW_ERR_BACKEND_QUEUE_FULL'
  | 'GW_ERR_BACKEND_CIRCUIT_OPEN'
  | 'GW_ERR_FENCED'
  | 'GW_ERR_REDIS_UNAVAILABLE'
  | 'GW_ERR_PUBLISH_UNCONFIRMED'
  | 'GW_ERR_REDIS_REFUSED';

export class GatewayError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; retryable?: boolean },
  ) {
    super(message, options);
    this.name = 'GatewayError';
    this.retryable = options?.retryable ?? false;
  }

  /** The failure is an outage (retrying later may succeed), not a refusal. */
  readonly retryable: boolean;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
