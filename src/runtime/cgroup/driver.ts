import { SANDBOX_ID_RE } from '../../util/ids.js';
import type { ContainerStats } from '../types.js';

export type CgroupMode = 'v1' | 'hybrid' | 'unified' | 'none';

/** Every backend places a sandbox at /cordon/<id>: in each v1 hierarchy, or under the cgroup2 root. */
export const CGROUP_PARENT = 'cordon';

/**
 * The OCI `linux.cgroupsPath`. Absolute, so runc, crun and runsc (cgroupfs drivers) all resolve it
 * against the hierarchy root rather than against their own cgroup; the systemd "slice:prefix:name"
 * form is not used.
 */
export const cgroupsPathFor = (id: string) => `/${CGROUP_PARENT}/${id}`;

/** The cgroup operations the runtimes and the supervisor use, for one cgroup mode of the host. */
export interface CgroupDriver {
  readonly mode: CgroupMode;
  /** Make the parent ready before any runtime creates a child; returns what could not be done. */
  prepare(): Promise<string[]>;
  stats(id: string): Promise<ContainerStats>;
  oomKills(id: string): Promise<number>;
  setMemoryLimit(id: string, bytes: number): Promise<void>;
  /** Remove what a backend left behind for a sandbox (runtimes normally do this on delete). */
  remove(id: string): Promise<void>;
  listIds(): Promise<string[]>;
  /** Host pids of every process still in the sandbox's cgroup (any hierarchy). */
  procs(id: string): Promise<Set<number>>;
  /** Let frozen (paused) processes run again, so a SIGKILL can take them. */
  thaw(id: string): Promise<void>;
  /**
   * Freeze every process of the sandbox's cgroup and wait until the kernel says it is frozen (a
   * deadline, then thawed again and an error). False when this host has no freezer for it.
   */
  freeze(id: string): Promise<boolean>;
  /** Whether the sandbox's cgroup is frozen now (false when there is none). */
  isFrozen(id: string): Promise<boolean>;
}

/** How long a freeze may take before it is given up (a process in uninterruptible sleep can hold it). */
export const FREEZE_DEADLINE_MS = 5_000;

/**
 * Write the freeze request, then poll until `frozen()` says so; on the deadline undo it and throw.
 * Shared by v1 (freezer.state FREEZING → FROZEN) and v2 (cgroup.freeze, cgroup.events "frozen 1").
 */
export async function freezeAndWait(request: () => Promise<void>, frozen: () => Promise<boolean>, undo: () => Promise<void>, what: string): Promise<void> {
  await request();
  const deadline = Date.now() + FREEZE_DEADLINE_MS;
  for (let wait = 1; !(await frozen()); wait = Math.min(wait * 2, 50)) {
    if (Date.now() > deadline) {
      await undo().catch(() => {});
      throw new Error(`freezing ${what} did not complete within ${FREEZE_DEADLINE_MS / 1000}s; it was thawed again`);
    }
    await new Promise((r) => setTimeout(r, wait));
  }
}

export const isSandboxId = (id: string) => SANDBOX_ID_RE.test(id);

/** Ids become path components: anything else never reaches the cgroup tree. */
export function checkId(id: string): string {
  if (!isSandboxId(id)) throw new Error(`${JSON.stringify(id)} is not a sandbox id`);
  return id;
}
