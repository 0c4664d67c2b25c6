// E2B's control plane (spec/openapi.yml): create, connect, list, inspect, kill, timeout, pause, metrics.
import type { FastifyError, FastifyInstance } from 'fastify';
import { z } from 'zod';
import type { SandboxRecord } from '../../engine/types.js';
import { CordonError, retryAfterSeconds } from '../../errors/registry.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { newToken, type E2bOptions, type EnvdTokens } from './tokens.js';
import { e2bNetworkBody, e2bNetworkSpec, fromE2b } from './network.js';
import { sandboxPage } from './list-order.js';
import { registerE2bSnapshots, snapshotForTemplateId } from './snapshots.js';
import { e2bTaggedTemplate, removeE2bTemplate } from './templates.js';
import { e2bState, metricView, sandboxCreated, sandboxDetail, sandboxListed } from './views.js';

const envVars = z
  .record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'environment variable names are letters, digits and _'), z.string().max(131072))
  .refine((m) => Object.keys(m).length <= 1024, 'at most 1024 variables');
const metadata = z
  .record(z.string().min(1).max(256), z.string().max(1024))
  .refine((m) => Object.keys(m).length <= 64, 'at most 64 metadata entries');
const seconds = z.number().int().min(0).max(86_400 * 30);

const newSandbox = z
  .object({
    // A template name, or a snapshot id in E2B's "namespace/name:tag" form.
    templateID: z.string().max(256).regex(/^[A-Za-z0-9][A-Za-z0-9._:/-]*$/, 'template names are lowercase letters, digits, . _ - (snapshot ids may have / and :)'),
    timeout: seconds.optional(),
    metadata: metadata.nullish(),
    envVars: envVars.nullish(),
    secure: z.boolean().optional(),
    autoPause: z.boolean().nullish(),
    autoPauseMemory: z.boolean().nullish(),
    autoResume: z.object({ enabled: z.boolean() }).nullish(),
    allow_internet_access: z.boolean().nullish(),
    network: e2bNetworkBody.nullish(),
    // Stored as given (bounded) and otherwise ignored: the SDK starts the MCP gateway itself.
    mcp: z
      .record(z.string(), z.unknown())
      .nullish()
      .refine((m) => !m || JSON.stringify(m).length <= 64 * 1024, 'at most 64 KiB of MCP configuration'),
    iam: z.unknown().optional(),
    volumeMounts: z.array(z.object({ name: z.string().min(1).max(128), path: z.string().min(1).max(4096) }).passthrough()).max(32).nullish(),
  })
  .passthrough();
const idParams = z.object({ sandboxID: z.string().min(1).max(128) });
const timeoutBody = z.object({ timeout: seconds });
const networkUpdateBody = e2bNetworkBody.extend({ allow_internet_access: z.boolean().nullish() });
const connectBody = z.object({ timeout: seconds.optional(), memory: z.boolean().optional() }).passthrough();
const listQuery = z.object({
  metadata: z.string().max(8192).optional(),
  state: z.union([z.string(), z.array(z.string())]).optional(),
  limit: z.coerce.number().int().min(1).max(1000).optional(),
  nextToken: z.string().max(512).optional(),
  template: z.string().max(256).optional(),
  startedAfter: z.string().max(64).optional(),
  order: z.enum(['asc', 'desc'], { message: 'order: use asc or desc' }).optional(),
});
const metricsQuery = z.object({ start: z.coerce.number().int().min(0).optional(), end: z.coerce.number().int().min(0).optional() });

/** E2B's default sandbox lifetime when the request names none. */
const DEFAULT_TIMEOUT_S = 15;

/**
 * The SDK encodes each key and value, joins them as a query string (which encodes them again) and
 * sends that as one query value (encoded a third time): {a: 'b c'} arrives as metadata=a%3Db%252520c.
 * Fastify undoes one layer, URLSearchParams the second, decodeURIComponent the last, as E2B's API does.
 */
function parseMetadataFilter(q: string | undefined): Record<string, string> {
  if (!q) return {};
  const out: Record<string, string> = {};
  try {
    for (const [k, v] of new URLSearchParams(q)) out[decodeURIComponent(k)] = decodeURIComponent(v);
  } catch {
    throw new CordonError('invalid_argument', 'metadata: not a URL-encoded "key=value&key2=value2" filter');
  }
  return out;
}

function parseStates(s: string | string[] | undefined): ('running' | 'paused')[] {
  const list = [s ?? []].flat().flatMap((x) => x.split(',')).filter(Boolean);
  for (const st of list) if (st !== 'running' && st !== 'paused') throw new CordonError('invalid_argument', `state: unknown state "${st}"; use running or paused`);
  return list.length ? (list as ('running' | 'paused')[]) : ['running', 'paused'];
}

export async function registerControlPlane(app: FastifyInstance, deps: ApiDeps, tokens: EnvdTokens): Promise<void> {
  const { mgr, cfg, net } = deps;
  await app.register(async (scope) => {
    // E2B clients read errors as {code: <HTTP status>, message}.
    scope.setErrorHandler((err: FastifyError, _req, reply) => {
      const status = err instanceof CordonError ? err.status : err.validation ? 400 : err.statusCode && err.statusCode < 500 ? err.statusCode : 500;
      const message = err.validation ? `invalid request: ${err.message}` : err.message;
      const retryAfter = retryAfterSeconds(err);
      if (retryAfter) reply.header('retry-after', String(retryAfter));
      reply.status(status).send({ code: status, message });
    });
    // connect's body is optional: an empty JSON body is no body (create and the rest still need theirs).
    const json = scope.getDefaultJsonParser('error', 'error');
    scope.removeContentTypeParser('application/json');
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
      if (body === '' && /\/(connect|resume)$/.test(req.url.split('?')[0])) return done(null, undefined);
      return json(req, body as string, done);
    });
    const r = scope.withTypeProvider() as unknown as TypedApp;

    /** A sandbox E2B may see (error-state ones are gone as far as E2B is concerned). */
    const visible = (id: string): SandboxRecord => {
      const rec = mgr.store.get(id);
      if (!rec || !e2bState(rec)) throw new CordonError('not_found', `sandbox ${id} not found`);
      return rec;
    };

    /** The E2B tokens and options of a sandbox that has been issued them. */
    const e2bOf = (id: string) => {
      const e2b = tokens.sandbox(id);
      if (!e2b) throw new CordonError('internal', `sandbox ${id} has no E2B tokens`);
      return e2b;
    };
    const create = async (body: z.infer<typeof newSandbox>) => {
      const options: E2bOptions = {
        mcp: body.mcp ?? undefined,
        allowPublicTraffic: body.network?.allowPublicTraffic,
        maskRequestHost: body.network?.maskRequestHost,
        autoPause: body.autoPause ?? undefined,
        autoPauseMemory: body.autoPauseMemory ?? undefined,
        autoResume: body.autoResume?.enabled,
      };
      tokens.prune();
      // "name:tag" names a tagged template when one exists, else a snapshot (E2B gives both that shape).
      const tagged = e2bTaggedTemplate(deps, body.templateID);
      const snapshot = tagged ? undefined : snapshotForTemplateId(deps, body.templateID);
      const rec = await mgr.create({
        ...(snapshot ? { snapshot: snapshot.id } : { template: tagged ?? body.templateID }),
        env: body.envVars ?? {},
        timeoutMs: (body.timeout ?? DEFAULT_TIMEOUT_S) * 1000,
        labels: body.metadata ?? {},
        volumes: (body.volumeMounts ?? []).map((m) => ({ name: m.name, path: m.path })),
        // From a snapshot, no network options means the snapshot's own policy.
        network: snapshot && body.allow_internet_access == null && !body.network ? undefined : e2bNetworkSpec(body.allow_internet_access, body.network, !!net?.cfg.egressInterface),
        // lifecycle.onTimeout 'pause' (autoPause); keepMemory false (autoPauseMemory) keeps the files only.
        onTimeout: body.autoPause ? (body.autoPauseMemory === false ? 'stop' : 'pause') : 'kill',
      });
      try {
        tokens.issue(rec.id, { trafficToken: options.allowPublicTraffic === false ? newToken() : undefined, options });
      } catch (e) {
        await mgr.remove(rec.id, true).catch(() => {});
        throw e;
      }
      return sandboxCreated(rec, e2bOf(rec.id), cfg.domain);
    };
    for (const path of ['/sandboxes', '/v2/sandboxes']) {
      r.post(path, { schema: { body: newSandbox, hide: true } }, async (req, reply) => reply.status(201).send(await create(req.body)));
    }

    const connect = async (id: string, timeout: number | undefined, memory?: boolean) => {
      let rec = visible(id);
      let resumed = false;
      // onResume 'reboot' (memory: false): the files are kept, the processes and memory are not.
      if (memory === false && (rec.state === 'paused' || rec.state === 'pausing')) rec = await mgr.stop(id);
      // A pause in progress holds the sandbox's lock: the resume runs once it is paused.
      if (rec.state === 'paused' || rec.state === 'pausing') (rec = await mgr.resume(id)), (resumed = true);
      else if (rec.state === 'stopped') (rec = await mgr.start(id)), (resumed = true);
      // Connect only ever extends the lifetime, as E2B documents.
      if (timeout !== undefined && timeout > 0) {
        const want = Date.now() + timeout * 1000;
        if (rec.expiresAt === undefined ? resumed : rec.expiresAt < want) rec = await mgr.setTimeout(id, timeout * 1000);
      }
      tokens.issue(id);
      return { status: resumed ? 201 : 200, body: sandboxCreated(rec, e2bOf(id), cfg.domain) };
    };
    for (const path of ['/sandboxes/:sandboxID/connect', '/v2/sandboxes/:sandboxID/connect']) {
      r.post(path, { schema: { params: idParams, body: connectBody.nullish(), hide: true } }, async (req, reply) => {
        const out = await connect(req.params.sandboxID, req.body?.timeout ?? undefined, req.body?.memory ?? undefined);
        reply.status(out.status).send(out.body);
      });
    }
    r.post('/sandboxes/:sandboxID/resume', { schema: { params: idParams, body: connectBody.nullish(), hide: true } }, async (req, reply) => {
      if (visible(req.params.sandboxID).state === 'running') throw new CordonError('already_exists', `sandbox ${req.params.sandboxID} is already running`);
      const out = await connect(req.params.sandboxID, req.body?.timeout ?? undefined);
      reply.status(201).send(out.body);
    });

    const list = (q: z.infer<typeof listQuery>) => {
      const states = parseStates(q.state);
      const labels = parseMetadataFilter(q.metadata);
      const after = q.startedAfter ? Date.parse(q.startedAfter) : undefined;
      if (after !== undefined && Number.isNaN(after)) throw new CordonError('invalid_argument', 'startedAfter: use an RFC 3339 timestamp');
      return mgr
        .list({ labels })
        .filter((rec) => states.includes(e2bState(rec)!) && (!q.template || rec.spec.template === q.template || rec.spec.image === q.template))
        .filter((rec) => after === undefined || (rec.startedAt ?? rec.createdAt) >= after);
    };
    r.get('/v2/sandboxes', { schema: { querystring: listQuery, hide: true } }, async (req, reply) => {
      const { items, nextToken } = sandboxPage(list(req.query), { order: req.query.order ?? 'desc', limit: req.query.limit ?? 100, nextToken: req.query.nextToken });
      if (nextToken) reply.header('x-next-token', nextToken);
      return items.map(sandboxListed);
    });
    r.get('/sandboxes', { schema: { querystring: listQuery, hide: true } }, async (req) =>
      sandboxPage(list({ ...req.query, state: 'running' }), { order: req.query.order ?? 'desc', limit: Number.MAX_SAFE_INTEGER }).items.map(sandboxListed),
    );

    r.get('/sandboxes/:sandboxID', { schema: { params: idParams, hide: true } }, async (req) => {
      const rec = visible(req.params.sandboxID);
      return sandboxDetail(rec, tokens.sandbox(rec.id), cfg.domain);
    });

    r.delete('/sandboxes/:sandboxID', { schema: { params: idParams, hide: true } }, async (req, reply) => {
      visible(req.params.sandboxID);
      await mgr.remove(req.params.sandboxID, true);
      tokens.forget(req.params.sandboxID);
      reply.status(204).send();
    });

    r.post('/sandboxes/:sandboxID/timeout', { schema: { params: idParams, body: timeoutBody, hide: true } }, async (req, reply) => {
      visible(req.params.sandboxID);
      await mgr.setTimeout(req.params.sandboxID, req.body.timeout * 1000);
      reply.status(204).send();
    });

    // Replaces the egress rules of a running sandbox (secrets, ports and add-hosts stay).
    r.put('/sandboxes/:sandboxID/network', { schema: { params: idParams, body: networkUpdateBody, hide: true } }, async (req, reply) => {
      const rec = visible(req.params.sandboxID);
      const egress = fromE2b(req.body.allow_internet_access, req.body, !!net?.cfg.egressInterface);
      const cur = rec.spec.network;
      if (!egress) return reply.status(204).send();
      if (!cur || !mgr.net) throw new CordonError('invalid_state', `sandbox ${rec.id} was created without a network; its egress rules cannot change`);
      await mgr.network.setNetwork(rec.id, { ...cur, ...egress }, 'network rules replaced through the E2B API');
      reply.status(204).send();
    });

    r.post('/sandboxes/:sandboxID/pause', { schema: { params: idParams, hide: true } }, async (req, reply) => {
      const rec = visible(req.params.sandboxID);
      if (e2bState(rec) === 'paused') throw new CordonError('invalid_state', `sandbox ${rec.id} is already paused`);
      await mgr.pause(rec.id);
      reply.status(204).send();
    });

    registerE2bSnapshots(r, deps, {
      visible,
      removeTemplate: (id) => removeE2bTemplate(deps, id),
      created: async (rec, like) => {
        const opts = like ? tokens.sandbox(like)?.options : undefined;
        tokens.issue(rec.id, { trafficToken: opts?.allowPublicTraffic === false ? newToken() : undefined, options: opts ?? {} });
        return sandboxCreated(rec, e2bOf(rec.id), cfg.domain);
      },
    });

    // History sampled every 5 s (E2B's rate); start/end are unix seconds, both inclusive.
    r.get('/sandboxes/:sandboxID/metrics', { schema: { params: idParams, querystring: metricsQuery, hide: true } }, async (req) => {
      const rec = visible(req.params.sandboxID);
      const { start, end } = req.query;
      if (start !== undefined && end !== undefined && start > end) throw new CordonError('invalid_argument', 'start: must not be after end (both are unix seconds)');
      if (!mgr.metrics.range(rec.id).length) await mgr.metrics.sampleNow(rec.id);
      return mgr.metrics.range(rec.id, start === undefined ? 0 : start * 1000, end === undefined ? undefined : end * 1000 + 999).map(metricView);
    });
  });
}
