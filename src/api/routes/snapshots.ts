import type { SnapshotRecord } from '../../engine/snapshots.js';
import { forkBody, idParams, snapshotBody, snapshotListQuery, snapshotParams } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { sandboxView } from '../views.js';
import { e2bSnapshotId } from '../e2b/snapshots.js';

const iso = (ms: number) => new Date(ms).toISOString();

export function snapshotView(s: SnapshotRecord) {
  return {
    id: s.id,
    name: s.name ?? null,
    /** The id the E2B SDK uses (Sandbox.create(snapshotId), deleteSnapshot). */
    snapshot_id: e2bSnapshotId(s),
    source_sandbox: s.sourceSandbox,
    runtime: s.runtime,
    kind: s.kind,
    size_bytes: s.sizeBytes,
    layers: s.lowerDirs.length,
    created_at: iso(s.createdAt),
  };
}

export function registerSnapshotRoutes(app: TypedApp, { mgr }: ApiDeps): void {
  app.post(
    '/v1/sandboxes/:id/snapshots',
    { schema: { summary: 'Snapshot a running sandbox (files, and memory and processes where the runtime checkpoints); it keeps running', params: idParams, body: snapshotBody.optional() } },
    async (req, reply) => reply.status(201).send(snapshotView(await mgr.snapshots.create(req.params.id, { name: req.body?.name }))),
  );
  app.get('/v1/snapshots', { schema: { summary: 'List snapshots (oldest first), by source sandbox or name', querystring: snapshotListQuery } }, async (req) =>
    mgr.snapshots.list({ sourceSandbox: req.query.sandbox, name: req.query.name }).map(snapshotView),
  );
  app.get('/v1/snapshots/:ref', { schema: { summary: 'Inspect a snapshot (id or name)', params: snapshotParams } }, async (req) => {
    const s = mgr.snapshots.resolve(req.params.ref);
    return { ...snapshotView(s), users: mgr.snapshots.users(s.id) };
  });
  app.delete('/v1/snapshots/:ref', { schema: { summary: 'Remove a snapshot; 409 while sandboxes or snapshots stand on it', params: snapshotParams } }, async (req, reply) => {
    await mgr.snapshots.remove(req.params.ref);
    reply.status(204).send();
  });
  app.post(
    '/v1/sandboxes/:id/fork',
    { schema: { summary: 'Fork a running sandbox into count new ones from its current state; one entry per fork, a sandbox or an error', params: idParams, body: forkBody.optional() } },
    async (req, reply) => {
      const results = await mgr.forks.fork(req.params.id, { count: req.body?.count ?? 1, timeoutMs: req.body?.timeout });
      reply.status(201).send(results.map((r) => (r.sandbox ? { sandbox: sandboxView(r.sandbox) } : { error: r.error!.toJSON() })));
    },
  );
}
