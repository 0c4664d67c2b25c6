import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContainerStats } from '../types.js';
import type { V1Hierarchy } from './detect.js';
import { CGROUP_PARENT, checkId, freezeAndWait, isSandboxId, type CgroupDriver } from './driver.js';
import { exists, listIdDirs, readKeyed, readLimit, readNumber, readText, removeCgroupTree } from './files.js';

/**
 * cgroup v1 (also the v1 half of a hybrid host). Each controller lives in its own hierarchy, or
 * shares one (cpu,cpuacct); where each is mounted comes from mountinfo, not from fixed names.
 */
export class CgroupV1 implements CgroupDriver {
  private readonly byController = new Map<string, string>();

  constructor(private readonly hierarchies: V1Hierarchy[], readonly mode: 'v1' | 'hybrid' | 'none' = 'v1') {
    for (const h of hierarchies) for (const c of h.controllers) if (!this.byController.has(c)) this.byController.set(c, h.mountPoint);
  }

  /** A file of the sandbox's cgroup in a controller's hierarchy; undefined when it is not mounted. */
  private file(controller: string, id: string, name: string): string | undefined {
    const mount = this.byController.get(controller);
    return mount ? join(mount, CGROUP_PARENT, checkId(id), name) : undefined;
  }

  private num(controller: string, id: string, name: string): Promise<number> {
    const p = this.file(controller, id, name);
    return p ? readNumber(p) : Promise.resolve(0);
  }

  private keyed(controller: string, id: string, name: string): Promise<Record<string, number>> {
    const p = this.file(controller, id, name);
    return p ? readKeyed(p) : Promise.resolve({});
  }

  async prepare(): Promise<string[]> {
    // The runtimes create /cordon/<id> in each hierarchy themselves (mkdir -p); nothing to enable.
    return this.byController.has('memory') ? [] : ['no cgroup v1 memory controller is mounted: memory limits cannot be set'];
  }

  async stats(id: string): Promise<ContainerStats> {
    const [cpu, mem, usage, limit, pids, oom, io] = await Promise.all([
      this.num('cpuacct', id, 'cpuacct.usage'),
      this.keyed('memory', id, 'memory.stat'),
      this.num('memory', id, 'memory.usage_in_bytes'),
      this.file('memory', id, 'memory.limit_in_bytes'),
      this.num('pids', id, 'pids.current'),
      this.oomKills(id),
      this.blkioBytes(id),
    ]);
    return {
      cpuUsageNs: cpu,
      // Page cache that can be dropped is not "used"; Docker reports usage minus inactive file the same way.
      memoryUsageBytes: Math.max(0, usage - (mem.total_inactive_file ?? 0)),
      memoryLimitBytes: limit ? await readLimit(limit) : 0,
      pids,
      diskReadBytes: io.read,
      diskWriteBytes: io.write,
      oomKills: oom,
    };
  }

  async oomKills(id: string): Promise<number> {
    return (await this.keyed('memory', id, 'memory.oom_control')).oom_kill ?? 0;
  }

  private async blkioBytes(id: string): Promise<{ read: number; write: number }> {
    const p = this.file('blkio', id, 'blkio.throttle.io_service_bytes_recursive');
    let read = 0;
    let write = 0;
    for (const line of ((p && (await readText(p))) || '').split('\n')) {
      const [, op, v] = line.trim().split(/\s+/);
      if (op === 'Read') read += Number(v) || 0;
      if (op === 'Write') write += Number(v) || 0;
    }
    return { read, write };
  }

  /** memsw (memory+swap) must stay >= memory at every step, so the order of the writes follows the direction. */
  async setMemoryLimit(id: string, bytes: number): Promise<void> {
    const memPath = this.file('memory', id, 'memory.limit_in_bytes');
    const swPath = this.file('memory', id, 'memory.memsw.limit_in_bytes');
    if (!memPath || !swPath) throw new Error('no cgroup v1 memory controller is mounted');
    const current = await readNumber(memPath);
    const hasSwapFile = await exists(swPath);
    if (bytes > current) {
      if (hasSwapFile) await writeFile(swPath, String(bytes));
      await writeFile(memPath, String(bytes));
    } else {
      await writeFile(memPath, String(bytes));
      if (hasSwapFile) await writeFile(swPath, String(bytes));
    }
  }

  async remove(id: string): Promise<void> {
    if (!isSandboxId(id)) return;
    for (const h of this.hierarchies) await removeCgroupTree(join(h.mountPoint, CGROUP_PARENT, id));
  }

  async procs(id: string): Promise<Set<number>> {
    const pids = new Set<number>();
    if (!isSandboxId(id)) return pids;
    for (const h of this.hierarchies) {
      for (const l of ((await readText(join(h.mountPoint, CGROUP_PARENT, id, 'cgroup.procs'))) ?? '').split('\n')) if (Number(l) > 0) pids.add(Number(l));
    }
    return pids;
  }

  async thaw(id: string): Promise<void> {
    const p = this.file('freezer', id, 'freezer.state');
    if (p) await writeFile(p, 'THAWED').catch(() => {});
  }

  async freeze(id: string): Promise<boolean> {
    const p = this.file('freezer', id, 'freezer.state');
    if (!p || !(await exists(p))) return false;
    await freezeAndWait(() => writeFile(p, 'FROZEN'), () => this.isFrozen(id), () => this.thaw(id), `cgroup ${CGROUP_PARENT}/${id}`);
    return true;
  }

  async isFrozen(id: string): Promise<boolean> {
    const p = isSandboxId(id) ? this.file('freezer', id, 'freezer.state') : undefined;
    return !!p && ((await readText(p)) ?? '').trim() === 'FROZEN';
  }

  /** Union over every hierarchy, so a leftover in one controller only is found too. */
  async listIds(): Promise<string[]> {
    const ids = new Set<string>();
    for (const h of this.hierarchies) for (const id of await listIdDirs(join(h.mountPoint, CGROUP_PARENT))) ids.add(id);
    return [...ids];
  }
}
