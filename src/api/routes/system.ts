import { z } from 'zod';
import type { ApiDeps, TypedApp } from '../server.js';

export function registerSystemRoutes(app: TypedApp, deps: ApiDeps, openapi: () => unknown): void {
  app.get('/v1/health', { schema: { summary: 'Answers 200 once the daemon can create sandboxes' } }, async (_req, reply) => {
    const r = deps.readiness();
    reply.status(r.ready ? 200 : 503).send({ status: r.ready ? 'ok' : 'starting', reason: r.reason ?? null, runtimes: r.runtimes, version: deps.version });
  });

  app.get('/v1/info', { schema: { summary: 'Daemon version, runtimes and limits' } }, async () => {
    const r = deps.readiness();
    return {
      version: deps.version,
      default_runtime: deps.cfg.defaultRuntime,
      runtimes: r.runtimes,
      max_sandboxes: deps.cfg.maxSandboxes,
      sandboxes: deps.mgr.countActive(),
    };
  });

  app.get('/v1/openapi.json', { schema: { hide: true, querystring: z.object({}).passthrough() } }, async () => openapi());
}
