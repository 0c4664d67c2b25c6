import type { Readable } from 'node:stream';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { VolumeInfo } from '../../engine/volumes.js';
import type { RootEntry } from '../../volume/files-in-root.js';
import { parseSize } from '../../util/units.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { stallDeadline } from '../stream-flow.js';

// Named volumes: lifecycle under /v1/volumes and host-side access to their files.

const volRef = z.object({ name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/, 'a volume name or id: letters, digits, _ . -') });
const labels = z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/), z.string().max(256)).refine((m) => Object.keys(m).length <= 64, 'at most 64 labels');
const sizeField = z.union([z.string(), z.number()]).transform((v, ctx) => {
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: 'size must be a size like 512m, 10g or a byte count' });
    return z.NEVER;
  }
  return n;
});
const createBody = z.object({ name: z.string().min(1).max(63), size: sizeField.optional(), labels: labels.optional() }).strict();
const filePath = z.string().min(1).max(4096);
const idNum = z.coerce.number().int().min(0).max(2 ** 31 - 1);
const octal = z.string().regex(/^[0-7]{3,4}$/, 'an octal mode like 644');
const truthy = z.enum(['true', 'false', '1', '0']).optional();
const isTrue = (v: string | undefined) => v === 'true' || v === '1';

export function volumeView(v: VolumeInfo) {
  return {
    id: v.id,
    name: v.name,
    size: v.sizeBytes,
    used: v.usedBytes ?? null,
    labels: v.labels,
    created_at: new Date(v.createdAt).toISOString(),
    mounted_by: v.mountedBy,
  };
}

export function entryView(e: RootEntry) {
  return {
    name: e.name,
    path: e.path,
    type: e.type,
    size: e.size,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    modified_at: e.mtime.toISOString(),
    symlink_target: e.target ?? null,
  };
}

export function registerVolumeRoutes(app: TypedApp, { volumes, cfg }: ApiDeps): void {
  const vm = () => {
    if (!volumes) throw new CordonError('not_implemented', 'this daemon has no volumes');
    return volumes;
  };

  app.post('/v1/volumes', { schema: { summary: 'Create a named volume (size default 1g)', body: createBody } }, async (req, reply) => {
    reply.status(201).send(volumeView(await vm().create(req.body.name, req.body.size, req.body.labels)));
  });
  app.get('/v1/volumes', { schema: { summary: 'List volumes' } }, async () => (await vm().list()).map(volumeView));
  app.get('/v1/volumes/:name', { schema: { summary: 'Inspect a volume (by name or id)', params: volRef } }, async (req) => volumeView(await vm().inspect(req.params.name)));
  app.delete(
    '/v1/volumes/:name',
    { schema: { summary: 'Remove a volume; refused while a sandbox mounts it unless force=true', params: volRef, querystring: z.object({ force: truthy }).strict() } },
    async (req, reply) => {
      await vm().remove(req.params.name, isTrue(req.query.force));
      reply.status(204).send();
    },
  );

  app.get(
    '/v1/volumes/:name/files',
    { schema: { summary: "Download a file of the volume (streamed; links are not followed, only regular files)", params: volRef, querystring: z.object({ path: filePath }).strict() } },
    async (req, reply) => {
      const v = vm().get(req.params.name);
      const { stream, size } = await (await vm().files(v.id)).read(req.query.path, v.sizeBytes);
      reply.header('content-type', 'application/octet-stream').header('x-file-size', String(size)).header('content-length', String(size));
      stallDeadline(reply.raw, cfg.streamWriteDeadlineMs);
      return reply.send(stream);
    },
  );
  app.put(
    '/v1/volumes/:name/files',
    {
      schema: {
        summary: 'Upload a file into the volume (streamed body, application/octet-stream); parents are made',
        params: volRef,
        querystring: z.object({ path: filePath, mode: octal.optional(), uid: idNum.optional(), gid: idNum.optional() }).strict(),
      },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (req) => {
      const v = vm().get(req.params.name);
      const body = req.body as Readable | Buffer | string | undefined;
      if (body === undefined || body === null) throw new CordonError('invalid_argument', 'body: send the file contents as application/octet-stream');
      const data = typeof body === 'string' || Buffer.isBuffer(body) ? [Buffer.from(body)] : body;
      const q = req.query;
      return entryView(
        await (await vm().files(v.id)).write(q.path, data, {
          maxBytes: Math.min(cfg.maxUploadBytes, v.sizeBytes),
          idleMs: cfg.streamWriteDeadlineMs,
          mode: q.mode ? parseInt(q.mode, 8) : undefined,
          uid: q.uid,
          gid: q.gid,
        }),
      );
    },
  );
  app.delete('/v1/volumes/:name/files', { schema: { summary: 'Remove a file, link or directory tree of the volume', params: volRef, querystring: z.object({ path: filePath }).strict() } }, async (req, reply) => {
    await (await vm().files(req.params.name)).remove(req.query.path);
    reply.status(204).send();
  });
  app.get('/v1/volumes/:name/files/stat', { schema: { summary: 'Stat a path of the volume (links not followed)', params: volRef, querystring: z.object({ path: filePath }).strict() } }, async (req) =>
    entryView(await (await vm().files(req.params.name)).stat(req.query.path)),
  );
  app.get(
    '/v1/volumes/:name/files/list',
    { schema: { summary: 'List a directory of the volume to a depth', params: volRef, querystring: z.object({ path: filePath, depth: z.coerce.number().int().min(1).max(64).default(1) }).strict() } },
    async (req) => (await (await vm().files(req.params.name)).list(req.query.path, req.query.depth)).map(entryView),
  );
  app.post(
    '/v1/volumes/:name/files/mkdir',
    { schema: { summary: 'mkdir -p in the volume', params: volRef, body: z.object({ path: filePath, mode: octal.optional(), uid: idNum.optional(), gid: idNum.optional() }).strict() } },
    async (req, reply) => {
      const b = req.body;
      reply.status(201).send(entryView(await (await vm().files(req.params.name)).mkdir(b.path, { parents: true, mode: b.mode ? parseInt(b.mode, 8) : undefined, uid: b.uid, gid: b.gid })));
    },
  );
  app.patch(
    '/v1/volumes/:name/files/metadata',
    {
      schema: {
        summary: 'chmod / chown a path of the volume',
        params: volRef,
        body: z.object({ path: filePath, mode: octal.optional(), uid: idNum.optional(), gid: idNum.optional() }).strict(),
      },
    },
    async (req) => {
      const b = req.body;
      return entryView(await (await vm().files(req.params.name)).setMetadata(b.path, { mode: b.mode ? parseInt(b.mode, 8) : undefined, uid: b.uid, gid: b.gid }));
    },
  );
}
