import { lstat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { ContainerSpec } from './types.js';

/**
 * gVisor mounts a tmpfs of its own over /tmp when the spec mounts nothing there and the rootfs's /tmp
 * is empty (runsc/boot/vfs.go, mountTmp; no flag turns it off). What a build step writes to /tmp would
 * then vanish with the step, /tmp would count against the sandbox's memory, and a sandbox would differ
 * from the same one under crun or Docker, where /tmp is part of the rootfs. Mounting the rootfs's own
 * /tmp there explicitly keeps it on the overlay (its upper, so builds and snapshots take it).
 *
 * The bind's source is the sandbox's overlay, which the image and the sandbox fill: it is bound only
 * when /tmp there is a real directory (lstat, never followed). This runs before the container starts
 * (create, restore), when no process of the sandbox can change its rootfs; once mounted, /tmp is a mount
 * point the sandbox cannot rename or remove. A /tmp that is a symlink or missing is left to gVisor,
 * which resolves it inside the sandbox. A read-only rootfs keeps gVisor's writable tmpfs (as before),
 * and a mount the request put at /tmp is left alone.
 *
 * A checkpoint taken with gVisor's tmpfs (an older daemon's, or a /tmp that was not a directory then)
 * restores under a spec that has the bind: gVisor keeps the tmpfs from the image and ignores the extra
 * mount.
 */
export async function withRootfsTmp(spec: ContainerSpec): Promise<ContainerSpec> {
  if (spec.readOnlyRootfs) return spec;
  const atTmp = (p: string) => posix.normalize(`${p}/`) === '/tmp/';
  if (spec.tmpfs.some((t) => atTmp(t.path)) || spec.binds.some((b) => atTmp(b.destination))) return spec;
  const source = join(spec.rootfsDir, 'tmp');
  const st = await lstat(source).catch(() => undefined);
  if (!st?.isDirectory()) return spec;
  // gVisor orders mounts parent first (by destination length), so mounts below /tmp stay on top of it.
  return { ...spec, binds: [...spec.binds, { source, destination: '/tmp', readOnly: false }] };
}
