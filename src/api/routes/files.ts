import type { Readable } from 'node:stream';
import { cleanPath } from '../../engine/files.js';
import { chmodBody, chownBody, idParams, listFilesQuery, mkdirBody, moveBody, pathQuery, removeFileQuery, truthy, writeQuery, xattrBody, xattrQuery } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { fileView } from '../views.js';
import { CordonError } from '../../errors/registry.js';
import { stallDeadline } from '../stream-flow.js';

export function registerFileRoutes(app: TypedApp, { mgr, cfg }: ApiDeps): void {
  const files = (id: string) => mgr.running(id, 'files').files;

  app.get('/v1/sandboxes/:id/files/content', { schema: { summary: 'Download a file (streamed)', params: idParams, querystring: pathQuery } }, async (req, reply) => {
    const path = cleanPath(req.query.path);
    const { stream, size, content } = await files(req.params.id).read(path, req.query.user);
    reply.header('content-type', 'application/octet-stream').header('x-file-size', String(size));
    stallDeadline(reply.raw, cfg.streamWriteDeadlineMs);
    // A small file came whole: sent with its length rather than piped as a chunked stream.
    return reply.send(content ?? stream);
  });

  app.put(
    '/v1/sandboxes/:id/files/content',
    { schema: { summary: 'Upload a file (streamed body, application/octet-stream)', params: idParams, querystring: writeQuery }, bodyLimit: Number.MAX_SAFE_INTEGER },
    async (req, reply) => {
      const q = req.query;
      const body = req.body as Readable | Buffer | string | undefined;
      if (body === undefined || body === null) throw new CordonError('invalid_argument', 'body: send the file contents as application/octet-stream');
      const data = typeof body === 'string' ? Buffer.from(body) : body;
      const entry = await files(req.params.id).write(cleanPath(q.path), data as Readable | Buffer, {
        user: q.user,
        mode: q.mode ? parseInt(q.mode, 8) : undefined,
        append: truthy(q.append),
        parents: q.parents === undefined ? true : truthy(q.parents),
      });
      reply.status(200).send(fileView(entry));
    },
  );

  app.get('/v1/sandboxes/:id/files/stat', { schema: { summary: 'Stat a path (symlinks not followed)', params: idParams, querystring: pathQuery } }, async (req) =>
    fileView(await files(req.params.id).stat(cleanPath(req.query.path), req.query.user)),
  );

  app.get('/v1/sandboxes/:id/files/list', { schema: { summary: 'List a directory to a depth', params: idParams, querystring: listFilesQuery } }, async (req) =>
    (await files(req.params.id).list(cleanPath(req.query.path), req.query.depth, req.query.user)).map(fileView),
  );

  app.post('/v1/sandboxes/:id/files/mkdir', { schema: { summary: 'mkdir -p', params: idParams, body: mkdirBody } }, async (req, reply) => {
    reply.status(201).send(fileView(await files(req.params.id).mkdir(cleanPath(req.body.path), req.body.user)));
  });

  app.post('/v1/sandboxes/:id/files/move', { schema: { summary: 'Move or rename', params: idParams, body: moveBody } }, async (req) =>
    fileView(await files(req.params.id).move(cleanPath(req.body.from, '/', 'from'), cleanPath(req.body.to, '/', 'to'), req.body.user)),
  );

  app.delete('/v1/sandboxes/:id/files', { schema: { summary: 'Remove a file or directory', params: idParams, querystring: removeFileQuery } }, async (req, reply) => {
    await files(req.params.id).remove(cleanPath(req.query.path), req.query.user, req.query.recursive === undefined ? true : truthy(req.query.recursive));
    reply.status(204).send();
  });

  app.post('/v1/sandboxes/:id/files/chmod', { schema: { summary: 'Change a path\'s permission bits (octal)', params: idParams, body: chmodBody } }, async (req) =>
    fileView(await files(req.params.id).chmod(cleanPath(req.body.path), parseInt(req.body.mode, 8), req.body.user)),
  );

  app.post('/v1/sandboxes/:id/files/chown', { schema: { summary: 'Change a path\'s owner and/or group (numeric ids)', params: idParams, body: chownBody } }, async (req) =>
    fileView(await files(req.params.id).chown(cleanPath(req.body.path), { uid: req.body.uid, gid: req.body.gid }, req.body.user)),
  );

  app.get('/v1/sandboxes/:id/files/xattrs', { schema: { summary: 'List the extended attributes of a path', params: idParams, querystring: pathQuery } }, async (req) => ({
    names: await files(req.params.id).listXattrs(cleanPath(req.query.path), req.query.user),
  }));

  app.get('/v1/sandboxes/:id/files/xattr', { schema: { summary: 'Read one extended attribute (value in base64)', params: idParams, querystring: xattrQuery } }, async (req) => ({
    name: req.query.name,
    value: (await files(req.params.id).getXattr(cleanPath(req.query.path), req.query.name, req.query.user)).toString('base64'),
  }));

  app.put('/v1/sandboxes/:id/files/xattr', { schema: { summary: 'Set one extended attribute (value in base64)', params: idParams, body: xattrBody } }, async (req, reply) => {
    await files(req.params.id).setXattr(cleanPath(req.body.path), req.body.name, Buffer.from(req.body.value, 'base64'), req.body.user);
    reply.status(204).send();
  });

  app.delete('/v1/sandboxes/:id/files/xattr', { schema: { summary: 'Remove one extended attribute', params: idParams, querystring: xattrQuery } }, async (req, reply) => {
    await files(req.params.id).removeXattr(cleanPath(req.query.path), req.query.name, req.query.user);
    reply.status(204).send();
  });
}
