// E2B's Template API (spec/openapi.yml), what the SDK's Template.build / buildInBackground /
// getBuildStatus / exists / assignTags / removeTags / getTags call: POST /v3/templates, GET
// /templates/{id}/files/{hash} (+ the signed upload URL it hands out), POST
// /v2/templates/{id}/builds/{buildID}, GET .../status, GET /templates/aliases/{alias}, and tags.
import type { FastifyInstance } from 'fastify';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { TEMPLATE_NAME } from '../../engine/templates/template-builder.js';
import { CordonError } from '../../errors/registry.js';
import { e2bErrors } from './errors.js';
import type { TemplateRecord } from '../../store/templates.js';
import type { TemplateDeps } from '../routes/templates.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { cordonName, E2bBuilds } from './template-builds.js';
import { E2bTemplateFiles, UPLOAD_PREFIX } from './template-files.js';
import { buildStartBody, FILES_HASH } from './template-steps.js';

const TAG = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const tagMsg = 'tags are lowercase letters, digits, . _ - (at most 63)';
const nameMsg = 'template names are lowercase letters, digits, . _ - (at most 63), optionally with ":tag"';

const requestBody = z
  .object({
    name: z.string().max(128).nullish(),
    alias: z.string().max(128).nullish(),
    tags: z.array(z.string().regex(TAG, tagMsg)).max(32).nullish(),
    cpuCount: z.number().int().min(1).max(256).nullish(),
    memoryMB: z.number().int().min(128).max(1024 * 1024).nullish(),
    minFreeDiskMb: z.number().int().min(0).nullish(),
    teamID: z.string().max(256).nullish(),
  })
  .passthrough();
const templateParams = z.object({ templateID: z.string().min(1).max(200) });
const fileParams = templateParams.extend({ hash: z.string().regex(FILES_HASH, 'hash: a sha256 hex digest (64 lowercase hex characters)') });
const buildParams = templateParams.extend({ buildID: z.string().min(1).max(64) });
const statusQuery = z.object({
  logsOffset: z.coerce.number().int().min(0).max(1_000_000).optional(),
  limit: z.coerce.number().int().min(0).max(10_000).optional(),
  level: z.enum(['debug', 'info', 'warn', 'error']).optional(),
});
const uploadParams = z.object({ hash: z.string().regex(FILES_HASH, 'hash: a sha256 hex digest') });
const uploadQuery = z.object({ expires: z.coerce.number().int().min(0), signature: z.string().max(128) });
const assignBody = z.object({ target: z.string().min(1).max(200), tags: z.array(z.string().regex(TAG, tagMsg)).min(1).max(32) });
const removeTagsBody = z.object({ name: z.string().min(1).max(200), tags: z.array(z.string().regex(TAG, tagMsg)).min(1).max(32) });
const aliasParams = z.object({ alias: z.string().min(1).max(200) });

/** "name" or "name:tag" → its parts (no tag: "default"), checked. */
export function splitName(s: string, what = 'name'): { name: string; tag: string } {
  const i = s.indexOf(':');
  const name = i < 0 ? s : s.slice(0, i);
  const tag = i < 0 ? 'default' : s.slice(i + 1);
  if (!TEMPLATE_NAME.test(name)) throw new CordonError('invalid_argument', `${what}: ${nameMsg}`);
  if (!TAG.test(tag)) throw new CordonError('invalid_argument', `${what}: ${tagMsg}`);
  return { name, tag };
}

/**
 * The cordon template an E2B create names with a tag ("name:tag"), when there is one; undefined sends
 * the id on to the snapshot lookup (E2B's snapshot ids have the same shape).
 */
export function e2bTaggedTemplate(deps: ApiDeps, templateID: string): string | undefined {
  if (!deps.templates || !/^[^:/]+:[^:/]+$/.test(templateID)) return undefined;
  const [name, tag] = templateID.split(':');
  if (tag === 'default' && (name === 'base' || deps.templates.service.find(name))) return name;
  return deps.templates.service.find(templateID) ? templateID : undefined;
}

/** The records of template `name`: its default tag (the plain name) and its "name:tag" records. */
function tagRecords(t: TemplateDeps, name: string): TemplateRecord[] {
  return t.service.list().filter((r) => r.name === name || r.name.startsWith(`${name}:`));
}

function tagOf(r: TemplateRecord): string {
  const i = r.name.indexOf(':');
  return i < 0 ? 'default' : r.name.slice(i + 1);
}


/** The removal of an E2B template (every tag), for DELETE /templates/{templateID}; false when there is none. */
export async function removeE2bTemplate(deps: ApiDeps, templateID: string): Promise<boolean> {
  const t = deps.templates;
  if (!t || !TEMPLATE_NAME.test(templateID) || templateID === 'base') return false;
  const recs = tagRecords(t, templateID);
  if (!recs.length) return false;
  // Checked for all first, so a refusal (the first record in use: its removal throws why) removes nothing.
  const busy = recs.find((r) => {
    const u = t.service.users(r.name);
    return u.sandboxes.length || u.templates.length;
  });
  if (busy) await t.service.remove(busy.name);
  for (const r of recs) await t.service.remove(r.name);
  return true;
}

export async function registerE2bTemplates(app: FastifyInstance, deps: ApiDeps): Promise<void> {
  const t = deps.templates;
  if (!t) return;
  const files = new E2bTemplateFiles(join(deps.cfg.dataDir, 'e2b-template-files'), { maxBytes: deps.cfg.maxUploadBytes, maxEntries: deps.cfg.maxLayerEntries });
  await files.init();
  const builds = new E2bBuilds(t, files);
  let prunedAt = 0;

  await app.register(async (scope) => {
    e2bErrors(scope);
    // The upload body is a stream to unpack, whatever its Content-Type (the SDK sends none).
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
      try {
        done(null, body === '' ? undefined : JSON.parse(body as string));
      } catch (e) {
        done(Object.assign(e as Error, { statusCode: 400 }), undefined);
      }
    });
    scope.addContentTypeParser('*', (_req, payload, done) => done(null, payload));
    const r = scope.withTypeProvider() as unknown as TypedApp;

    r.post('/v3/templates', { schema: { body: requestBody, hide: true } }, async (req, reply) => {
      const given = req.body.name ?? req.body.alias;
      if (!given) throw new CordonError('invalid_argument', 'name: give the template a name ("name" or "name:tag")');
      const { name, tag } = splitName(given);
      if (name === 'base') throw new CordonError('invalid_argument', 'name: "base" is the built-in template; choose another name');
      const tags = [...new Set([...(given.includes(':') ? [tag] : []), ...(req.body.tags ?? [])])];
      const b = builds.request(name, tags.length ? tags : ['default'], req.body.cpuCount ?? undefined, req.body.memoryMB ?? undefined);
      reply.status(202).send({ templateID: b.templateID, buildID: b.id, names: [name], aliases: [name], tags: b.tags, public: false });
    });

    r.get('/templates/:templateID/files/:hash', { schema: { params: fileParams, hide: true } }, async (req, reply) => {
      const { templateID, hash } = req.params;
      if (!builds.known(templateID) && !t.service.find(templateID)) throw new CordonError('not_found', `template ${templateID} not found; request a build with POST /v3/templates first`);
      if (Date.now() - prunedAt > 3600_000) (prunedAt = Date.now()), void files.prune();
      if (await files.present(hash)) return reply.status(201).send({ present: true });
      const host = req.headers.host ?? '';
      if (!/^[A-Za-z0-9.\-:[\]]{1,300}$/.test(host)) throw new CordonError('invalid_argument', 'Host: the request needs a Host header naming this server');
      reply.status(201).send({ present: false, url: files.uploadUrl(`${req.protocol}://${host}`, hash) });
    });

    r.put(`${UPLOAD_PREFIX}:hash`, { schema: { params: uploadParams, querystring: uploadQuery, hide: true } }, async (req, reply) => {
      files.verify(req.params.hash, req.query.expires, req.query.signature);
      const length = Number(req.headers['content-length']);
      if (!Number.isSafeInteger(length) || length <= 0) throw new CordonError('invalid_argument', 'Content-Length: send the tar.gz with its length');
      if (length > deps.cfg.maxUploadBytes) throw new CordonError('payload_too_large', `the upload is larger than ${deps.cfg.maxUploadBytes} bytes; copy fewer files`);
      const body = req.body as Readable | undefined;
      if (!body || typeof body.pipe !== 'function') throw new CordonError('invalid_argument', 'body: send the files as a tar.gz');
      await files.receive(req.params.hash, body);
      reply.status(200).send({});
    });

    r.post('/v2/templates/:templateID/builds/:buildID', { schema: { params: buildParams, body: buildStartBody, hide: true } }, async (req, reply) => {
      const b = builds.get(req.params.templateID, req.params.buildID);
      builds.trigger(b, req.body, (from) => {
        const { name, tag } = splitName(from, 'fromTemplate');
        const target = cordonName(name, tag);
        if (target !== 'base' && !t.service.find(target)) throw new CordonError('invalid_argument', `fromTemplate: template ${from} does not exist; build it first`);
        if (target === b.targets[0]) throw new CordonError('invalid_argument', `fromTemplate: a template cannot be built from itself (${from})`);
        return target;
      });
      reply.status(202).header('content-length', '0').send();
    });

    r.get('/templates/:templateID/builds/:buildID/status', { schema: { params: buildParams, querystring: statusQuery, hide: true } }, async (req) => {
      return builds.status(req.params.templateID, req.params.buildID, req.query.logsOffset ?? 0, req.query.limit ?? 100, req.query.level);
    });

    r.get('/templates/aliases/:alias', { schema: { params: aliasParams, hide: true } }, async (req) => {
      const alias = req.params.alias;
      if (alias !== 'base' && !(TEMPLATE_NAME.test(alias) && tagRecords(t, alias).length)) throw new CordonError('not_found', `template ${alias} not found`);
      return { templateID: alias, public: false };
    });

    r.get('/templates/:templateID/tags', { schema: { params: templateParams, hide: true } }, async (req) => {
      const recs = TEMPLATE_NAME.test(req.params.templateID) ? tagRecords(t, req.params.templateID) : [];
      if (!recs.length) throw new CordonError('not_found', `template ${req.params.templateID} not found`);
      return recs.map((r) => ({ tag: tagOf(r), buildID: r.labels['e2b.build_id'] ?? '', createdAt: new Date(r.createdAt).toISOString() }));
    });

    r.post('/templates/tags', { schema: { body: assignBody, hide: true } }, async (req, reply) => {
      const { name, tag } = splitName(req.body.target, 'target');
      const source = t.service.get(cordonName(name, tag));
      for (const newTag of req.body.tags) if (cordonName(name, newTag) !== source.name) t.service.alias(source.name, cordonName(name, newTag));
      reply.status(201).send({ buildID: source.labels['e2b.build_id'] ?? '', tags: req.body.tags });
    });

    r.delete('/templates/tags', { schema: { body: removeTagsBody, hide: true } }, async (req, reply) => {
      const { name } = splitName(req.body.name);
      const names = req.body.tags.map((tag) => cordonName(name, tag));
      for (const n of names) t.service.get(n);
      for (const n of names) await t.service.remove(n);
      reply.status(204).send();
    });
  });
}
