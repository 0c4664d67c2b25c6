import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { CordonError } from '../../errors/registry.js';
import type { BuildRecords } from '../../engine/templates/build-records.js';
import type { TemplateBuilder } from '../../engine/templates/template-builder.js';
import type { TemplateService } from '../../engine/templates/template-service.js';
import type { PoolView, WarmPools } from '../../engine/templates/warm-pool.js';
import type { BuildEvent } from '../../engine/templates/step-sandbox.js';
import { extractContext } from '../../image/template-build/context.js';
import { removeTree } from '../../image/template-build/layer-dirs.js';
import { networkBody, toNetworkSpec } from '../../net/schema.js';
import { warmNetworkOf, type TemplateRecord } from '../../store/templates.js';
import { parseSize } from '../../util/units.js';
import type { ApiDeps, TypedApp } from '../server.js';

export interface TemplateDeps {
  service: TemplateService;
  builder: TemplateBuilder;
  /** Build records (E2B's getBuildStatus), kept across restarts. */
  builds: BuildRecords;
  /** Warm pools (absent in daemons built without them). */
  pools?: WarmPools;
}

const name = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'template names are lowercase letters, digits, . _ - (at most 63)');
const oneOrMany = z.union([z.string(), z.array(z.string())]).optional();
const buildQuery = z
  .object({
    name,
    dockerfile: z.string().min(1).max(4096).default('Dockerfile'),
    cpus: z.coerce.number().positive().max(256).optional(),
    memory: z.string().max(32).optional(),
    no_cache: z.enum(['true', 'false', '1', '0']).optional(),
    network: z.string().max(65536).optional(),
    build_arg: oneOrMany,
    start_cmd: z.string().max(65536).optional(),
    ready_cmd: z.string().max(65536).optional(),
    step_timeout: z.coerce.number().int().positive().max(24 * 3600).optional(),
    ready_timeout: z.coerce.number().int().positive().max(3600).optional(),
    warm: z.coerce.number().int().min(0).max(64).optional(),
  })
  .strict();
// Inspect and remove also take E2B's tagged records ("name:tag").
const nameParams = z.object({ name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}(?::[a-z0-9][a-z0-9._-]{0,62})?$/, 'template names are lowercase letters, digits, . _ - (at most 63), optionally with :tag') });
const warmBody = z
  .object({
    size: z.number().int().min(0).max(64),
    // How many of the members wait in a deny-all network namespace, for creates with a network policy.
    network: z.number().int().min(0).max(64).optional(),
  })
  .strict()
  .refine((b) => b.network === undefined || b.network <= b.size, { message: 'network counts members among size: give at most size', path: ['network'] });

export function templateView(t: TemplateRecord, pool?: PoolView) {
  return {
    name: t.name,
    from: t.parentTemplate ? `template:${t.parentTemplate}` : t.base.kind === 'base' ? 'template:base' : t.base.ref,
    image_id: t.base.kind === 'image' ? t.base.id : null,
    layers: t.layers,
    config: t.config,
    exposed_ports: t.exposed,
    labels: t.labels,
    start_cmd: t.startCmd ?? null,
    ready_cmd: t.readyCmd ?? null,
    ready_timeout_s: t.readyTimeoutMs === undefined ? null : t.readyTimeoutMs / 1000,
    cpus: t.cpus ?? null,
    memory: t.memoryBytes ?? null,
    // A memory snapshot with the start command's service up (runsc); null: creates boot and start it.
    snapshot: t.snapshot ?? null,
    warm: pool ?? { size: t.warm ?? 0, network: warmNetworkOf(t), ready: 0, network_ready: 0, starting: 0, claims: 0, misses: 0, last_error: null, members: [] },
    dockerfile: t.dockerfile,
    created_at: new Date(t.createdAt).toISOString(),
  };
}

function templates(deps: ApiDeps): TemplateDeps {
  if (!deps.templates) throw new CordonError('not_implemented', 'this daemon cannot build templates');
  return deps.templates;
}

function parseNetwork(text: string | undefined, deps: ApiDeps) {
  if (text === undefined) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new CordonError('invalid_argument', 'network: give a JSON object like the network of a create request, e.g. {"mode":"allowlist","allow_hosts":["deb.debian.org"]}');
  }
  const r = networkBody.safeParse(raw);
  if (!r.success) throw new CordonError('invalid_argument', `network: ${r.error.issues.map((i) => `${i.path.join('.') || 'network'}: ${i.message}`).join('; ')}`);
  return toNetworkSpec(r.data, deps.net?.cfg ?? { defaultMode: 'none' });
}

export function registerTemplateRoutes(app: TypedApp, deps: ApiDeps): void {
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));

  const view = (t: TemplateRecord) => templateView(t, deps.templates?.pools?.view(t));

  app.get('/v1/templates', { schema: { summary: 'List built templates' } }, async () => templates(deps).service.list().map(view));

  app.get('/v1/templates/:name', { schema: { summary: 'Inspect a built template', params: nameParams } }, async (req) => view(templates(deps).service.get(req.params.name)));

  app.put('/v1/templates/:name/warm', { schema: { summary: 'Set how many started, unclaimed sandboxes of the template the daemon keeps (0 empties its warm pool), and how many of them have a deny-all network namespace for creates with a network policy', params: nameParams, body: warmBody } }, async (req) => {
    const t = templates(deps);
    if (!t.pools) throw new CordonError('not_implemented', 'this daemon keeps no warm pools');
    return view(await t.pools.setSize(req.params.name, req.body.size, req.body.network));
  });

  app.delete('/v1/templates/:name', { schema: { summary: 'Remove a template (refused while sandboxes or other templates use it)', params: nameParams } }, async (req) => {
    await templates(deps).service.remove(req.params.name);
    return { removed: req.params.name };
  });

  app.post(
    '/v1/templates',
    {
      schema: { summary: 'Build a template from a Dockerfile: the body is the build context as a tar (application/x-tar); the reply is NDJSON events ending in a result or error line', querystring: buildQuery },
      bodyLimit: Number.MAX_SAFE_INTEGER,
    },
    async (req, reply) => {
      const t = templates(deps);
      const q = req.query;
      const memoryBytes = q.memory === undefined ? undefined : parseSize(q.memory);
      if (q.memory !== undefined && (memoryBytes === undefined || memoryBytes < 32 * 1024 * 1024)) throw new CordonError('invalid_argument', 'memory: give a size of at least 32m, e.g. 512m or 2g');
      const buildArgs: Record<string, string> = {};
      for (const a of [q.build_arg ?? []].flat()) {
        const i = a.indexOf('=');
        if (i <= 0) throw new CordonError('invalid_argument', `build_arg: "${a}" must look like NAME=VALUE`);
        buildArgs[a.slice(0, i)] = a.slice(i + 1);
      }
      const network = parseNetwork(q.network, deps);
      if (network) deps.mgr.net?.validate(network);
      const body = req.body as Readable | undefined;
      if (!body || typeof body.pipe !== 'function') throw new CordonError('invalid_argument', 'body: send the build context as a tar (Content-Type: application/x-tar)');
      const contextDir = join(t.service.layers.tmpDir, `context-${randomBytes(6).toString('hex')}`);
      await mkdir(contextDir, { mode: 0o700 });
      try {
        await extractContext(body, contextDir, { maxBytes: deps.cfg.maxUploadBytes, maxEntries: deps.cfg.maxLayerEntries });
        reply.hijack();
        const out = reply.raw;
        out.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
        const ac = new AbortController();
        out.on('close', () => !out.writableFinished && ac.abort());
        const line = (v: unknown) => out.writable && out.write(`${JSON.stringify(v)}\n`);
        try {
          const rec = await t.builder.build(
            { name: q.name, contextDir, dockerfile: q.dockerfile, buildArgs, cpus: q.cpus, memoryBytes, noCache: q.no_cache === 'true' || q.no_cache === '1', network, startCmd: q.start_cmd, readyCmd: q.ready_cmd, readyTimeoutMs: q.ready_timeout && q.ready_timeout * 1000, warm: q.warm, stepTimeoutMs: q.step_timeout && q.step_timeout * 1000, signal: ac.signal },
            { event: (ev: BuildEvent) => line(ev), backlog: () => out.writableLength, onDrain: (cb) => (out.writableLength ? out.once('drain', cb) : cb()) },
          );
          line({ type: 'result', template: view(rec) });
        } catch (e) {
          const err = e instanceof CordonError ? e : new CordonError('internal', (e as Error).message);
          line({ type: 'error', error: err.toJSON(), status: err.status });
        }
        out.end();
      } finally {
        await removeTree(contextDir).catch(() => {});
      }
    },
  );
}
