import { z } from 'zod';
import { errors } from '../../errors/registry.js';
import { parseEntry } from '../../net/policy.js';
import { networkView } from '../../net/schema.js';
import { idParams } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';

// Runtime changes to a sandbox's egress rules: allow-list add/delete; they apply to new connections at once.

const entry = z.string().min(1).max(300).refine((s) => !!parseEntry(s), { message: 'a host glob, IPv4 address or CIDR, optionally :port' });
const allowListBody = z.object({ add: z.array(entry).max(256).optional(), delete: z.array(z.string().max(300)).max(256).optional(), deny: z.array(entry).max(256).optional() }).strict();

export function registerNetworkRoutes(app: TypedApp, { mgr }: ApiDeps): void {
  app.get('/v1/sandboxes/:id/network', { schema: { summary: "A sandbox's network mode and rules", params: idParams } }, async (req) => networkView(mgr.get(req.params.id).spec.network));

  app.post('/v1/sandboxes/:id/network/allow-list', { schema: { summary: 'Add or delete allow-list entries (and add deny entries) while the sandbox runs', params: idParams, body: allowListBody } }, async (req) => {
    const rec = mgr.get(req.params.id);
    const n = rec.spec.network;
    if (!n || n.mode === 'none') throw errors.invalid('network', 'the sandbox has network mode none; create it with --network allowlist or open to change rules');
    const del = new Set(req.body.delete ?? []);
    const allow = [...n.allow.filter((a) => !del.has(a)), ...(req.body.add ?? []).filter((a) => !n.allow.includes(a))];
    const deny = [...n.deny.filter((a) => !del.has(a)), ...(req.body.deny ?? []).filter((a) => !n.deny.includes(a))];
    const next = { ...n, allow, deny };
    await mgr.setNetwork(rec.id, next, `allow-list now ${allow.join(', ') || '(empty)'}${deny.length ? `; deny ${deny.join(', ')}` : ''}`);
    return networkView(next);
  });
}
