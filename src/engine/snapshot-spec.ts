import { errors } from '../errors/registry.js';
import { networkEnv } from '../net/sandbox-files.js';
import { needsNamespace } from '../net/types.js';
import type { SnapshotRecord } from '../store/snapshots.js';
import type { CreateInput } from './sandbox-create.js';
import type { SandboxSpec } from './types.js';

/** What a sandbox made from a snapshot takes from it; a request that sets one of these is refused. */
const FROM_SNAPSHOT: (keyof CreateInput)[] = [
  'template', 'image', 'pullPolicy', 'runtime', 'cmd', 'entrypoint', 'user', 'workdir', 'cpus', 'memoryBytes', 'pids', 'diskBytes',
  'readOnlyRootfs', 'tmpfs', 'hostname', 'noNewPrivileges',
  // The source's named volumes and host mounts come back at the same paths (a memory restore needs the
  // same mount table); their contents are live, not in the snapshot.
  'volumes', 'mounts',
];

/** The API's names for the fields whose engine names differ. */
const FIELD_NAMES: Partial<Record<keyof CreateInput, string>> = {
  memoryBytes: 'memory', diskBytes: 'disk', readOnlyRootfs: 'read_only_rootfs', noNewPrivileges: 'no_new_privileges', pullPolicy: 'pull_policy',
};

/**
 * The spec of a sandbox made from a snapshot: the source's, with the request's timeout, environment
 * (for new processes) and network policy. The hostname stays the source's: under a memory restore it
 * lives in the restored kernel, and a filesystem restore keeps it for the same answer everywhere.
 */
export function specFromSnapshot(snap: SnapshotRecord, input: CreateInput, timeoutMs: number): SandboxSpec {
  for (const k of FROM_SNAPSHOT) {
    const v = input[k];
    if (v !== undefined && !(Array.isArray(v) && v.length === 0) && !(k === 'runtime' && v === snap.runtime)) {
      const field = FIELD_NAMES[k] ?? k;
      throw errors.invalid(field, `a sandbox made from snapshot ${snap.id} has its source's ${field}; leave it out (only timeout, env, labels and network may be given)`);
    }
  }
  const network = input.network ?? snap.spec.network;
  // The checkpoint's mounts include the network's files (resolv.conf, CA bundle): with memory, the
  // sandbox must have a network namespace exactly when its source had one.
  if (snap.kind === 'memory' && needsNamespace(network) !== needsNamespace(snap.spec.network)) {
    throw errors.invalid('network', `snapshot ${snap.id} was taken ${needsNamespace(snap.spec.network) ? 'with' : 'without'} a network and holds its memory; a sandbox made from it must have ${needsNamespace(snap.spec.network) ? 'a network (any mode but none)' : 'none'} too`);
  }
  // S3 syncs stay with the source: the snapshot holds their files, and two sandboxes pushing to one prefix would conflict.
  const { onTimeout: _sourceOnTimeout, s3Sync: _sourceS3, ...sourceSpec } = snap.spec;
  return {
    ...sourceSpec,
    // What the timeout does is the request's, as for any create.
    ...(input.onTimeout && input.onTimeout !== 'kill' ? { onTimeout: input.onTimeout } : {}),
    env: { ...snap.spec.env, ...(input.env ?? {}), ...networkEnv(network) },
    timeoutMs,
    network,
    snapshot: snap.id,
  };
}
