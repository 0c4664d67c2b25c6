import type { FastifyInstance } from 'fastify';
import type { SandboxManager } from '../engine/sandbox-manager.js';

/** Routes that work inside a sandbox: a call to one is activity and wakes a sandbox paused for idleness. */
const INSIDE = /^\/v1\/sandboxes\/:id\/(exec|processes|files)(\/|$)/;
/** POSTs that need it running: a snapshot or fork of it, an S3 sync (E2B's snapshot and fork wake it in their routes). */
const NEEDS_RUNNING = /^\/v1\/sandboxes\/:id\/(snapshots|fork|sync)$/;

/**
 * serve --idle-pause: before a route that works inside a sandbox runs, resume the sandbox if it was
 * paused for idleness, and hold it awake until the response is done (streams included).
 */
export function registerIdleWake(app: FastifyInstance, mgr: SandboxManager): void {
  const idle = mgr.idle;
  if (!idle) return;
  app.addHook('preHandler', async (req, reply) => {
    const id = (req.params as { id?: unknown } | undefined)?.id;
    const url = req.routeOptions.url ?? '';
    const wakes = INSIDE.test(url) || (req.method === 'POST' && NEEDS_RUNNING.test(url));
    if (typeof id !== 'string' || !wakes || !mgr.store.get(id)) return;
    const release = await idle.enter(id);
    reply.raw.once('close', release);
    req.raw.once('close', release);
  });
}
