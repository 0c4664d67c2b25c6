import type { FastifyError, FastifyInstance } from 'fastify';
import { CordonError, retryAfterSeconds } from '../../errors/registry.js';

/**
 * E2B clients read errors as {code: <HTTP status>, message}. A body not yet read is swallowed on a
 * connection that then closes; an answer already under way is cut rather than answered twice.
 */
export function e2bErrors(scope: FastifyInstance): void {
  scope.setErrorHandler((err: FastifyError, req, reply) => {
    if (!req.raw.complete) {
      req.raw.resume();
      reply.header('connection', 'close');
    }
    const status = err instanceof CordonError ? err.status : err.validation ? 400 : err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
    const message = err.validation ? `invalid request: ${err.message}` : err.message;
    const retryAfter = retryAfterSeconds(err);
    if (retryAfter) reply.header('retry-after', String(retryAfter));
    if (reply.sent || reply.raw.headersSent) return void reply.raw.destroy();
    reply.status(status).send({ code: status, message });
  });
}
