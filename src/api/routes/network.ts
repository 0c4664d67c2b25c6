import { isIPv4 } from 'node:net';
import { z } from 'zod';
import { errors } from '../../errors/registry.js';
import { parseEntry } from '../../net/policy.js';
import { networkView } from '../../net/schema.js';
import type { PortForward } from '../../net/types.js';
import { idParams } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';

// Runtime changes to a sandbox's egress rules: allow-list add/delete; they apply to new connections at once.

const entry = z.string().min(1).max(300).refine((s) => !!parseEntry(s), { message: 'a host glob, IPv4 address or CIDR, optionally :port' });
const port = z.coerce.number().int().min(1, 'ports are 1-65535').max(65535, 'ports are 1-65535');
const portBody = z.object({ local: port.optional(), remote: port, host: z.string().refine((s) => isIPv4(s), { message: 'an IPv4 address to bind on the host' }).optional() }).strict();
const portParams = idParams.extend({ local: port });
const portView = (p: PortForward) => ({ address: p.address, local_port: p.local, remote_port: p.remote });
const allowListBody = z.object({ add: z.array(entry).max(256).optional(), delete: z.array(z.string().max(300)).max(256).optional(), deny: z.array(entry).max(256).optional() }).strict();

export function registerNetworkRoutes(app: TypedApp, { mgr, net }: ApiDeps): void {
  app.get('/v1/sandboxes/:id/network', { schema: { summary: "A sandbox's network mode and rules", params: idParams } }, async (req) => networkView(mgr.get(req.params.id).spec.network));

  app.post('/v1/sandboxes/:id/network/allow-list', { schema: { summary: 'Add or delete allow-list entries (and add deny entries) while the sandbox runs', params: idParams, body: allowListBody } }, async (req) => {
    const rec = mgr.get(req.params.id);
    const n = rec.spec.network;
    if (!n || n.mode === 'none') throw errors.invalid('network', 'the sandbox has network mode none; create it with --network allowlist or open to change rules');
    const del = new Set(req.body.delete ?? []);
    const allow = [...n.allow.filter((a) => !del.has(a)), ...(req.body.add ?? []).filter((a) => !n.allow.includes(a))];
    const deny = [...n.deny.filter((a) => !del.has(a)), ...(req.body.deny ?? []).filter((a) => !n.deny.includes(a))];
    const next = { ...n, allow, deny };
    await mgr.network.setNetwork(rec.id, next, `allow-list now ${allow.join(', ') || '(empty)'}${deny.length ? `; deny ${deny.join(', ')}` : ''}`);
    return networkView(next);
  });

  // Ports in while the sandbox runs: stored with the spec, so they survive restarts.
  app.get('/v1/sandboxes/:id/ports', { schema: { summary: "A sandbox's port forwards (host LOCAL -> sandbox REMOTE)", params: idParams } }, async (req) =>
    (mgr.get(req.params.id).spec.network?.ports ?? []).map(portView));

  app.post('/v1/sandboxes/:id/ports', { schema: { summary: 'Forward a host port (127.0.0.1 unless host is given) to a sandbox port; LOCAL defaults to REMOTE', params: idParams, body: portBody } }, async (req, reply) => {
    const f = await mgr.network.addPort(req.params.id, { local: req.body.local ?? req.body.remote, remote: req.body.remote, address: req.body.host ?? '127.0.0.1' });
    reply.code(201);
    return portView(f);
  });

  app.delete('/v1/sandboxes/:id/ports/:local', { schema: { summary: 'Remove the forward on host port LOCAL; the port closes at once', params: portParams } }, async (req) =>
    portView(await mgr.network.removePort(req.params.id, req.params.local)));

  // SDK-side interception callbacks: requests matching a rule with action callback are sent here
  // ({type: 'request', id, phase, method, host, path, query, headers[, status, response_headers]});
  // the client answers {type: 'decision', id, action: allow|block|mutate, set_headers?, …}.
  app.get('/v1/sandboxes/:id/network/callbacks', { websocket: true, schema: { params: idParams, hide: true } }, (socket, req) => {
    const hub = net?.callbacks;
    let id: string;
    try {
      id = mgr.get(req.params.id).id;
      if (!hub) throw errors.invalid('network', 'this daemon has no network capability');
    } catch (e) {
      socket.send(JSON.stringify({ type: 'error', error: e }));
      return socket.close(1008, (e as Error).message.slice(0, 120));
    }
    const unregister = hub.register(id, socket);
    socket.on('message', (raw: Buffer) => {
      try {
        const msg = JSON.parse(raw.toString()) as { type?: string; id?: unknown };
        if (msg.type === 'decision') hub.answer(socket, msg as Parameters<typeof hub.answer>[1]);
      } catch {
        /* not JSON: ignored */
      }
    });
    socket.on('close', unregister);
    socket.send(JSON.stringify({ type: 'ready', sandbox_id: id }));
  });
}
