// E2B's snapshots and fork (spec/openapi.yml): POST /sandboxes/{id}/snapshots, GET /snapshots (paged
// with x-next-token), DELETE /templates/{snapshotID} (the SDK's deleteSnapshot), POST
// /sandboxes/{id}/fork, and Sandbox.create(snapshotId), which the SDK sends as templateID.
import { z } from 'zod';
import { SNAPSHOT_NAMESPACE, SNAPSHOT_TAG, type SnapshotRecord } from '../../engine/snapshots.js';
import type { SandboxRecord } from '../../engine/types.js';
import { CordonError } from '../../errors/registry.js';
import type { ApiDeps, TypedApp } from '../server.js';

/** E2B's snapshot id: "cordon/NAME:default" when named, else "ID:default" (its namespace/alias:tag shape). */
export function e2bSnapshotId(s: SnapshotRecord): string {
  return s.name ? `${SNAPSHOT_NAMESPACE}/${s.name}:${SNAPSHOT_TAG}` : `${s.id}:${SNAPSHOT_TAG}`;
}

function snapshotInfo(s: SnapshotRecord) {
  return { snapshotID: e2bSnapshotId(s), names: s.name ? [e2bSnapshotId(s)] : [] };
}

/**
 * Whether a create's templateID names a snapshot: E2B's tagged or namespaced forms always do; a bare
 * word does when it is not a template and a snapshot has that id or name.
 */
export function snapshotForTemplateId(deps: ApiDeps, templateID: string): SnapshotRecord | undefined {
  if (/[:/]/.test(templateID)) return deps.mgr.snapshots.resolve(templateID);
  if (templateID === 'base') return undefined;
  return deps.mgr.snapshots.find(templateID);
}

const snapshotBody = z.object({ name: z.string().max(64).optional() }).passthrough();
const listQuery = z.object({
  sandboxID: z.string().max(128).optional(),
  name: z.string().max(256).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  nextToken: z.string().max(512).optional(),
});
const forkBody = z.object({ count: z.number().int().min(1).max(1000).optional(), timeout: z.number().int().min(0).max(86_400 * 30).optional() }).passthrough();
const idParams = z.object({ sandboxID: z.string().min(1).max(128) });
const templateParams = z.object({ templateID: z.string().min(1).max(256) });

/** One page, oldest first; the token is the last item's position ("CREATED__ID", base64url). */
function page(all: SnapshotRecord[], limit: number, nextToken?: string): { items: SnapshotRecord[]; nextToken?: string } {
  let rest = all;
  if (nextToken) {
    const [at, id, extra] = Buffer.from(nextToken, 'base64url').toString().split('__');
    const t = Number(at);
    if (!id || extra !== undefined || !Number.isSafeInteger(t)) throw new CordonError('invalid_argument', 'nextToken: not a token this server issued; pass back the x-next-token header value');
    rest = all.filter((s) => s.createdAt > t || (s.createdAt === t && s.id > id));
  }
  const items = rest.slice(0, limit);
  const last = items[items.length - 1];
  return { items, nextToken: rest.length > limit ? Buffer.from(`${last.createdAt}__${last.id}`).toString('base64url') : undefined };
}

export interface E2bSnapshotHooks {
  /** The sandbox E2B may see, or 404. */
  visible(id: string): SandboxRecord;
  /** Issue a new sandbox's E2B tokens (with the options of `like`) and give its create answer. */
  created(rec: SandboxRecord, like?: string): Promise<unknown>;
  /** Remove a built template with every tag; false when there is none of that name. */
  removeTemplate(id: string): Promise<boolean>;
}

/** Registered inside the control plane's scope (errors as {code, message}). */
export function registerE2bSnapshots(r: TypedApp, deps: ApiDeps, hooks: E2bSnapshotHooks): void {
  const { mgr } = deps;
  r.post('/sandboxes/:sandboxID/snapshots', { schema: { params: idParams, body: snapshotBody.optional(), hide: true } }, async (req, reply) => {
    const rec = hooks.visible(req.params.sandboxID);
    // A sandbox paused for idleness is woken first (this scope is outside the idle-wake hook's reach).
    const release = await mgr.idle?.enter(rec.id);
    try {
      reply.status(201).send(snapshotInfo(await mgr.snapshots.create(rec.id, { name: req.body?.name || undefined })));
    } finally {
      release?.();
    }
  });

  r.get('/snapshots', { schema: { querystring: listQuery, hide: true } }, async (req, reply) => {
    const { sandboxID, name, limit, nextToken } = req.query;
    const { items, nextToken: next } = page(mgr.snapshots.list({ sourceSandbox: sandboxID, name }), limit ?? 100, nextToken);
    if (next) reply.header('x-next-token', next);
    return items.map(snapshotInfo);
  });

  // The SDK's deleteSnapshot, and the removal of a built template (all its tags; refused while in use).
  r.delete('/templates/:templateID', { schema: { params: templateParams, hide: true } }, async (req, reply) => {
    const s = mgr.snapshots.find(req.params.templateID);
    if (!s) {
      if (await hooks.removeTemplate(req.params.templateID)) return reply.status(204).send();
      throw new CordonError('not_found', `template ${req.params.templateID} not found`);
    }
    await mgr.snapshots.remove(s.id);
    reply.status(204).send();
  });

  r.post('/sandboxes/:sandboxID/fork', { schema: { params: idParams, body: forkBody.optional(), hide: true } }, async (req, reply) => {
    const parent = hooks.visible(req.params.sandboxID);
    const timeoutS = req.body?.timeout ?? 15;
    const release = await mgr.idle?.enter(parent.id);
    const results = await mgr.forks.fork(parent.id, { count: req.body?.count ?? 1, timeoutMs: timeoutS * 1000 }).finally(() => release?.());
    const out = [];
    for (const f of results) {
      if (f.sandbox) {
        try {
          out.push({ sandbox: await hooks.created(f.sandbox, parent.id) });
          continue;
        } catch (e) {
          await mgr.remove(f.sandbox.id, true).catch(() => {});
          const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
          out.push({ error: { code: err.status, message: err.message } });
          continue;
        }
      }
      out.push({ error: { code: f.error!.status, message: f.error!.message } });
    }
    reply.status(201).send(out);
  });
}
