import type { ContainerStats } from '../types.js';
import { CGROUP_ROOT, detectLayout, type CgroupLayout } from './detect.js';
import type { CgroupDriver } from './driver.js';
import { CgroupV1 } from './v1.js';
import { CgroupV2 } from './v2.js';

export { cgroupsPathFor, type CgroupDriver, type CgroupMode } from './driver.js';
export { parseMountinfo, type CgroupLayout } from './detect.js';
export { CgroupV1 } from './v1.js';
export { CgroupV2 } from './v2.js';

/** The driver for a layout: v2 when unified, else the v1 hierarchies (also on hybrid hosts). */
export function driverFor(layout: CgroupLayout): CgroupDriver {
  if (layout.mode === 'unified') return new CgroupV2(layout.unified ?? CGROUP_ROOT);
  return new CgroupV1(layout.v1, layout.mode);
}

let host: Promise<CgroupDriver> | undefined;

/** The host's cgroup driver; the mode is detected once per process. */
export function hostCgroups(): Promise<CgroupDriver> {
  host ??= detectLayout().then(driverFor);
  return host;
}

/** Get the host ready for sandboxes' cgroups; returns warnings to log (never throws). */
export async function prepareCgroups(): Promise<{ mode: string; warnings: string[] }> {
  const cg = await hostCgroups();
  return { mode: cg.mode, warnings: await cg.prepare().catch((e: Error) => [e.message]) };
}

export async function readCgroupStats(id: string): Promise<ContainerStats> {
  return (await hostCgroups()).stats(id);
}

export async function oomKillCount(id: string): Promise<number> {
  return (await hostCgroups()).oomKills(id);
}

export async function setCgroupMemoryLimit(id: string, bytes: number): Promise<void> {
  return (await hostCgroups()).setMemoryLimit(id, bytes);
}

export async function removeCgroups(id: string): Promise<void> {
  return (await hostCgroups()).remove(id);
}

/** Freeze the whole sandbox (every process of its cgroup); false when the host has no freezer. */
export async function freezeCgroup(id: string): Promise<boolean> {
  return (await hostCgroups()).freeze(id);
}

export async function thawCgroup(id: string): Promise<void> {
  return (await hostCgroups()).thaw(id);
}

export async function cgroupFrozen(id: string): Promise<boolean> {
  return (await hostCgroups()).isFrozen(id).catch(() => false);
}

export async function listCgroupIds(): Promise<string[]> {
  return (await hostCgroups()).listIds();
}

/**
 * SIGKILL whatever still runs in a deleted sandbox's cgroup (a runtime call killed at its deadline
 * can leave a half-started sandbox process behind). Only for ids this daemon just deleted: the
 * cgroup tree is shared by every daemon on the host.
 */
export async function killCgroupProcesses(id: string): Promise<void> {
  const cg = await hostCgroups();
  for (let pass = 0; pass < 40; pass++) {
    const pids = await cg.procs(id);
    if (!pids.size) return;
    if (pass === 0) await cg.thaw(id);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
