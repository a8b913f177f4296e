import Fastify, { type FastifyInstance } from 'fastify';
import type { GatewayConfig } from '../config';
import type { Intake } from '../events/intake';
import type { FrappeEvent } from '../events/parse';
import { errorMessage } from '../shared/errors';
import type { Logger } from '../shared/logger';
import type { Metrics } from '../metrics/metrics';
import { bearerMatches, checkPublishBody, IDEMPOTENCY_HEADER, isLoopback, publishFailureAnswer } from './publish-api';

/** The ops server's slice of the configuration. */
export type OpsConfig = Pick<GatewayConfig, 'maxMessageBytes' | 'publishToken'>;

export interface Readiness {
  readonly ready: boolean;
  readonly checks: Record<string, unknown>;
}

/**
 * An answer that could not be completed because Redis did not answer in
 * time: the route sends 503 with `message` and this host's own part
 * (`partial: true`) instead of hanging.
 */
export class PartialAnswer extends Error {
  constructor(
    message: string,
    readonly local: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'PartialAnswer';
  }
}

export interface OpsDeps {
  readonly config: OpsConfig;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly intake: Intake;
  readiness(): Promise<Readiness>;
  metricsText(): Promise<{ contentType: string; body: string }>;
  publish(events: FrappeEvent[]): Promise<void>;
  cluster(): Promise<unknown>;
  rooms(site: string, room: string | undefined): Promise<unknown>;
}

/** The ops port (README "Operations"): health, metrics, publish API, cluster inspection. */
export function createOpsServer(d: OpsDeps): FastifyInstance {
  const { config, log, metrics } = d;
  const app = Fastify({ logger: false, bodyLimit: config.maxMessageBytes * 8, return503OnClosing: true });

  app.setErrorHandler((err: { statusCode?: number; code?: string; message: string }, req, reply) => {
    const status = err.statusCode ?? 500;
    if (req.url.startsWith('/api/v1/publish')) {
      metrics.publishRequests.inc({ status: String(status) });
      if (status === 413) metrics.eventsDropped.inc({ reason: 'oversized' });
    }
    if (status >= 500) log.error({ err: err.message }, 'ops request failed');
    void reply.status(status).send({ error: err.code ?? 'GW_ERR_INTERNAL', message: err.message });
  });

  app.get('/livez', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const r = await d.readiness();
    return reply.status(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not ready', ...r.checks });
  });

  app.get('/metrics', async (_req, reply) => {
    const m = await d.metricsText();
    return reply.header('content-type', m.contentType).send(m.body);
  });

  /**
   * The publish and cluster APIs: the bearer token when one is configured,
   * loopback clients only otherwise (the cluster APIs reveal node ids,
   * addresses and who is in which room).
   */
  const refusal = (req: { headers: { authorization?: string | undefined }; socket: { remoteAddress?: string | undefined } }) => {
    if (config.publishToken !== null) {
      if (bearerMatches(req.headers.authorization, config.publishToken)) return null;
      return {
        status: 401,
        body: { error: 'GW_ERR_UNAUTHORIZED', message: 'a valid "Authorization: Bearer <GATEWAY_PUBLISH_TOKEN>" header is required' },
      };
    }
    if (isLoopback(req.socket.remoteAddress)) return null;
    return {
      status: 403,
      body: { error: 'GW_ERR_FORBIDDEN', message: 'no GATEWAY_PUBLISH_TOKEN is configured: this API accepts loopback clients only' },
    };
  };

  app.post('/api/v1/publish', async (req, reply) => {
    const send = (status: number, body: unknown) => {
      metrics.publishRequests.inc({ status: String(status) });
      return reply.status(status).send(body);
    };
    const refused = refusal(req);
    if (refused) return send(refused.status, refused.body);
    const check = checkPublishBody(req.body, d.intake, config.maxMessageBytes, req.headers[IDEMPOTENCY_HEADER]);
    if (!check.ok) return send(check.status, check.body);
    try {
      await d.publish(check.events);
    } catch (err) {
      log.warn({ err: errorMessage(err) }, 'publish failed');
      const failure = publishFailureAnswer(err);
      return send(failure.status, failure.body);
    }
    return send(202, { accepted: check.events.length });
  });

  app.get('/api/v1/cluster', async (req, reply) => {
    const refused = refusal(req);
    if (refused) return reply.status(refused.status).send(refused.body);
    try {
      return await d.cluster();
    } catch (err) {
      if (!(err instanceof PartialAnswer)) throw err;
      log.debug({ err: err.message }, 'cluster API answered without redis');
      return reply.status(503).send({ error: 'GW_ERR_REDIS_UNAVAILABLE', message: err.message, partial: true, ...err.local });
    }
  });

  app.get<{ Querystring: { site?: string; room?: string } }>('/api/v1/cluster/rooms', async (req, reply) => {
    const refused = refusal(req);
    if (refused) return reply.status(refused.status).send(refused.body);
    const site = req.query.site;
    if (!site) return reply.status(400).send({ error: 'GW_ERR_BAD_QUERY', message: 'query parameter "site" is required' });
    return d.rooms(site, req.query.room);
  });

  return app;
}
