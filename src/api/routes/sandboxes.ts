import { toNetworkSpec } from '../../net/schema.js';
import type { SandboxState } from '../../engine/types.js';
import { errors } from '../../errors/registry.js';
import { createSandboxBody, idParams, listQuery, removeQuery, resourcesBody, stopBody, timeoutBody, truthy } from '../schemas.js';
import type { ApiDeps, TypedApp } from '../server.js';
import { eventView, sandboxView, statsView } from '../views.js';
import { followEvents } from './event-stream.js';
import { z } from 'zod';

const STATES: SandboxState[] = ['creating', 'running', 'pausing', 'paused', 'snapshotting', 'restoring', 'stopped', 'error'];

export function registerSandboxRoutes(app: TypedApp, { mgr, cfg, net }: ApiDeps): void {
  app.post('/v1/sandboxes', { schema: { summary: 'Create and start a sandbox', body: createSandboxBody } }, async (req, reply) => {
    const b = req.body;
    const rec = await mgr.create({
      template: b.template,
      image: b.image,
      pullPolicy: b.pull_policy,
      runtime: b.runtime as never,
      env: b.env,
      workdir: b.workdir,
      cmd: b.cmd,
      entrypoint: b.entrypoint,
      user: b.user,
      cpus: b.cpus,
      memoryBytes: b.memory,
      pids: b.pids,
      diskBytes: b.disk,
      timeoutMs: b.timeout,
      onTimeout: b.on_timeout,
      idlePause: b.idle_pause,
      labels: { ...(b.metadata ?? {}), ...(b.labels ?? {}) },
      readOnlyRootfs: b.read_only_rootfs,
      tmpfs: [
        ...(b.tmpfs ?? []).map((t) => ({ path: t.path, sizeBytes: t.size, options: t.options })),
        ...(b.mounts ?? []).filter((m) => m.type === 'tmpfs').map((m) => ({ path: m.target, sizeBytes: m.tmpfs_size ?? 64 * 1024 * 1024, options: m.read_only ? ['ro'] : [] })),
      ],
      volumes: b.volumes?.map((v) => ({ name: v.name, path: v.path, readOnly: v.read_only ?? v.readOnly ?? false })),
      mounts: (b.mounts ?? []).flatMap((m) => (m.type === 'tmpfs' ? [] : [{ type: m.type, source: m.source!, target: m.target, readOnly: !!m.read_only }])),
      fileRules: b.file_rules,
      fileEvents: b.file_events,
      s3Sync: b.s3_sync?.map((x) => ({
        bucket: x.bucket, prefix: x.prefix, path: x.path, mode: x.mode, endpoint: x.endpoint, region: x.region,
        credentials: x.credentials, pathStyle: x.path_style, maxFileBytes: x.max_file_size, readOnly: x.read_only,
      })),
      hostname: b.hostname,
      noNewPrivileges: b.no_new_privileges,
      // From a snapshot, no network given means the snapshot's own policy.
      network: b.snapshot && b.network === undefined ? undefined : toNetworkSpec(b.network, net?.cfg ?? { defaultMode: 'none' }),
      snapshot: b.snapshot,
    });
    reply.status(201).send(sandboxView(rec));
  });

  app.get('/v1/sandboxes', { schema: { summary: 'List sandboxes, filtered by state and labels', querystring: listQuery } }, async (req) => {
    const states = req.query.state?.split(',').filter(Boolean) ?? [];
    for (const s of states) if (!STATES.includes(s as SandboxState)) throw errors.invalid('state', `unknown state ${s}; use ${STATES.join(', ')}`);
    const labels: Record<string, string> = {};
    for (const l of [req.query.label ?? []].flat()) {
      const i = l.indexOf('=');
      if (i <= 0) throw errors.invalid('label', `"${l}" must look like key=value`);
      labels[l.slice(0, i)] = l.slice(i + 1);
    }
    return mgr.list({ state: states as SandboxState[], labels }).map(sandboxView);
  });

  app.get('/v1/sandboxes/:id', { schema: { summary: 'Inspect a sandbox', params: idParams } }, async (req) => sandboxView(mgr.get(req.params.id)));

  app.delete('/v1/sandboxes/:id', { schema: { summary: 'Remove a sandbox (force=true whatever its state)', params: idParams, querystring: removeQuery } }, async (req, reply) => {
    await mgr.remove(req.params.id, truthy(req.query.force));
    reply.status(204).send();
  });

  app.post('/v1/sandboxes/:id/start', { schema: { summary: 'Start a stopped sandbox', params: idParams } }, async (req) => sandboxView(await mgr.start(req.params.id)));
  app.post('/v1/sandboxes/:id/stop', { schema: { summary: 'Stop: TERM, wait up to timeout (default 10s), then KILL', params: idParams, body: stopBody } }, async (req) =>
    sandboxView(await mgr.stop(req.params.id, req.body?.timeout ?? 10_000)),
  );
  app.post('/v1/sandboxes/:id/pause', { schema: { summary: 'Pause: to disk where the runtime checkpoints memory (runsc; memory freed), else frozen in memory', params: idParams } }, async (req) => sandboxView(await mgr.pause(req.params.id)));
  app.post('/v1/sandboxes/:id/resume', { schema: { summary: 'Resume a paused sandbox (restored from disk, or thawed)', params: idParams } }, async (req) => sandboxView(await mgr.resume(req.params.id)));
  app.post('/v1/sandboxes/:id/timeout', { schema: { summary: 'Set the time left before removal (0 = none)', params: idParams, body: timeoutBody } }, async (req) =>
    sandboxView(await mgr.setTimeout(req.params.id, req.body.timeout)),
  );
  app.patch('/v1/sandboxes/:id/resources', { schema: { summary: 'Change the memory limit of a running sandbox', params: idParams, body: resourcesBody } }, async (req) =>
    sandboxView(await mgr.setMemoryLimit(req.params.id, req.body.memory)),
  );
  app.get('/v1/sandboxes/:id/stats', { schema: { summary: 'CPU, memory, pids, network and disk counters', params: idParams } }, async (req) =>
    statsView(await mgr.running(req.params.id, 'stats').stats()),
  );
  app.get(
    '/v1/sandboxes/:id/events',
    { schema: { summary: 'Lifecycle events (created, oom, died, ...)', params: idParams, querystring: z.object({ after: z.coerce.number().int().min(0).default(0) }).strict() } },
    async (req) => {
      mgr.get(req.params.id);
      return mgr.store.events(req.params.id, req.query.after).map(eventView);
    },
  );
  app.get(
    '/v1/sandboxes/:id/events/stream',
    {
      schema: {
        summary: 'Events as they happen (server-sent events; earlier ones after `after` first); `type` narrows to one type, e.g. network',
        params: idParams,
        querystring: z.object({ after: z.coerce.number().int().min(0).optional(), type: z.string().regex(/^[a-z-]{1,32}$/).optional() }).strict(),
      },
    },
    async (req, reply) => {
      const id = mgr.get(req.params.id).id;
      reply.hijack();
      followEvents(reply.raw, mgr.store, id, req.query, { highWaterBytes: cfg.streamHighWaterBytes, writeDeadlineMs: cfg.streamWriteDeadlineMs });
    },
  );
}
