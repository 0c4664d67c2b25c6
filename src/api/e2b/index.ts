// The E2B surface: the control plane as Fastify routes, and everything addressed to a sandbox
// (envd, other ports) claimed by an onRequest hook before the native API's routing and auth run.
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.js';
import { registerControlPlane } from './control-plane.js';
import { EnvdRouter } from './envd-router.js';
import { noNetworkProxy, type PortProxy } from './port-proxy.js';
import { EnvdTokens } from './tokens.js';
import { registerE2bTemplates } from './templates.js';
import { registerE2bVolumes } from './volumes.js';

/**
 * Register before the API-key hook: sandbox-bound requests authenticate with the sandbox's envd
 * access token (or a URL signature), not the daemon's API key.
 */
export async function registerE2b(app: FastifyInstance, deps: ApiDeps, proxy: PortProxy = noNetworkProxy): Promise<void> {
  const tokens = new EnvdTokens(deps.mgr.store.db);
  const router = new EnvdRouter(deps.mgr, tokens, proxy);
  app.addHook('onRequest', (req, reply, done) => {
    if (!router.claims(req.raw)) return done();
    reply.hijack();
    void router.handle(req.raw, reply.raw);
    done();
  });
  await registerControlPlane(app, deps, tokens);
  await registerE2bVolumes(app, deps);
  await registerE2bTemplates(app, deps);
}
