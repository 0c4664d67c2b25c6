// E2B's volumes: the control plane (/volumes, API key) and the volume content API
// (/volumecontent/{volumeID}/dir|path|file, Bearer volume token) on the same port; the SDK finds the
// latter through E2B_VOLUME_API_URL (or its apiUrl option).
import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import type { VolumeInfo, VolumeManager } from '../../engine/volumes.js';
import { CordonError } from '../../errors/registry.js';
import { e2bErrors } from './errors.js';
import type { RootEntry } from '../../volume/files-in-root.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { stallDeadline } from '../stream-flow.js';

const volumeId = z.object({ volumeID: z.string().min(1).max(128) });
const bool = z.enum(['true', 'false']).optional();
const idNum = z.coerce.number().int().min(0).max(2 ** 31 - 1);
const modeNum = z.coerce.number().int().min(0).max(0o7777);
const pathQ = z.object({ path: z.string().min(1).max(4096) });

const E2B_TYPE = { file: 'file', dir: 'directory', symlink: 'symlink', other: 'unknown' } as const;

function entryView(e: RootEntry) {
  return {
    name: e.name,
    path: e.path,
    type: E2B_TYPE[e.type],
    size: e.size,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    atime: e.atime.toISOString(),
    mtime: e.mtime.toISOString(),
    ctime: e.ctime.toISOString(),
    ...(e.target !== undefined ? { target: e.target } : {}),
  };
}

const volumeAndToken = (v: VolumeInfo | { id: string; name: string; token: string }) => ({ volumeID: v.id, name: v.name, token: v.token });


export async function registerE2bVolumes(app: FastifyInstance, { volumes, cfg }: ApiDeps): Promise<void> {
  const vm = (): VolumeManager => {
    if (!volumes) throw new CordonError('not_implemented', 'this daemon has no volumes');
    return volumes;
  };

  // Control plane: authenticated like the rest of it (the daemon's API key, when it has one).
  await app.register(async (scope) => {
    e2bErrors(scope);
    const r = scope.withTypeProvider() as unknown as TypedApp;
    r.post('/volumes', { schema: { body: z.object({ name: z.string().min(1).max(63) }).passthrough(), hide: true } }, async (req, reply) => {
      reply.status(201).send(volumeAndToken(await vm().create(req.body.name)));
    });
    r.get('/volumes', { schema: { hide: true } }, async () => (await vm().list()).map((v) => ({ volumeID: v.id, name: v.name })));
    r.get('/volumes/:volumeID', { schema: { params: volumeId, hide: true } }, async (req) => volumeAndToken(vm().get(req.params.volumeID)));
    r.delete('/volumes/:volumeID', { schema: { params: volumeId, hide: true } }, async (req, reply) => {
      await vm().remove(req.params.volumeID);
      reply.status(204).send();
    });
  });

  // Content API: the volume's own token, nothing else.
  await app.register(async (scope) => {
    e2bErrors(scope);
    const r = scope.withTypeProvider() as unknown as TypedApp;
    const open = async (id: string, auth: string | undefined) => {
      const token = typeof auth === 'string' && auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
      const v = vm().byToken(id, token);
      return { v, files: await vm().files(v.id) };
    };
    const base = '/volumecontent/:volumeID';

    r.get(`${base}/dir`, { schema: { params: volumeId, querystring: pathQ.extend({ depth: z.coerce.number().int().min(1).max(64).optional() }), hide: true } }, async (req) => {
      const { files } = await open(req.params.volumeID, req.headers.authorization);
      return (await files.list(req.query.path, req.query.depth ?? 1)).map(entryView);
    });
    r.post(
      `${base}/dir`,
      { schema: { params: volumeId, querystring: pathQ.extend({ uid: idNum.optional(), gid: idNum.optional(), mode: modeNum.optional(), force: bool }), hide: true } },
      async (req, reply) => {
        const { files } = await open(req.params.volumeID, req.headers.authorization);
        const q = req.query;
        reply.status(201).send(entryView(await files.mkdir(q.path, { parents: q.force === 'true', uid: q.uid, gid: q.gid, mode: q.mode })));
      },
    );
    r.get(`${base}/path`, { schema: { params: volumeId, querystring: pathQ, hide: true } }, async (req) => {
      const { files } = await open(req.params.volumeID, req.headers.authorization);
      return entryView(await files.stat(req.query.path));
    });
    r.patch(
      `${base}/path`,
      { schema: { params: volumeId, querystring: pathQ, body: z.object({ uid: idNum.nullish(), gid: idNum.nullish(), mode: modeNum.nullish() }).passthrough(), hide: true } },
      async (req) => {
        const { files } = await open(req.params.volumeID, req.headers.authorization);
        const b = req.body;
        return entryView(await files.setMetadata(req.query.path, { uid: b.uid ?? undefined, gid: b.gid ?? undefined, mode: b.mode ?? undefined }));
      },
    );
    r.delete(`${base}/path`, { schema: { params: volumeId, querystring: pathQ, hide: true } }, async (req, reply) => {
      const { files } = await open(req.params.volumeID, req.headers.authorization);
      await files.remove(req.query.path);
      reply.status(204).send();
    });
    r.get(`${base}/file`, { schema: { params: volumeId, querystring: pathQ, hide: true } }, async (req, reply) => {
      const { v, files } = await open(req.params.volumeID, req.headers.authorization);
      const { stream, size } = await files.read(req.query.path, v.sizeBytes);
      reply.header('content-type', 'application/octet-stream').header('content-length', String(size));
      stallDeadline(reply.raw, cfg.streamWriteDeadlineMs);
      return reply.send(stream);
    });
    r.put(
      `${base}/file`,
      {
        schema: { params: volumeId, querystring: pathQ.extend({ uid: idNum.optional(), gid: idNum.optional(), mode: modeNum.optional(), force: bool }), hide: true },
        bodyLimit: Number.MAX_SAFE_INTEGER,
      },
      async (req) => {
        const { v, files } = await open(req.params.volumeID, req.headers.authorization);
        const body = req.body as Readable | Buffer | string | undefined;
        const data = body === undefined || body === null ? [] : typeof body === 'string' || Buffer.isBuffer(body) ? [Buffer.from(body)] : body;
        const q = req.query;
        // Parents are made (as E2B's envd does for sandbox files); an existing file is replaced.
        return entryView(await files.write(q.path, data, { maxBytes: Math.min(cfg.maxUploadBytes, v.sizeBytes), idleMs: cfg.streamWriteDeadlineMs, uid: q.uid, gid: q.gid, mode: q.mode }));
      },
    );
  });
}
