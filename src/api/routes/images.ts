import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { ImageRecord } from '../../image/oci/image-db.js';
import type { ImageStore } from '../../image/oci/image-store.js';
import { configSchema, imageConfigOf, parseDoc } from '../../image/oci/manifest.js';
import type { PullEvent } from '../../image/oci/progress.js';
import type { ApiDeps, TypedApp } from '../server.js';

const imageRef = z.string().min(1).max(512).refine((s) => !s.includes('\0') && !/\s/.test(s), 'an image reference has no spaces');
const pullBody = z
  .object({
    image: imageRef,
    username: z.string().max(256).optional(),
    password: z.string().max(4096).optional(),
    token: z.string().max(8192).optional(),
    stream: z.boolean().optional(),
  })
  .strict()
  .refine((b) => !b.password || b.username, { message: 'give username with password', path: ['username'] });
const importQuery = z.object({ name: imageRef.optional(), path: z.string().min(1).max(4096).optional() }).strict();
const wildcard = z.object({ '*': imageRef });
const rmQuery = z.object({ force: z.enum(['true', 'false', '1', '0']).optional() }).strict();

export function imageView(img: ImageRecord) {
  const cfg = JSON.parse(img.config) as { architecture?: string; os?: string; created?: string };
  return {
    name: img.name,
    id: img.id,
    digest: img.digest,
    size: img.size,
    source: img.source,
    architecture: cfg.architecture ?? null,
    os: cfg.os ?? null,
    created: cfg.created ?? null,
    stored_at: new Date(img.createdAt).toISOString(),
    config: imageConfigOf(parseDoc(configSchema, Buffer.from(img.config), img.name)),
    layers: img.layers.map((l) => ({ digest: l.digest, diff_id: l.diffId, size: l.size, media_type: l.mediaType ?? null })),
  };
}

function store(deps: ApiDeps): ImageStore {
  if (!deps.images) throw new CordonError('not_implemented', 'this daemon has no image store');
  return deps.images;
}

export function registerImageRoutes(app: TypedApp, deps: ApiDeps): void {
  app.get('/v1/images', { schema: { summary: 'List images in the store' } }, async () => store(deps).list().map(imageView));

  app.post('/v1/images/pull', { schema: { summary: 'Pull an image; with stream=true the reply is NDJSON progress ending in a result or error line', body: pullBody } }, async (req, reply) => {
    const b = req.body;
    const credentials = b.username || b.token ? { username: b.username, password: b.password, token: b.token } : undefined;
    if (!b.stream) return imageView(await store(deps).pull(b.image, { credentials }));
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const line = (v: unknown) => out.writable && out.write(`${JSON.stringify(v)}\n`);
    try {
      const img = await store(deps).pull(b.image, { credentials, onEvent: (ev: PullEvent) => line(ev) });
      line({ type: 'result', image: imageView(img) });
    } catch (e) {
      const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
      line({ type: 'error', error: err.toJSON(), status: err.status });
    }
    out.end();
  });

  app.post(
    '/v1/images/import',
    { schema: { summary: 'Import a docker save archive or OCI layout: upload it (application/octet-stream) or name a path on the daemon host (?path=)', querystring: importQuery }, bodyLimit: Number.MAX_SAFE_INTEGER },
    async (req, reply) => {
      const s = store(deps);
      if (req.query.path) {
        if (!req.query.path.startsWith('/')) throw new CordonError('invalid_argument', 'path: give an absolute path on the daemon host');
        reply.status(201);
        return (await s.import(req.query.path, { name: req.query.name })).map(imageView);
      }
      const body = req.body as Readable | undefined;
      if (!body || typeof (body as Readable).pipe !== 'function') throw new CordonError('invalid_argument', 'body: upload the archive as application/octet-stream, or give ?path= on the daemon host');
      const tmp = join(s.layers.tmpDir, `upload-${randomBytes(6).toString('hex')}.tar`);
      try {
        await pipeline(body, createWriteStream(tmp, { mode: 0o600 }));
        const imgs = await s.import(tmp, { name: req.query.name });
        reply.status(201);
        return imgs.map(imageView);
      } finally {
        await rm(tmp, { force: true });
      }
    },
  );

  app.post('/v1/images/prune', { schema: { summary: 'Delete layers that no image and no sandbox uses' } }, async () => {
    const r = await store(deps).prune();
    return { removed_layers: r.removed, kept_layers: r.kept };
  });

  app.get('/v1/images/*', { schema: { summary: 'Inspect an image by name or ID', params: wildcard } }, async (req) => imageView(store(deps).get(req.params['*'])));

  app.delete('/v1/images/*', { schema: { summary: 'Remove an image name (or every name of an ID); layers go at the next prune', params: wildcard, querystring: rmQuery } }, async (req) => {
    const force = req.query.force === 'true' || req.query.force === '1';
    return { removed: store(deps).remove(req.params['*'], force).map((i) => i.name) };
  });
}
