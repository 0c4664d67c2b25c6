import { errors } from '../../errors/registry.js';
import { credentialsParams, idParams, s3CredentialsBody, syncBody } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { syncReportView } from '../views.js';

// S3 sync: credentials registered by name (the secret goes in, never out) and the sync call.

export function registerS3Routes(app: TypedApp, { mgr }: ApiDeps): void {
  const s3 = () => {
    if (!mgr.s3) throw errors.invalid('s3', 'this daemon has no S3 support');
    return mgr.s3;
  };

  app.put('/v1/s3/credentials/:name', { schema: { summary: 'Register (or replace) S3 credentials under a name; the secret is never returned', params: credentialsParams, body: s3CredentialsBody } }, async (req, reply) => {
    const b = req.body;
    await s3().credentials.put(req.params.name, { accessKeyId: b.access_key_id, secretAccessKey: b.secret_access_key, sessionToken: b.session_token });
    reply.status(201).send({ name: req.params.name });
  });

  app.get('/v1/s3/credentials', { schema: { summary: 'Registered S3 credentials: names and the access key\'s first characters' } }, async () => s3().credentials.list());

  app.delete('/v1/s3/credentials/:name', { schema: { summary: 'Forget S3 credentials (sandboxes that name them can no longer sync)', params: credentialsParams } }, async (req, reply) => {
    await s3().credentials.remove(req.params.name);
    reply.status(204).send();
  });

  app.post('/v1/sandboxes/:id/sync', { schema: { summary: 'Sync a running sandbox\'s hooks and on_demand S3 syncs now: pull, push or both (pull, then push)', params: idParams, body: syncBody } }, async (req) => {
    const reports = await s3().sync(req.params.id, req.body?.direction ?? 'both');
    return { complete: reports.every((r) => r.complete), reports: reports.map(syncReportView) };
  });
}
