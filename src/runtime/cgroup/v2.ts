import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerStats } from '../types.js';
import { CGROUP_PARENT, checkId, freezeAndWait, isSandboxId, type CgroupDriver } from './driver.js';
import { exists, listIdDirs, readKeyed, readLimit, readNumber, readText, removeCgroupTree } from './files.js';

/** What a sandbox's limits and stats need enabled for the children of /cordon. */
const WANTED = ['cpu', 'io', 'memory', 'pids'];

/**
 * cgroup v2 (unified): one tree, a sandbox at <root>/cordon/<id>. The root is injectable so the
 * driver can be tested against a constructed tree.
 */
export class CgroupV2 implements CgroupDriver {
  readonly mode = 'unified' as const;
  constructor(private readonly root: string) {}

  private dir(id: string): string {
    return join(this.root, CGROUP_PARENT, checkId(id));
  }

  /**
   * Create /cordon and enable the controllers in the root's and its cgroup.subtree_control. runc,
   * crun and runsc each enable them on create too, but runsc also records the directories it
   * created and removes them when its sandbox is deleted: if it were the one to create /cordon, its
   * delete would retry rmdir of a parent busy with other sandboxes for seconds and then fail.
   */
  async prepare(): Promise<string[]> {
    const problems: string[] = [];
    const available = ((await readText(join(this.root, 'cgroup.controllers'))) ?? '').split(/\s+/);
    const missing = WANTED.filter((c) => !available.includes(c));
    if (missing.length) problems.push(`controllers ${missing.join(', ')} are not available in ${this.root}; those limits will not hold`);
    const parent = join(this.root, CGROUP_PARENT);
    try {
      await mkdir(parent, { recursive: true });
    } catch (e) {
      return [...problems, `cannot create ${parent}: ${(e as Error).message}`];
    }
    for (const dir of [this.root, parent]) {
      const file = join(dir, 'cgroup.subtree_control');
      const enabled = ((await readText(file)) ?? '').split(/\s+/);
      const toEnable = WANTED.filter((w) => available.includes(w) && !enabled.includes(w));
      if (!toEnable.length) continue;
      const all = await writeFile(file, toEnable.map((c) => `+${c}`).join(' ')).then(() => true, () => false);
      if (all) continue;
      // Then one at a time, as the runtimes do: one refused controller must not keep the others off.
      for (const c of toEnable) {
        await writeFile(file, `+${c}`).catch((e: Error) => problems.push(`cannot enable ${c} in ${file}: ${e.message}`));
      }
    }
    return problems;
  }

  async stats(id: string): Promise<ContainerStats> {
    const dir = this.dir(id);
    const [cpu, mem, usage, limit, pids, oom, io] = await Promise.all([
      readKeyed(join(dir, 'cpu.stat')),
      readKeyed(join(dir, 'memory.stat')),
      readNumber(join(dir, 'memory.current')),
      readLimit(join(dir, 'memory.max')),
      readNumber(join(dir, 'pids.current')),
      this.oomKills(id),
      ioBytes(join(dir, 'io.stat')),
    ]);
    return {
      cpuUsageNs: (cpu.usage_usec ?? 0) * 1000,
      memoryUsageBytes: Math.max(0, usage - (mem.inactive_file ?? 0)),
      memoryLimitBytes: limit,
      pids,
      diskReadBytes: io.read,
      diskWriteBytes: io.write,
      oomKills: oom,
    };
  }

  /**
   * memory.events counts kills anywhere below the cgroup (since Linux 5.2, unless cgroup2 is mounted
   * with memory_localevents); memory.events.local would miss a kill in a child cgroup.
   */
  async oomKills(id: string): Promise<number> {
    return (await readKeyed(join(this.dir(id), 'memory.events'))).oom_kill ?? 0;
  }

  /**
   * memory.max plus memory.swap.max 0 (the v1 memsw = memory equivalent: no swap). v1 refuses a
   * limit below what cannot be reclaimed (EBUSY); v2 would accept it and OOM-kill, so the same
   * refusal is made here: reclaim first where the kernel offers memory.reclaim (5.19+), then refuse
   * if what is left (less inactive page cache, which the write itself reclaims) is still above.
   */
  async setMemoryLimit(id: string, bytes: number): Promise<void> {
    const dir = this.dir(id);
    const maxPath = join(dir, 'memory.max');
    if (!(await exists(maxPath))) throw new Error(`${maxPath} is missing: the memory controller is not enabled for ${CGROUP_PARENT}`);
    let current = await readNumber(join(dir, 'memory.current'));
    if (bytes < current) {
      const reclaim = join(dir, 'memory.reclaim');
      if (await exists(reclaim)) await writeFile(reclaim, String(current - bytes)).catch(() => {});
      current = await readNumber(join(dir, 'memory.current'));
      const inUse = current - ((await readKeyed(join(dir, 'memory.stat'))).inactive_file ?? 0);
      if (bytes < inUse) throw new Error(`the sandbox holds ${inUse} bytes that could not be reclaimed`);
    }
    const swapPath = join(dir, 'memory.swap.max');
    if (await exists(swapPath)) await writeFile(swapPath, '0');
    await writeFile(maxPath, String(bytes));
  }

  async remove(id: string): Promise<void> {
    if (isSandboxId(id)) await removeCgroupTree(this.dir(id));
  }

  async listIds(): Promise<string[]> {
    return listIdDirs(join(this.root, CGROUP_PARENT));
  }

  async procs(id: string): Promise<Set<number>> {
    const pids = new Set<number>();
    if (!isSandboxId(id)) return pids;
    for (const l of ((await readText(join(this.dir(id), 'cgroup.procs'))) ?? '').split('\n')) if (Number(l) > 0) pids.add(Number(l));
    return pids;
  }

  async thaw(id: string): Promise<void> {
    if (isSandboxId(id)) await writeFile(join(this.dir(id), 'cgroup.freeze'), '0').catch(() => {});
  }

  /** cgroup.freeze (Linux 5.2+) freezes the subtree; cgroup.events says when every task is frozen. */
  async freeze(id: string): Promise<boolean> {
    const file = join(this.dir(id), 'cgroup.freeze');
    if (!(await exists(file))) return false;
    await freezeAndWait(() => writeFile(file, '1'), () => this.isFrozen(id), () => this.thaw(id), `cgroup ${CGROUP_PARENT}/${id}`);
    return true;
  }

  async isFrozen(id: string): Promise<boolean> {
    if (!isSandboxId(id)) return false;
    return (await readKeyed(join(this.dir(id), 'cgroup.events'))).frozen === 1;
  }
}

/** io.stat: one line per device, "MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N". */
async function ioBytes(path: string): Promise<{ read: number; write: number }> {
  let read = 0;
  let write = 0;
  for (const line of ((await readText(path)) ?? '').split('\n')) {
    for (const field of line.trim().split(/\s+/).slice(1)) {
      const [k, v] = field.split('=');
      if (k === 'rbytes') read += Number(v) || 0;
      if (k === 'wbytes') write += Number(v) || 0;
    }
  }
  return { read, write };
}
