// Tools for the life of a sandbox: create (from a template, an image or a snapshot), list, snapshot, kill.
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { z } from 'zod';
import type { Cordon } from '../sdk/client.js';
import type { CreateOptions, SandboxInfo, SnapshotInfo } from '../sdk/types.js';
import { duration, envMap, hostList, sandboxId, size } from './inputs.js';
import { guarded, jsonResult } from './results.js';

/** What a model needs to know of a sandbox (its full record has mounts, tmpfs, ... of no use here). */
export function sandboxSummary(s: SandboxInfo) {
  return {
    id: s.id,
    state: s.state,
    runtime: s.runtime,
    template: s.template,
    image: s.image,
    snapshot: s.snapshot,
    cpus: s.config?.cpus ?? null,
    memory_bytes: s.config?.memory ?? null,
    network: s.network?.mode ?? 'none',
    labels: s.labels,
    created_at: s.created_at,
    expires_at: s.expires_at,
  };
}

const snapshotSummary = (s: SnapshotInfo) => ({ id: s.id, name: s.name, source_sandbox: s.source_sandbox, kind: s.kind, size_bytes: s.size_bytes, created_at: s.created_at });

const resources = {
  runtime: z.enum(['runsc', 'crun', 'runc']).optional().describe('isolation: runsc (gVisor, the default) or crun/runc (containers, faster, shared kernel)'),
  cpus: z.number().positive().max(1024).optional().describe('CPU cores (fractions allowed)'),
  memory: size.optional().describe('memory limit, e.g. "512m" or "2g"'),
  timeout: duration.optional().describe('how long the sandbox lives before it is removed, e.g. "30m"; the daemon default applies when absent'),
  env: envMap.optional(),
  labels: z.record(z.string().max(63), z.string().max(256)).optional().describe('labels to find it by later'),
};

const network = z
  .object({
    mode: z.enum(['none', 'allowlist', 'open']).describe('none: no network; allowlist: only allow_hosts; open: anything but deny_hosts'),
    allow_hosts: hostList.optional().describe('hosts (or *.domain) reachable in allowlist mode'),
    deny_hosts: hostList.optional().describe('hosts never reachable'),
  })
  .strict()
  .optional()
  .describe('egress policy; without it the sandbox has no network');

const createInput = z
  .object({
    template: z.string().min(1).max(256).optional().describe('template name; "base" (Debian) when neither template nor image is given'),
    image: z.string().min(1).max(1024).optional().describe('OCI image reference, e.g. "python:3.12-slim"; pulled when missing'),
    ...resources,
    network,
  })
  .strict();
const fromSnapshotInput = z
  .object({ snapshot: z.string().min(1).max(256).describe('snapshot id or name, from create_snapshot or list_snapshots'), ...resources })
  .strict();
const listInput = z
  .object({
    state: z.array(z.enum(['creating', 'running', 'pausing', 'paused', 'snapshotting', 'restoring', 'stopped', 'error'])).max(8).optional().describe('only sandboxes in these states'),
    labels: z.record(z.string().max(63), z.string().max(256)).optional().describe('only sandboxes with all these labels'),
  })
  .strict();
const killInput = z.object({ sandbox_id: sandboxId }).strict();
const snapInput = z.object({ sandbox_id: sandboxId, name: z.string().min(1).max(128).optional().describe('a name to find the snapshot by') }).strict();
const listSnapInput = z.object({ sandbox_id: sandboxId.optional().describe('only snapshots of this sandbox') }).strict();

export function registerSandboxTools(server: McpServer, cordon: Cordon): void {
  server.registerTool(
    'create_sandbox',
    {
      title: 'Create a sandbox',
      description: 'Create an isolated sandbox (a Linux machine of its own) from a template or an OCI image, with CPU/memory limits, a network policy and a lifetime. Returns its id, which every other tool takes.',
      inputSchema: createInput,
      annotations: { destructiveHint: false, openWorldHint: false },
    },
    guarded(async (a: z.infer<typeof createInput>) => {
      const opts: CreateOptions = { template: a.template, image: a.image, runtime: a.runtime, cpus: a.cpus, memory: a.memory, timeout: a.timeout, env: a.env, labels: a.labels, network: a.network };
      // An image's own ENTRYPOINT/CMD would be its main process; here commands come from the tools.
      if (a.image) opts.entrypoint = [];
      const sbx = await cordon.create(opts);
      return jsonResult(sandboxSummary(sbx.info), `sandbox ${sbx.id} created`);
    }),
  );

  server.registerTool(
    'create_sandbox_from_snapshot',
    {
      title: 'Create a sandbox from a snapshot',
      description: 'Create a new sandbox from a snapshot: its files, and under runsc also its memory and running processes.',
      inputSchema: fromSnapshotInput,
    },
    guarded(async (a: z.infer<typeof fromSnapshotInput>) => {
      const sbx = await cordon.create({ snapshot: a.snapshot, runtime: a.runtime, cpus: a.cpus, memory: a.memory, timeout: a.timeout, env: a.env, labels: a.labels });
      return jsonResult(sandboxSummary(sbx.info), `sandbox ${sbx.id} created from snapshot ${a.snapshot}`);
    }),
  );

  server.registerTool(
    'list_sandboxes',
    { title: 'List sandboxes', description: 'List the sandboxes of this cordon daemon, optionally by state or labels.', inputSchema: listInput, annotations: { readOnlyHint: true } },
    guarded(async (a: z.infer<typeof listInput>) => {
      const list = await cordon.list({ state: a.state, labels: a.labels });
      return jsonResult({ sandboxes: list.map(sandboxSummary) });
    }),
  );

  server.registerTool(
    'kill_sandbox',
    { title: 'Kill a sandbox', description: 'Stop a sandbox at once and remove it with all its files and processes (snapshots taken of it stay).', inputSchema: killInput, annotations: { destructiveHint: true, idempotentHint: true } },
    guarded(async (a: z.infer<typeof killInput>) => {
      await cordon.remove(a.sandbox_id, { force: true });
      return jsonResult({ removed: a.sandbox_id }, `sandbox ${a.sandbox_id} removed`);
    }),
  );

  server.registerTool(
    'create_snapshot',
    { title: 'Snapshot a sandbox', description: 'Snapshot a running sandbox as it is now (it keeps running); start copies of it with create_sandbox_from_snapshot.', inputSchema: snapInput },
    guarded(async (a: z.infer<typeof snapInput>) => {
      const snap = await cordon.sandbox(a.sandbox_id).snapshot({ name: a.name });
      return jsonResult(snapshotSummary(snap), `snapshot ${snap.id} of ${a.sandbox_id} created`);
    }),
  );

  server.registerTool(
    'list_snapshots',
    { title: 'List snapshots', description: 'List snapshots, optionally those of one sandbox.', inputSchema: listSnapInput, annotations: { readOnlyHint: true } },
    guarded(async (a: z.infer<typeof listSnapInput>) => jsonResult({ snapshots: (await cordon.snapshots({ sandbox: a.sandbox_id })).map(snapshotSummary) })),
  );
}
