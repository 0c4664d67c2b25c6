import type { ApiDeps, TypedApp } from '../server.js';

/** GET /metrics: Prometheus text format, behind the API key like every other route. */
export function registerMetricsRoute(app: TypedApp, deps: ApiDeps): void {
  const metrics = deps.metrics;
  if (!metrics) return;
  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)' } }, async (_req, reply) => {
    const text = await metrics.text();
    reply.header('content-type', metrics.contentType()).send(text);
  });
}
